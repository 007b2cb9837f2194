"""A local stand-in for the Hugging Face Hub that answers as the Hub API documents.

It serves what ``huggingface_hub`` calls (checked against huggingface_hub 2.4.0's source):

- ``GET /api/models`` with ``author``, ``search``, ``filter`` (tags, all required),
  ``sort``, ``limit``, ``expand``, ``full`` and ``cardData``; pages follow a ``Link:
  <...>; rel="next"`` header, as ``huggingface_hub.utils._pagination`` reads it;
- ``GET /api/models/{repo_id}`` and ``/api/models/{repo_id}/revision/{rev}``;
- ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}``: like an LFS file on the Hub,
  a 302 to the CDN carrying ``X-Repo-Commit``, ``X-Linked-Etag`` (the sha256),
  ``X-Linked-Size`` and ``ETag``; without a CDN, a 200 with ``ETag``, ``X-Repo-Commit`` and
  ``Content-Length``. Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound,
  EntryNotFound) as ``hf_raise_for_status`` expects;
- ``GET``/``HEAD /cdn/{sha256}``: the file bytes (ranges honoured), meant to be served by a
  second server, so the CDN is another origin as on the Hub.

``down`` makes every answer a 503 with ``Retry-After: 0`` (the Hub's answer when it is
unavailable). Files are real GGUF files written by :func:`write_gguf`.
"""

from __future__ import annotations

import hashlib
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import gguf
import numpy as np
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_DEFAULT_FIELDS = (
    "_id", "id", "likes", "trendingScore", "private", "downloads", "tags",
    "pipeline_tag", "library_name", "createdAt", "modelId",
)  # fmt: skip
_FULL_FIELDS = (*_DEFAULT_FIELDS, "author", "sha", "lastModified", "gated", "disabled",
                "siblings")  # fmt: skip


