"""What blocks reach, built over the platform's public services.

Blocks never see the gateway, the RAG engine or the secret store directly: each is
reached through the narrow protocol in :mod:`atrium.workflows.blocks.base`, acting as the
key that started the run (its model permissions, limits, usage and access groups).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

import fsspec  # type: ignore[import-untyped]
import orjson

from atrium.core.errors import InvalidRequestError, NotFoundError
from atrium.core.settings import ModelPrice
from atrium.gateway.auth import KeyAuthenticator
from atrium.gateway.service import InferenceService
from atrium.rag.parsers import ParseError, parse_document
from atrium.rag.requests import Caller, QueryRequest
from atrium.rag.service import KnowledgeService
from atrium.store.keys import Scope
from atrium.store.secrets import SecretStore
from atrium.workflows.blocks.base import BlockError

_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


class GatewayModels:
    """Chat through the gateway's own path, as the run's key."""

    def __init__(
        self,
        inference: InferenceService,
        auth: KeyAuthenticator,
        prices: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        self._inference = inference
        self._auth = auth
        self._prices = dict(prices or {})

    async def chat(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed chat completion, its ``usage`` priced (``cost_usd``)."""
        principal = await self._auth.principal_for(key_id)
        answer = await self._inference.chat_as(principal, orjson.dumps({**body, "stream": False}))
        if not isinstance(answer, dict):
            msg = "the model answered with a stream where a completion was expected"
            raise BlockError(msg)
        usage = answer.get("usage")
        price = self._prices.get(str(answer.get("model")))
        if isinstance(usage, dict) and price is not None:
            usage["cost_usd"] = price.cost(
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            )
        return answer


class KnowledgeRetriever:
    """Retrieval from a knowledge base, with the run key's access groups."""

    def __init__(self, knowledge: KnowledgeService, auth: KeyAuthenticator) -> None:
        self._knowledge = knowledge
        self._auth = auth

    async def search(
        self, key_id: str, knowledge_base: str, query: str, *, top_k: int, filters: Any
    ) -> list[dict[str, Any]]:
        """Citations for ``query`` (the answer is the workflow's job, not retrieval's)."""
        key = (await self._auth.principal_for(key_id)).key
        groups = None if Scope.ADMIN in key.scopes else frozenset(key.access_groups)
        caller = Caller(key_id=key.id, groups=groups, authorization=None)
        request = QueryRequest(query=query, top_k=top_k, filter=filters)
        answer = await self._knowledge.search(knowledge_base, caller, request)
        return [
            {**citation.to_public(), "text": citation.chunk.record.text}
            for citation in answer.citations
        ]


class StoredSecrets:
    """Secrets by name from the encrypted store."""

    def __init__(self, store: SecretStore) -> None:
        self._store = store

    async def reveal(self, name: str) -> str:
        """The secret's value (NotFoundError names the secret, never a value)."""
        return await self._store.get(name)


class FsspecArtifacts:
    """Run artifacts in any fsspec file system: a local folder, GCS or S3 by URL."""

    def __init__(self, root_url: str) -> None:
        self._fs, self._root = fsspec.core.url_to_fs(root_url)
        self._root = self._root.rstrip("/")

    def _path(self, run_id: str, name: str) -> str:
        if not _RUN_ID.match(run_id) or not _ARTIFACT_NAME.match(name) or ".." in name:
            msg = f"invalid artifact name {name!r}"
            raise InvalidRequestError(msg, param="name")
        return f"{self._root}/{run_id}/{name}"

    async def put(self, run_id: str, name: str, data: bytes, media_type: str) -> dict[str, Any]:
        """Store one artifact, replacing an earlier one of the same name."""
        path = self._path(run_id, name)

        def write() -> None:
            self._fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with self._fs.open(path, "wb") as handle:
                handle.write(data)

        await asyncio.to_thread(write)
        return {
            "name": name,
            "media_type": media_type,
            "bytes": len(data),
            "url": f"/v1/workflows/runs/{run_id}/artifacts/{name}",
        }

    async def remove(self, run_id: str) -> None:
        """Delete every artifact of a run (a run that could not start after its upload)."""
        path = self._path(run_id, "x").rsplit("/", 1)[0]

        def remove() -> None:
            if self._fs.exists(path):
                self._fs.rm(path, recursive=True)

        await asyncio.to_thread(remove)

    async def get(self, run_id: str, name: str) -> tuple[bytes, str]:
        """An artifact's bytes and media type."""
        path = self._path(run_id, name)

        def read() -> bytes:
            with self._fs.open(path, "rb") as handle:
                data: bytes = handle.read()
                return data

        try:
            data = await asyncio.to_thread(read)
        except FileNotFoundError:
            msg = f"run {run_id} has no artifact {name!r}"
            raise NotFoundError(msg) from None
        return data, _media_type(name)


def _media_type(name: str) -> str:
    suffix = name.rsplit(".", 1)[-1].lower()
    return {
        "md": "text/markdown; charset=utf-8",
        "html": "text/html; charset=utf-8",
        "pdf": "application/pdf",
        "csv": "text/csv; charset=utf-8",
        "json": "application/json",
        "txt": "text/plain; charset=utf-8",
    }.get(suffix, "application/octet-stream")


class ParsedDocuments:
    """Text out of documents with the RAG engine's parsers (off the event loop)."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    async def read(self, name: str, data: bytes) -> list[dict[str, Any]]:
        """Sections of the document; BlockError with the parser's reason otherwise."""
        if len(data) > self._max_bytes:
            msg = f"document {name!r} is over {self._max_bytes} bytes"
            raise BlockError(msg)
        try:
            parsed = await asyncio.to_thread(parse_document, data, name)
        except ParseError as exc:
            raise BlockError(f"cannot read {name!r}: {exc}") from None
        return [
            {"text": s.text, "title": s.heading, "page": s.page, "kind": s.kind}
            for s in parsed.sections
        ]


__all__ = [
    "FsspecArtifacts",
    "GatewayModels",
    "KnowledgeRetriever",
    "ParsedDocuments",
    "StoredSecrets",
]
