"""What every command-line client of Atrium's API shares: one pooled HTTP client per
command, errors with messages fit for a terminal, server-sent events.

Each API area has a small client built on :class:`ApiClient` (``kb_client.py``,
``workflow_client.py``, the registry's in ``cli_models.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

__all__ = ["ApiClient", "ApiError", "ClientError", "server_sent_events"]

MANAGE_TIMEOUT_S = 60.0
#: Upload errors that concern the uploaded file alone.
_FILE_ERRORS = frozenset({"document_failed", "unsupported_file_type", "file_too_large"})


class ClientError(Exception):
    """A failure with a message fit for a terminal."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApiError(ClientError):
    """The server refused a request: ``"404: no knowledge base 'x'"``."""

    def __init__(self, status: int, detail: str, code: str | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.code = code

    @classmethod
    def of(cls, resp: httpx.Response) -> ApiError:
        """The error a response carries, whatever its body holds."""
        try:
            error = resp.json()["error"]
            return cls(resp.status_code, str(error["message"]), error.get("code"))
        except (ValueError, KeyError, TypeError):
            return cls(resp.status_code, resp.text[:200] or resp.reason_phrase)

    @property
    def concerns_one_file(self) -> bool:
        """An upload refused for this file alone (unreadable, unsupported, too large)."""
        return self.status == 413 or self.code in _FILE_ERRORS


class ApiClient:
    """One area of one server's API (``prefix``), as one API key sees it."""

    prefix = ""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            headers={"authorization": f"Bearer {api_key}"},
            timeout=MANAGE_TIMEOUT_S,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def call(
        self, method: str, *path: str | int, timeout: float = MANAGE_TIMEOUT_S, **kwargs: Any
    ) -> Any:
        """``METHOD <prefix>/PATH...`` -> the JSON answer, or :class:`ApiError`.

        ``kwargs`` go to :meth:`httpx.Client.request` (``json``, ``params``, ``files``...).
        """
        return self.request(method, path, timeout, **kwargs).json()

    def request(
        self, method: str, path: tuple[str | int, ...], timeout: float, **kwargs: Any
    ) -> httpx.Response:
        """The raw response of a request that succeeded; :class:`ApiError` otherwise."""
        try:
            resp = self._http.request(method, self.url(*path), timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None
        if resp.status_code >= 400:
            raise ApiError.of(resp)
        return resp

    def events(
        self, method: str, path: tuple[str, ...], timeout: float | httpx.Timeout, **kwargs: Any
    ) -> Iterator[tuple[str, Any]]:
        """A server-sent event stream: ``(event, data)`` pairs as they arrive."""
        try:
            with self._http.stream(method, self.url(*path), timeout=timeout, **kwargs) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise ApiError.of(resp)
                yield from server_sent_events(resp.iter_lines())
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None

    def url(self, *path: str | int) -> str:
        """``<prefix>/a/b``, each part quoted."""
        return "/".join([self.prefix, *(quote(str(part), safe="") for part in path)])

    def unreachable(self, exc: httpx.HTTPError) -> ClientError:
        """The error for a server that could not be reached."""
        return ClientError(f"cannot reach Atrium at {self.base_url}: {exc}")


def server_sent_events(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """``(event, data)`` pairs from the lines of an SSE stream (data parsed as JSON)."""
    event, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []
    if data:
        yield event, json.loads("\n".join(data))
