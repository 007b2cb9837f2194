"""A small synchronous client of the workflow API (what ``atrium workflows ...`` speaks).

Every failure is a :class:`WorkflowClientError` carrying a message fit for a terminal:
the server's own error message with its status (:class:`WorkflowApiError`), or why the
server could not be reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

__all__ = [
    "EVENTS_TIMEOUT",
    "MANAGE_TIMEOUT_S",
    "WorkflowApiError",
    "WorkflowClient",
    "WorkflowClientError",
    "run_timeout",
]

MANAGE_TIMEOUT_S = 60.0
#: The longest a synchronous run may be held open by the server (its own upper bound).
SERVER_MAX_WAIT_S = 3600.0
#: Time on top of a run's wait for the answer itself to arrive.
_ANSWER_MARGIN_S = 30.0
#: An event stream stays quiet while a block works or an approval waits: no read timeout.
EVENTS_TIMEOUT = httpx.Timeout(MANAGE_TIMEOUT_S, read=None)
_PREFIX = "/v1/workflows"
YAML_TYPE = "application/yaml"


class WorkflowClientError(Exception):
    """A failure with a message fit for a terminal."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WorkflowApiError(WorkflowClientError):
    """The server refused a request: ``"404: no workflow 'x'"``."""

    def __init__(self, status: int, detail: str, code: str | None = None) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.code = code

    @classmethod
    def of(cls, resp: httpx.Response) -> WorkflowApiError:
        """The error a response carries, whatever its body holds."""
        try:
            error = resp.json()["error"]
            return cls(resp.status_code, str(error["message"]), error.get("code"))
        except (ValueError, KeyError, TypeError):
            return cls(resp.status_code, resp.text[:200] or resp.reason_phrase)


def run_timeout(wait_seconds: float | None) -> float:
    """How long to wait for a synchronous run's answer when it may wait ``wait_seconds``."""
    return min(wait_seconds or SERVER_MAX_WAIT_S, SERVER_MAX_WAIT_S) + _ANSWER_MARGIN_S


class WorkflowClient:
    """The workflow API of one server, as one API key sees it."""

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
        self, method: str, *path: str, timeout: float = MANAGE_TIMEOUT_S, **kwargs: Any
    ) -> Any:
        """``METHOD /v1/workflows/PATH...`` -> the JSON answer, or :class:`WorkflowApiError`.

        ``kwargs`` go to :meth:`httpx.Client.request` (``json``, ``params``, ``content``).
        """
        return self._request(method, path, timeout, **kwargs).json()

    def text(self, method: str, *path: str, **kwargs: Any) -> str:
        """Like :meth:`call`, for an answer that is text (a YAML export)."""
        return self._request(method, path, MANAGE_TIMEOUT_S, **kwargs).text

    def send_yaml(self, method: str, *path: str, text: str) -> Any:
        """Send a YAML definition (``Content-Type: application/yaml``); the JSON answer."""
        headers = {"content-type": YAML_TYPE}
        return self.call(method, *path, content=text.encode("utf-8"), headers=headers)

    def events(self, run_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """``GET /runs/{id}/events``: ``(event, data)`` pairs as they arrive.

        Events: ``node.<status>`` (``data["node"]``: the block's record), repeatedly,
        then one ``run.<status>`` when the run ends, after which the server closes.
        """
        try:
            with self._http.stream(
                "GET", _url("runs", run_id, "events"), timeout=EVENTS_TIMEOUT
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise WorkflowApiError.of(resp)
                yield from _server_sent_events(resp.iter_lines())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None

    def _request(
        self, method: str, path: tuple[str, ...], timeout: float, **kwargs: Any
    ) -> httpx.Response:
        try:
            resp = self._http.request(method, _url(*path), timeout=timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if resp.status_code >= 400:
            raise WorkflowApiError.of(resp)
        return resp

    def _unreachable(self, exc: httpx.HTTPError) -> WorkflowClientError:
        return WorkflowClientError(f"cannot reach Atrium at {self.base_url}: {exc}")


def _url(*path: str) -> str:
    return "/".join([_PREFIX, *(quote(part, safe="") for part in path)])


def _server_sent_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
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
