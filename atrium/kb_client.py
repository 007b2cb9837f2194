"""A small synchronous client of the knowledge-base API (what ``atrium kb ...`` speaks).

Every failure is a :class:`KnowledgeClientError` carrying a message fit for a terminal:
the server's own error message with its status (:class:`ApiError`), or why the server
or a download could not be reached.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote

import httpx

from atrium.api_client import ApiClient, ApiError, ClientError

__all__ = [
    "MAX_DOWNLOAD_BYTES",
    "ApiError",
    "Download",
    "KnowledgeClient",
    "KnowledgeClientError",
    "download",
]

#: Largest file :func:`download` fetches (the server's default upload limit).
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
DOWNLOAD_TIMEOUT_S = 60.0
# An upload is answered once the document is indexed; a long PDF takes a while.
UPLOAD_TIMEOUT_S = 600.0
SYNC_TIMEOUT_S = 3600.0
QUERY_TIMEOUT_S = 300.0
_PREFIX = "/v1/knowledge-bases"
#: An extension for a downloaded file that has none, by its media type.
_EXTENSION_OF = {
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/plain": ".txt",
    "text/csv": ".csv",
    "text/tab-separated-values": ".tsv",
    "application/json": ".json",
    "application/x-ndjson": ".jsonl",
}


#: Every failure of this client: a message fit for a terminal.
KnowledgeClientError = ClientError


class KnowledgeClient(ApiClient):
    """The knowledge-base API of one server, as one API key sees it."""

    prefix = _PREFIX

    def upload(self, kb: str, filename: str, content: BinaryIO | bytes) -> dict[str, Any]:
        """Upload one document; answered once it is indexed (or failed)."""
        files = {"file": (filename, content, "application/octet-stream")}
        answer: dict[str, Any] = self.call(
            "POST", kb, "documents", files=files, timeout=UPLOAD_TIMEOUT_S
        )
        return answer

    def sync(self, kb: str, source: str) -> dict[str, Any]:
        """Sync a source now; its report."""
        report: dict[str, Any] = self.call(
            "POST", kb, "sources", source, "sync", timeout=SYNC_TIMEOUT_S
        )
        return report

    def answer_events(self, kb: str, body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
        """``POST .../query`` streamed: ``(event, data)`` pairs as they arrive.

        Events: ``citations``, then ``delta`` (``{"text"}``) repeatedly, then ``done``
        (or ``error``).
        """
        streamed = {**body, "stream": True}
        return self.events("POST", (kb, "query"), QUERY_TIMEOUT_S, json=streamed)


@dataclass(frozen=True, slots=True)
class Download:
    """A downloaded file: the name to upload it under and its bytes."""

    name: str
    data: bytes


def download(url: str, *, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Download:
    """Fetch an http(s) URL (redirects followed), refusing more than ``max_bytes``.

    The name comes from ``Content-Disposition``, else from the URL's last segment; a
    name without an extension gets one from the ``Content-Type``.
    """
    data = bytearray()
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            if resp.status_code >= 400:
                raise KnowledgeClientError(f"cannot download {url}: HTTP {resp.status_code}")
            for piece in resp.iter_bytes():
                data += piece
                if len(data) > max_bytes:
                    limit = max_bytes / 1_048_576
                    raise KnowledgeClientError(f"cannot download {url}: over {limit:g} MB")
            return Download(_download_name(resp), bytes(data))
    except httpx.HTTPError as exc:
        raise KnowledgeClientError(f"cannot download {url}: {exc}") from None


def _download_name(resp: httpx.Response) -> str:
    header = Message()
    header["content-disposition"] = resp.headers.get("content-disposition", "")
    name = header.get_filename() or unquote(PurePosixPath(resp.url.path).name)
    # A sent name may hold folders (even Windows ones); the server keeps the last part.
    name = PurePosixPath(name.replace("\\", "/")).name or "download"
    media_type = resp.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if not PurePosixPath(name).suffix and media_type in _EXTENSION_OF:
        name += _EXTENSION_OF[media_type]
    return name
