"""Deployment specs and resource allocation.

A :class:`DeploymentSpec` says what to serve (a model version and its weights),
on which runtime (llama.cpp for GGUF, vLLM for safetensors on GPUs, or a remote
provider), how many replicas, with which resources and autoscaling target.

:func:`allocate` picks the smallest pool that can hold one replica (and the
minimum replica count) from the model's size and quantization, or refuses with
one reason per pool.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, HttpUrl, SecretStr, model_validator

from atrium.core.errors import InvalidRequestError

Runtime = Literal["llamacpp", "vllm", "remote"]
PoolKind = Literal["cpu", "gpu"]
_GIB = 1024**3
_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,62}$"

#: Bytes per parameter by quantization (GGUF block formats carry a scale per block).
BYTES_PER_PARAMETER: dict[str, float] = {
    "f32": 4.0,
    "fp32": 4.0,
    "f16": 2.0,
    "fp16": 2.0,
    "bf16": 2.0,
    "q8_0": 1.0625,
    "int8": 1.0,
    "fp8": 1.0,
    "q6_k": 0.8203,
    "q5_k_m": 0.7109,
    "q5_k_s": 0.6875,
    "q5_1": 0.75,
    "q5_0": 0.6875,
    "q4_k_m": 0.6016,
    "q4_k_s": 0.5625,
    "q4_1": 0.625,
    "q4_0": 0.5625,
    "int4": 0.5,
    "awq": 0.5,
    "gptq": 0.5,
    "q3_k_m": 0.4297,
    "q3_k_s": 0.4297,
    "q2_k": 0.3281,
}
#: Weights take this share of a replica's memory; the rest is KV cache, activations, runtime.
_WEIGHT_OVERHEAD = 1.2
#: The server process itself (Python, the HTTP stack, llama.cpp or vLLM's own buffers).
_RUNTIME_GIB: dict[Runtime, float] = {"llamacpp": 0.5, "vllm": 2.0, "remote": 0.0}


class ModelArtifact(BaseModel):
    """The model version a deployment serves, and what allocation needs to know of it."""

    name: str = Field(description="Registry model name.")
    version: str = Field("latest", description="Registry version (or any label).")
    path: Path | None = Field(None, description="Local weights: a GGUF file or a folder.")
    format: Literal["gguf", "safetensors"] = "gguf"
    parameters: int | None = Field(None, ge=1, description="Parameter count, when known.")
    quantization: str | None = Field(
        None, description="Weight quantization (Q4_K_M, Q8_0, fp16, awq, ...)."
    )
    size_bytes: int | None = Field(None, ge=1, description="Weights on disk, when known.")


class ReplicaBounds(BaseModel):
    """How many replicas: at least ``min``, at most ``max``; ``initial`` at deploy."""

    min: int = Field(1, ge=0)
    max: int = Field(1, ge=1)
    initial: int | None = Field(None, ge=0, description="Replicas at deploy (default: min).")

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.min > self.max:
            raise ValueError(f"replicas.min ({self.min}) is above replicas.max ({self.max})")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError("replicas.initial must lie between min and max")
        return self

    @property
    def start(self) -> int:
        """Replicas started by ``deploy``."""
        return self.min if self.initial is None else self.initial


class Resources(BaseModel):
    """What one replica asks for; unset fields are estimated from the model."""

    cpus: float | None = Field(None, gt=0, description="CPU cores per replica.")
    memory_gib: float | None = Field(None, gt=0, description="Memory per replica (GiB).")
    gpus: int = Field(0, ge=0, description="GPUs per replica (0: estimate for GPU runtimes).")
    gpu_type: str | None = Field(None, description="Required GPU type (e.g. nvidia-l4).")


class AutoscalingSpec(BaseModel):
    """The signal the autoscaler holds each replica at."""

    metric: Literal["in_flight", "requests_per_second"] = "in_flight"
    target: float = Field(4.0, gt=0, description="Target value per replica.")
    scale_down_delay_seconds: float = Field(300.0, ge=0)


class RemoteProvider(BaseModel):
    """An OpenAI-compatible provider serving the model elsewhere."""

    base_url: HttpUrl
    upstream_model: str | None = None
    api_key: SecretStr | None = None


class DeploymentSpec(BaseModel):
    """One deployment: a model version on a runtime, with replicas and resources."""

    name: str = Field(pattern=_NAME_PATTERN, description="Public model name it is served as.")
    model: ModelArtifact
    runtime: Runtime = "llamacpp"
    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds)
    resources: Resources = Field(default_factory=Resources)
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    context_length: int = Field(2048, ge=128, description="Context window per replica.")
    remote: RemoteProvider | None = None
    aliases: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _runtime_fits_model(self) -> DeploymentSpec:
        if self.runtime == "llamacpp" and self.model.format != "gguf":
            raise ValueError("the llamacpp runtime serves GGUF files (model.format: gguf)")
        if self.runtime == "vllm" and self.model.format != "safetensors":
            raise ValueError("the vllm runtime serves safetensors (model.format: safetensors)")
        if self.runtime == "remote" and self.remote is None:
            raise ValueError("the remote runtime needs remote.base_url")
        return self


class PoolSpec(BaseModel):
    """A pool replicas can be placed on: its capacity in all (every node together)."""

    name: str
    kind: PoolKind = "cpu"
    cpus: float = Field(gt=0)
    memory_gib: float = Field(gt=0)
    gpus: int = Field(0, ge=0)
    gpu_type: str | None = None
    gpu_memory_gib: float = Field(0.0, ge=0, description="Memory of one GPU.")

    @model_validator(mode="after")
    def _gpu_pools_have_gpus(self) -> PoolSpec:
        if self.kind == "gpu" and (self.gpus < 1 or self.gpu_memory_gib <= 0):
            raise ValueError(f"GPU pool {self.name!r} needs gpus and gpu_memory_gib")
        return self


class Allocation(BaseModel):
    """Where each replica goes and what it gets."""

    pool: str
    kind: PoolKind | Literal["remote"]
    cpus: float
    memory_gib: float
    gpus: int = 0
    gpu_type: str | None = None
    estimated_gib: float = Field(description="Estimated memory one replica needs.")
    max_replicas: int = Field(description="Replicas the pool can hold at once.")


def local_pools() -> list[PoolSpec]:
    """One CPU pool: this machine's cores and memory."""
    cpus = float(os.cpu_count() or 1)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / _GIB
    return [PoolSpec(name="local-cpu", kind="cpu", cpus=cpus, memory_gib=round(memory, 1))]


