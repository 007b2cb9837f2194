"""HTTP helpers shared by every router: orjson responses and strict body parsing."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from atrium.core.errors import InvalidRequestError

R = TypeVar("R", bound=BaseModel)


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def parse_body(schema: type[R], body: bytes) -> R:
    """Validate a JSON body, turning pydantic's errors into OpenAI's 400."""
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_data(schema: type[R], data: dict[str, Any]) -> R:
    """Validate already-decoded data (query parameters, stored JSON) with the same 400s."""
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


def parse_json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body, or a 400 in OpenAI's shape."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        msg = "We could not parse the JSON body of your request: it is not valid JSON."
        raise InvalidRequestError(msg, code="invalid_json") from None
    if not isinstance(parsed, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return parsed


def _invalid(exc: ValidationError) -> InvalidRequestError:
    error = exc.errors(include_url=False)[0]
    if error["type"] == "json_invalid":
        msg = "We could not parse the JSON body of your request: it is not valid JSON."
        return InvalidRequestError(msg, code="invalid_json")
    if error["type"] == "model_type":
        return InvalidRequestError("The request body must be a JSON object.")
    param = ".".join(str(part) for part in error["loc"]) or None
    where = f" (at '{param}')" if param else ""
    return InvalidRequestError(f"{error['msg']}{where}", param=param)