def write_gguf(path: Path, *, name: str, note: str = "", context_length: int = 512) -> bytes:
    """Write a small, valid GGUF file (llama architecture, one tensor); return its bytes."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(context_length)
    writer.add_string("general.description", note or name)
    writer.add_tensor("w", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def gguf_bytes(name: str, note: str = "") -> bytes:
    """The bytes of a small GGUF file (see :func:`write_gguf`)."""
    with tempfile.TemporaryDirectory() as folder:
        return write_gguf(Path(folder) / "model.gguf", name=name, note=note)


def hub_webhook_payload(repo_id: str, new_sha: str, old_sha: str | None = None) -> dict[str, Any]:
    """A ``repo.content`` update webhook body, as the Hub documents it (version 3)."""
    author = repo_id.split("/", maxsplit=1)[0]
    return {
        "event": {"action": "update", "scope": "repo.content"},
        "repo": {
            "type": "model",
            "name": repo_id,
            "id": secrets.token_hex(12),
            "private": False,
            "url": {
                "web": f"https://huggingface.co/{repo_id}",
                "api": f"https://huggingface.co/api/models/{repo_id}",
            },
            "headSha": new_sha,
            "owner": {"id": secrets.token_hex(12)},
            "author": {"id": author},
        },
        "webhook": {"id": secrets.token_hex(12), "version": 3},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": old_sha, "newSha": new_sha}],
    }


@dataclass
class _Commit:
    sha: str
    files: dict[str, bytes]
    at: datetime


@dataclass
class _Repo:
    repo_id: str
    object_id: str
    created_at: datetime
    tags: list[str]
    card_data: dict[str, Any]
    commits: list[_Commit] = field(default_factory=list)

    @property
    def head(self) -> _Commit:
        return self.commits[-1]

    def commit(self, revision: str) -> _Commit | None:
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.sha == revision), None)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _error(status: int, code: str, message: str, commit: str | None = None) -> Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class _Unavailable(BaseHTTPMiddleware):
    def __init__(self, app: Any, hub: FakeHub) -> None:
        super().__init__(app)
        self._hub = hub

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        self._hub.record(request)
        if self._hub.down:
            return Response("Service Unavailable", status_code=503, headers={"Retry-After": "0"})
        return await call_next(request)


class FakeHub:
    """The Hub's model API over repositories the test publishes commits to."""

    def __init__(self, *, page_size: int = 1000) -> None:
        self.page_size = page_size
        self.down = False
        self.endpoint = ""  # the API's base URL, set by whoever serves the app
        self.cdn_url: str | None = None
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._repos: dict[str, _Repo] = {}
        self._blobs: dict[str, bytes] = {}
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        self.app = Starlette(
            routes=[
                Route("/api/models", self._list, methods=["GET"]),
                Route("/api/models/{ns}/{name}", self._info, methods=["GET"]),
                Route("/api/models/{ns}/{name}/revision/{revision}", self._info, methods=["GET"]),
                Route(
                    "/{ns}/{name}/resolve/{revision}/{filename:path}",
                    self._resolve,
                    methods=["GET", "HEAD"],
                ),
                Route("/cdn/{sha256}", self._cdn, methods=["GET", "HEAD"]),
            ],
            middleware=[Middleware(_Unavailable, hub=self)],
        )

    # -- what tests do ---------------------------------------------------------------

    def publish(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        tags: tuple[str, ...] = ("gguf",),
        license: str | None = "apache-2.0",
    ) -> str:
        """Commit ``files`` (added or replaced) to ``repo_id``; returns the commit sha."""
        with self._lock:
            self._clock += timedelta(minutes=1)
            repo = self._repos.get(repo_id)
            if repo is None:
                card = {"license": license} if license else {}
                all_tags = [*tags, *([f"license:{license}"] if license else [])]
                repo = _Repo(repo_id, secrets.token_hex(12), self._clock, all_tags, card)
                self._repos[repo_id] = repo
            previous = dict(repo.head.files) if repo.commits else {}
            sha = hashlib.sha1(f"{repo_id}{self._clock}{secrets.token_hex(4)}".encode()).hexdigest()
            repo.commits.append(_Commit(sha, previous | files, self._clock))
            for content in files.values():
                self._blobs[hashlib.sha256(content).hexdigest()] = content
            return sha

    def record(self, request: Request) -> None:
        """Note a request (method, path, query) for assertions."""
        with self._lock:
            self.requests.append((request.method, request.url.path, request.url.query))

    def paths(self, method: str = "GET") -> list[str]:
        """The paths requested with ``method``."""
        with self._lock:
            return [path for m, path, _ in self.requests if m == method]

    # -- the API -----------------------------------------------------------------------

    async def _list(self, request: Request) -> Response:
        params = request.query_params
        with self._lock:
            repos = [r for r in self._repos.values() if self._listed(r, params)]
            repos.sort(key=lambda r: r.head.at, reverse=True)
            limit = int(params.get("limit", self.page_size))
            page_size = min(limit, self.page_size)
            start = int(params.get("cursor", "0"))
            page = repos[start : start + page_size]
            body = [self._fields(r, r.head, _listing_fields(params)) for r in page]
        headers = {}
        if start + page_size < len(repos):
            query = [(k, v) for k, v in params.multi_items() if k != "cursor"]
            query.append(("cursor", str(start + page_size)))
            next_url = f"{request.base_url}api/models?{urlencode(query)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return JSONResponse(body, headers=headers)

    async def _info(self, request: Request) -> Response:
        repo_id = f"{request.path_params['ns']}/{request.path_params['name']}"
        revision = request.path_params.get("revision", "main")
        expand = request.query_params.getlist("expand")
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                return _error(404, "RepoNotFound", "Repository not found")
            commit = repo.commit(revision)
            if commit is None:
                return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            names = ("_id", "id", *expand) if expand else (*_FULL_FIELDS, "cardData")
            body = self._fields(repo, commit, names, blobs="blobs" in request.query_params)
        return JSONResponse(body)

    async def _resolve(self, request: Request) -> Response:
        repo_id = f"{request.path_params['ns']}/{request.path_params['name']}"
        filename = request.path_params["filename"]
        with self._lock:
            repo = self._repos.get(repo_id)
            if repo is None:
                return _error(404, "RepoNotFound", "Repository not found")
            commit = repo.commit(request.path_params["revision"])
            if commit is None:
                return _error(404, "RevisionNotFound", "Invalid rev id")
            content = commit.files.get(filename)
        if content is None:
            return _error(404, "EntryNotFound", f"{filename} does not exist", commit.sha)
        sha256 = hashlib.sha256(content).hexdigest()
        if self.cdn_url is None:
            headers = {"ETag": f'"{sha256}"', "X-Repo-Commit": commit.sha}
            return _content(request, content, headers)
        location = f"{self.cdn_url}/cdn/{sha256}?{urlencode({'filename': filename})}"
        text = f"Found. Redirecting to {location}".encode()
        headers = {
            "Location": location,
            "X-Repo-Commit": commit.sha,
            "X-Linked-Etag": f'"{sha256}"',
            "X-Linked-Size": str(len(content)),
            "ETag": f'"{_git_blob_sha(sha256, len(content))}"',
            "Content-Length": str(len(text)),
        }
        body = b"" if request.method == "HEAD" else text
        return Response(body, status_code=302, headers=headers, media_type="text/plain")

    async def _cdn(self, request: Request) -> Response:
        sha256 = request.path_params["sha256"]
        with self._lock:
            content = self._blobs.get(sha256)
        if content is None:
            return Response("NoSuchKey", status_code=404)
        return _content(request, content, {"ETag": f'"{sha256}"'})

    # -- shapes ------------------------------------------------------------------------

    def _listed(self, repo: _Repo, params: Any) -> bool:
        author = params.get("author")
        if author and repo.repo_id.split("/")[0].lower() != author.lower():
            return False
        search = params.get("search")
        if search and search.lower() not in repo.repo_id.lower():
            return False
        return all(tag in repo.tags for tag in params.getlist("filter"))

    def _fields(
        self, repo: _Repo, commit: _Commit, names: tuple[str, ...], *, blobs: bool = False
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "_id": repo.object_id,
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": _iso(commit.at),
            "createdAt": _iso(repo.created_at),
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "trendingScore": 0,
            "tags": list(repo.tags),
            "pipeline_tag": "text-generation",
            "library_name": "gguf",
            "cardData": dict(repo.card_data),
            "siblings": [
                _sibling(name, data, blobs) for name, data in sorted(commit.files.items())
            ],
            "usedStorage": sum(len(data) for data in commit.files.values()),
        }
        return {name: values[name] for name in names if name in values}


