"""Typed errors, each mapped once to an HTTP status and OpenAI's error JSON shape."""

from __future__ import annotations

from typing import Any, ClassVar


class AtriumError(Exception):
    """Base of every error Atrium reports to a caller."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    def to_openai(self) -> dict[str, Any]:
        """The body OpenAI sends for an error: ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(AtriumError):
    """The request is malformed or a parameter is out of range."""

    status = 400
    type = "invalid_request_error"


class UnsupportedError(InvalidRequestError):
    """The model cannot do what the request asks (e.g. embeddings on a chat model)."""

    default_code = "unsupported"


class ContextLengthError(InvalidRequestError):
    """The prompt plus the requested completion do not fit the model's context window."""

    default_code = "context_length_exceeded"


class AuthenticationError(AtriumError):
    """No key, or a wrong, revoked or expired one."""

    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(AtriumError):
    """The key is valid but not allowed this model or route."""

    status = 403
    type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(AtriumError):
    """The named thing does not exist."""

    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    """No model or alias of that name."""

    default_code = "model_not_found"


class ConflictError(AtriumError):
    """The request clashes with work in progress (a sync already running)."""

    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(AtriumError):
    """The body is over the configured size limit."""

    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(AtriumError):
    """A rate limit was hit; ``Retry-After`` says when to come back."""

    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class OverloadedError(AtriumError):
    """The model's queue is full; retry later."""

    status = 503
    type = "server_error"
    default_code = "model_overloaded"


class LimiterUnavailableError(AtriumError):
    """Rate limits cannot be checked (their store is down) and they fail closed."""

    status = 503
    type = "server_error"
    default_code = "limits_unavailable"


class UpstreamError(AtriumError):
    """An upstream model server failed or could not be reached."""

    status = 502
    type = "server_error"
    default_code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    """An upstream model server did not answer in time."""

    status = 504
    default_code = "upstream_timeout"


class UpstreamStatusError(AtriumError):
    """An upstream answered with an error status; passed on with its own body."""

    type = "upstream_error"

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        err = body.get("error")
        message = err.get("message") if isinstance(err, dict) else None
        super().__init__(str(message or f"upstream answered {status}"), headers=headers)
        self.upstream_status = status
        self.body = body

    def to_openai(self) -> dict[str, Any]:
        """The upstream's own error body when it is already in OpenAI's shape."""
        if isinstance(self.body.get("error"), dict):
            return self.body
        return super().to_openai()


def status_of(error: AtriumError) -> int:
    """HTTP status for an error; upstream statuses are passed on."""
    if isinstance(error, UpstreamStatusError):
        return error.upstream_status
    return error.status