# -- estimation -----------------------------------------------------------------------


def weights_bytes(model: ModelArtifact) -> int:
    """Bytes of weights: from ``size_bytes``, the files on disk, or parameters x quantization."""
    if model.size_bytes is not None:
        return model.size_bytes
    if model.path is not None and model.path.exists():
        return _disk_size(model.path)
    if model.parameters is not None:
        return math.ceil(model.parameters * _bytes_per_parameter(model))
    msg = "cannot size the model: give model.size_bytes, an existing model.path or parameters"
    raise InvalidRequestError(msg, param="model")


def _disk_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*.safetensors")) or sum(
        p.stat().st_size for p in path.rglob("*") if p.is_file()
    )


def _bytes_per_parameter(model: ModelArtifact) -> float:
    default = "q4_k_m" if model.format == "gguf" else "bf16"
    key = (model.quantization or default).lower()
    if key not in BYTES_PER_PARAMETER:
        known = ", ".join(sorted(BYTES_PER_PARAMETER))
        msg = f"unknown quantization {model.quantization!r} (known: {known})"
        raise InvalidRequestError(msg, param="model.quantization")
    return BYTES_PER_PARAMETER[key]


def estimate_gib(spec: DeploymentSpec) -> float:
    """Memory one replica needs (GiB): weights, KV cache and activations, the runtime."""
    if spec.runtime == "remote":
        return 0.0
    weights = weights_bytes(spec.model) / _GIB
    context = spec.context_length / 2048 * 0.05 * max(1.0, weights)  # KV cache grows with both
    need = weights * _WEIGHT_OVERHEAD + context + _RUNTIME_GIB[spec.runtime]
    return round(max(need, spec.resources.memory_gib or 0.0), 2)


# -- allocation -----------------------------------------------------------------------