def _listing_fields(params: Any) -> tuple[str, ...]:
    expand = params.getlist("expand")
    if expand:
        return ("_id", "id", *expand)
    if params.get("full") in {"True", "true", "1"}:
        extra = ("cardData",) if params.get("cardData") in {"True", "true", "1"} else ()
        return (*_FULL_FIELDS, *extra)
    return _DEFAULT_FIELDS


def _sibling(name: str, data: bytes, blobs: bool) -> dict[str, Any]:
    if not blobs:
        return {"rfilename": name}
    sha256 = hashlib.sha256(data).hexdigest()
    return {
        "rfilename": name,
        "size": len(data),
        "blobId": _git_blob_sha(sha256, len(data)),
        "lfs": {"size": len(data), "sha256": sha256, "pointerSize": 134},
    }


def _git_blob_sha(sha256: str, size: int) -> str:
    # An LFS file's git blob is its pointer file; its sha1 is the file's git ETag.
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    blob = f"blob {len(pointer)}\0{pointer}".encode()
    return hashlib.sha1(blob).hexdigest()


def _content(request: Request, content: bytes, headers: dict[str, str]) -> Response:
    start = 0
    status = 200
    ranged = request.headers.get("range", "")
    if ranged.startswith("bytes=") and ranged.endswith("-"):
        start = min(int(ranged[6:-1]), len(content))
        status = 206
        headers = headers | {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"}
    body = content[start:]
    headers = headers | {"Content-Length": str(len(body)), "Accept-Ranges": "bytes"}
    if request.method == "HEAD":
        return Response(b"", status_code=status, headers=headers)
    return Response(
        body, status_code=status, headers=headers, media_type="application/octet-stream"
    )
