"""A reranker over HTTP in the Cohere ``/rerank`` wire format (Cohere, Jina, TEI, vLLM).

Request: ``{"model", "query", "documents": [str], "top_n"}``; response:
``{"results": [{"index", "relevance_score"}]}``, best first. The endpoint is reached
through the SSRF guard like every user-configured URL, with the API key read from the
secret store. A reranker that fails (timeout, bad status, garbage) is logged and the
fused order kept: reranking improves an answer, it must never break one.
"""

from __future__ import annotations

import logging

import httpx

from atrium.core.errors import AtriumError
from atrium.core.netguard import NetworkPolicy, guarded_client
from atrium.rag.connectors.base import SecretGetter, mask_url
from atrium.rag.specs import RerankerSpec

logger = logging.getLogger("atrium.rag")


class HttpReranker:
    """Calls a ``/rerank`` endpoint; returns ``(index, relevance)`` best first."""

    def __init__(self, spec: RerankerSpec, policy: NetworkPolicy, secrets: SecretGetter) -> None:
        self._spec = spec
        self._policy = policy
        self._secrets = secrets

    async def rerank(self, query: str, documents: list[str]) -> list[tuple[int, float]]:
        """Relevance of each document; the identity order when the endpoint fails."""
        if not documents:
            return []
        try:
            return await self._call(query, documents)
        except (httpx.HTTPError, AtriumError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "reranker at %s failed, keeping the fused order: %s",
                mask_url(self._spec.url),
                type(exc).__name__,
            )
            return [(index, 0.0) for index in range(len(documents))]

    async def _call(self, query: str, documents: list[str]) -> list[tuple[int, float]]:
        headers = {}
        if self._spec.api_key_secret:
            key = await self._secrets.get(self._spec.api_key_secret)
            headers["authorization"] = f"Bearer {key}"
        body = {
            "model": self._spec.model,
            "query": query,
            "documents": documents,
            "top_n": len(documents),
        }
        async with guarded_client(self._policy, timeout=self._spec.timeout_seconds) as client:
            response = await client.post(self._spec.url, json=body, headers=headers)
            response.raise_for_status()
            results = response.json()["results"]
        ranked = [(int(item["index"]), float(item["relevance_score"])) for item in results]
        if any(not 0 <= index < len(documents) for index, _ in ranked):
            raise ValueError("the reranker returned an index out of range")
        return sorted(ranked, key=lambda pair: -pair[1])
