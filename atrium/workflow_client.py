"""A small synchronous client of the workflow API (what ``atrium workflows ...`` speaks).

Every failure is a :class:`WorkflowClientError` carrying a message fit for a terminal:
the server's own error message with its status (:class:`WorkflowApiError`), or why the
server could not be reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from atrium.api_client import MANAGE_TIMEOUT_S, ApiClient, ApiError, ClientError

__all__ = [
    "EVENTS_TIMEOUT",
    "MANAGE_TIMEOUT_S",
    "WorkflowApiError",
    "WorkflowClient",
    "WorkflowClientError",
    "run_timeout",
]

#: The longest a synchronous run may be held open by the server (its own upper bound).
SERVER_MAX_WAIT_S = 3600.0
#: Time on top of a run's wait for the answer itself to arrive.
_ANSWER_MARGIN_S = 30.0
#: An event stream stays quiet while a block works or an approval waits: no read timeout.
EVENTS_TIMEOUT = httpx.Timeout(MANAGE_TIMEOUT_S, read=None)
_PREFIX = "/v1/workflows"
YAML_TYPE = "application/yaml"


#: Every failure of this client: a message fit for a terminal.
WorkflowClientError = ClientError
#: The server refused a request: ``"404: no workflow 'x'"``.
WorkflowApiError = ApiError


def run_timeout(wait_seconds: float | None) -> float:
    """How long to wait for a synchronous run's answer when it may wait ``wait_seconds``."""
    return min(wait_seconds or SERVER_MAX_WAIT_S, SERVER_MAX_WAIT_S) + _ANSWER_MARGIN_S


class WorkflowClient(ApiClient):
    """The workflow API of one server, as one API key sees it."""

    prefix = _PREFIX

    def text(self, method: str, *path: str, **kwargs: Any) -> str:
        """Like :meth:`call`, for an answer that is text (a YAML export)."""
        return self.request(method, path, MANAGE_TIMEOUT_S, **kwargs).text

    def send_yaml(self, method: str, *path: str, text: str) -> Any:
        """Send a YAML definition (``Content-Type: application/yaml``); the JSON answer."""
        headers = {"content-type": YAML_TYPE}
        return self.call(method, *path, content=text.encode("utf-8"), headers=headers)

    def run_events(self, run_id: str) -> Iterator[tuple[str, Any]]:
        """``GET /runs/{id}/events``: ``(event, data)`` pairs as they arrive.

        Events: ``node.<status>`` (``data["node"]``: the block's record), repeatedly,
        then one ``run.<status>`` when the run ends, after which the server closes.
        """
        return self.events("GET", ("runs", run_id, "events"), EVENTS_TIMEOUT)
