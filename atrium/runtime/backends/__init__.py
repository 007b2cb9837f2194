"""Model backends, each chosen by the ``backend`` field of a model's settings."""

from __future__ import annotations

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
from atrium.runtime.backends.openai_compat import OpenAICompatBackend
from atrium.runtime.base import ModelBackend
from atrium.runtime.catalog import BackendFactory
from atrium.runtime.credentials import SecretReader, StoredCredential
from atrium.runtime.routing import Replica, ReplicaSet, RoutingObserver

__all__ = [
    "LlamaCppBackend",
    "OnnxEmbeddingBackend",
    "OpenAICompatBackend",
    "default_factories",
]


def _llamacpp(name: str, spec: ModelSpec) -> ModelBackend:
    assert isinstance(spec, LlamaCppModel)
    return LlamaCppBackend(name, spec)


def _onnx_embedding(name: str, spec: ModelSpec) -> ModelBackend:
    assert isinstance(spec, OnnxEmbeddingModel)
    return OnnxEmbeddingBackend(name, spec)


def default_factories(
    *,
    observer: RoutingObserver | None = None,
    secrets: SecretReader | None = None,
    credential_refresh_s: float = 60.0,
) -> dict[str, BackendFactory]:
    """One factory per backend kind.

    ``secrets`` resolves the models' ``api_key_secret`` at use, each value kept
    ``credential_refresh_s`` seconds. Tests reach the upstream backends through a real
    server on loopback (their ``base_url``), not an injected transport.
    """

    def credential(name: str, secret: str | None) -> StoredCredential | None:
        if secret is None:
            return None
        if secrets is None:
            msg = f"model {name!r} names api_key_secret {secret!r} but no secret store is wired"
            raise ValueError(msg)
        return StoredCredential(secret, secrets, model=name, refresh_s=credential_refresh_s)

    # The provider SDKs take about a second and a half to import; only processes that
    # serve such a model pay for it.
    def anthropic(name: str, spec: ModelSpec) -> ModelBackend:
        from atrium.runtime.backends.anthropic import AnthropicBackend

        assert isinstance(spec, AnthropicModel)
        return AnthropicBackend(name, spec, credential=credential(name, spec.api_key_secret))

    def gemini(name: str, spec: ModelSpec) -> ModelBackend:
        from atrium.runtime.backends.gemini import GeminiBackend

        assert isinstance(spec, GeminiModel)
        return GeminiBackend(name, spec, credential=credential(name, spec.api_key_secret))

    def openai_compat(name: str, spec: ModelSpec) -> ModelBackend:
        assert isinstance(spec, OpenAICompatModel)
        weights = spec.replica_weights or [1.0] * len(spec.base_urls)
        shared_key = credential(name, spec.api_key_secret)  # one read for all replicas
        replicas = [
            Replica(
                f"{name}@{url.host}:{url.port}",
                OpenAICompatBackend(
                    name,
                    spec,
                    base_url=str(url),
                    credential=shared_key,
                ),
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
        "anthropic": anthropic,
        "gemini": gemini,
    }
