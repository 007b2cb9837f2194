"""Every error leaves as OpenAI's JSON error shape; nothing leaves as HTML or a bare 500."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from atrium.core.errors import AtriumError, InvalidRequestError, NotFoundError
from atrium.core.http import error_response

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger("atrium.api")


async def _atrium(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AtriumError)
    return error_response(exc)


async def _validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
    param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "path", "query"))
    return error_response(InvalidRequestError(str(first.get("msg")), param=param or None))


async def _http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(NotFoundError("no such route", code="unknown_route"))
    error = InvalidRequestError(str(exc.detail))
    return Response(
        orjson.dumps(error.to_openai()),
        status_code=exc.status_code,
        media_type="application/json",
        headers=exc.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Map every expected exception type once (unexpected ones: ``EdgeMiddleware``)."""
    app.add_exception_handler(AtriumError, _atrium)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
