"""Model backends, each chosen by the ``backend`` field of a model's settings."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from atrium.core.settings import (
    AnthropicModel,
    GeminiModel,
    LlamaCppModel,
    ModelSpec,
    OnnxEmbeddingModel,
    OpenAICompatModel,
)
from atrium.runtime.backends.llamacpp import LlamaCppBackend
from atrium.runtime.backends.onnx_embedding import OnnxEmbeddingBackend
from atrium.runtime.backends.openai_compat import OpenAICompatBackend, build_client
from atrium.runtime.base import ModelBackend
from atrium.runtime.catalog import BackendFactory
from atrium.runtime.routing import Replica, ReplicaSet, RoutingObserver

__all__ = [
    "LlamaCppBackend",
    "OnnxEmbeddingBackend",
    "OpenAICompatBackend",
    "default_factories",
]

ClientFactory = Callable[[OpenAICompatModel, str], httpx.AsyncClient]


def _llamacpp(name: str, spec: ModelSpec) -> ModelBackend:
    assert isinstance(spec, LlamaCppModel)
    return LlamaCppBackend(name, spec)


def _onnx_embedding(name: str, spec: ModelSpec) -> ModelBackend:
    assert isinstance(spec, OnnxEmbeddingModel)
    return OnnxEmbeddingBackend(name, spec)


# The provider SDKs take about a second and a half to import; only processes that
# serve such a model pay for it.
def _anthropic(name: str, spec: ModelSpec) -> ModelBackend:
    from atrium.runtime.backends.anthropic import AnthropicBackend

    assert isinstance(spec, AnthropicModel)
    return AnthropicBackend(name, spec)


def _gemini(name: str, spec: ModelSpec) -> ModelBackend:
    from atrium.runtime.backends.gemini import GeminiBackend

    assert isinstance(spec, GeminiModel)
    return GeminiBackend(name, spec)


def default_factories(
    client_factory: ClientFactory | None = None, observer: RoutingObserver | None = None
) -> dict[str, BackendFactory]:
    """One factory per backend kind.

    ``client_factory`` lets tests hand the upstream backends a client over any
    transport (the transport is the seam, never a patch).
    """
    make_client = client_factory or build_client

    def openai_compat(name: str, spec: ModelSpec) -> ModelBackend:
        assert isinstance(spec, OpenAICompatModel)
        weights = spec.replica_weights or [1.0] * len(spec.base_urls)
        replicas = [
            Replica(
                f"{name}@{url.host}:{url.port}",
                OpenAICompatBackend(name, spec, make_client(spec, str(url))),
                weight,
            )
            for url, weight in zip(spec.base_urls, weights, strict=True)
        ]
        return ReplicaSet(
            name,
            replicas,
            balancing=spec.balancing,
            breaker=spec.breaker,
            health_check_seconds=spec.health_check_seconds,
            observer=observer,
        )

    return {
        "llamacpp": _llamacpp,
        "onnx_embedding": _onnx_embedding,
        "openai_compat": openai_compat,
        "anthropic": _anthropic,
        "gemini": _gemini,
    }