def allocate(spec: DeploymentSpec, pools: list[PoolSpec]) -> Allocation:
    """The smallest pool that holds ``replicas.min`` replicas, or 400 saying why none does."""
    if spec.runtime == "remote":
        return Allocation(
            pool="remote", kind="remote", cpus=0, memory_gib=0, estimated_gib=0, max_replicas=0
        )
    need = estimate_gib(spec)
    reasons: list[str] = []
    for pool in sorted(pools, key=_pool_size):
        placed = _place(spec, pool, need)
        if isinstance(placed, Allocation):
            return placed
        reasons.append(f"{pool.name!r} ({_describe(pool)}): {placed}")
    if not reasons:
        reasons.append("no pools are configured")
    msg = f"no pool can hold {spec.name!r} (needs about {need:.2f} GiB a replica): " + "; ".join(
        reasons
    )
    raise InvalidRequestError(msg, param="resources", code="no_pool_fits")


def _pool_size(pool: PoolSpec) -> tuple[float, ...]:
    """CPU pools before GPU pools, then the least capacity first."""
    return (pool.gpus * pool.gpu_memory_gib, pool.memory_gib, pool.cpus)


def _describe(pool: PoolSpec) -> str:
    text = f"{pool.kind}, {pool.cpus:g} CPUs, {pool.memory_gib:g} GiB"
    if pool.kind == "gpu":
        text += f", {pool.gpus} x {pool.gpu_type or 'GPU'} of {pool.gpu_memory_gib:g} GiB"
    return text


def _place(spec: DeploymentSpec, pool: PoolSpec, need: float) -> Allocation | str:
    """An allocation on this pool, or why it does not fit."""
    if spec.runtime == "vllm" and pool.kind != "gpu":
        return "vLLM needs a GPU pool"
    wanted_gpus = spec.resources.gpus
    if wanted_gpus and pool.kind != "gpu":
        return f"{wanted_gpus} GPUs asked for, the pool has none"
    if spec.resources.gpu_type and pool.gpu_type != spec.resources.gpu_type:
        return f"GPU type {spec.resources.gpu_type!r} asked for, the pool has {pool.gpu_type!r}"
    if pool.kind == "gpu":
        return _place_on_gpus(spec, pool, need)
    return _place_on_cpus(spec, pool, need)


def _place_on_cpus(spec: DeploymentSpec, pool: PoolSpec, need: float) -> Allocation | str:
    cpus = spec.resources.cpus or 1.0
    if cpus > pool.cpus:
        return f"{cpus:g} CPUs a replica asked for, the pool has {pool.cpus:g}"
    if need > pool.memory_gib:
        return f"needs {need:.2f} GiB a replica, the pool has {pool.memory_gib:g} GiB"
    fit = int(min(pool.memory_gib // need if need else math.inf, pool.cpus // cpus))
    if fit < spec.replicas.min:
        return f"holds {fit} replicas, replicas.min is {spec.replicas.min}"
    return Allocation(
        pool=pool.name,
        kind="cpu",
        cpus=cpus,
        memory_gib=need,
        estimated_gib=need,
        max_replicas=fit,
    )


def _place_on_gpus(spec: DeploymentSpec, pool: PoolSpec, need: float) -> Allocation | str:
    """Weights on the GPUs (tensor parallel over a power of two); host memory for loading."""
    gpus = spec.resources.gpus or _gpus_needed(need, pool.gpu_memory_gib)
    if gpus > pool.gpus:
        have = f"{pool.gpus} x {pool.gpu_memory_gib:g} GiB"
        return f"needs {gpus} GPUs ({need:.2f} GiB of GPU memory), the pool has {have}"
    if need > gpus * pool.gpu_memory_gib:
        return f"needs {need:.2f} GiB on {gpus} GPUs of {pool.gpu_memory_gib:g} GiB"
    cpus = spec.resources.cpus or 1.0
    host = spec.resources.memory_gib or min(need, pool.memory_gib)
    fit = int(min(pool.gpus // gpus, pool.cpus // cpus, pool.memory_gib // max(host, 1e-9)))
    if fit < spec.replicas.min:
        return f"holds {fit} replicas, replicas.min is {spec.replicas.min}"
    return Allocation(
        pool=pool.name,
        kind="gpu",
        cpus=cpus,
        memory_gib=host,
        gpus=gpus,
        gpu_type=pool.gpu_type,
        estimated_gib=need,
        max_replicas=fit,
    )


def _gpus_needed(need: float, per_gpu: float) -> int:
    """The smallest power of two of GPUs whose memory holds ``need`` (tensor parallelism)."""
    count = 1
    while count * per_gpu < need:
        count *= 2
    return count
