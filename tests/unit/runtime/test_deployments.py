"""Deployment specs and resource allocation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from atrium.core.errors import InvalidRequestError
from atrium.core.settings import RouteSpec
from atrium.runtime.base import BackendBase
from atrium.runtime.catalog import ModelCatalog
from atrium.runtime.deployers import replica_command
from atrium.runtime.deployments import (
    DeploymentSpec,
    ModelArtifact,
    PoolSpec,
    ReplicaBounds,
    Resources,
    allocate,
    estimate_gib,
    weights_bytes,
)

GIB = 1024**3
CPU_SMALL = PoolSpec(name="cpu-small", kind="cpu", cpus=4, memory_gib=8)
CPU_LARGE = PoolSpec(name="cpu-large", kind="cpu", cpus=32, memory_gib=128)
L4 = PoolSpec(
    name="l4", kind="gpu", cpus=16, memory_gib=64, gpus=4, gpu_type="nvidia-l4", gpu_memory_gib=24
)
POOLS = [L4, CPU_LARGE, CPU_SMALL]


def gguf(parameters: int, quantization: str = "Q4_K_M", **fields: object) -> DeploymentSpec:
    model = ModelArtifact(name="m", parameters=parameters, quantization=quantization)
    return DeploymentSpec.model_validate({"name": "m", "model": model, **fields})


def safetensors(parameters: int, quantization: str = "bf16", **fields: object) -> DeploymentSpec:
    model = ModelArtifact(
        name="m", format="safetensors", parameters=parameters, quantization=quantization
    )
    return DeploymentSpec.model_validate({"name": "m", "model": model, "runtime": "vllm", **fields})


def test_a_small_gguf_goes_to_the_smallest_cpu_pool() -> None:
    allocation = allocate(gguf(135_000_000), POOLS)
    assert allocation.pool == "cpu-small"
    assert allocation.kind == "cpu"
    assert allocation.gpus == 0
    assert 0.5 < allocation.estimated_gib < 1.0
    assert allocation.max_replicas == 4  # four cores, one each


def test_an_8b_q4_fits_the_small_cpu_pool_but_fp16_needs_the_large_one() -> None:
    assert allocate(gguf(8_000_000_000, "Q4_K_M"), POOLS).pool == "cpu-small"
    assert allocate(gguf(8_000_000_000, "F16"), POOLS).pool == "cpu-large"


def test_the_size_on_disk_wins_over_parameters(tmp_path: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"\0" * 4096)
    model = ModelArtifact(name="m", path=weights, parameters=70_000_000_000)
    assert weights_bytes(model) == 4096
    assert weights_bytes(model.model_copy(update={"size_bytes": 10})) == 10


def test_vllm_needs_a_gpu_pool_and_picks_a_power_of_two_of_gpus() -> None:
    allocation = allocate(safetensors(8_000_000_000), POOLS)  # about 20 GiB in bf16
    assert (allocation.pool, allocation.kind, allocation.gpus) == ("l4", "gpu", 1)
    allocation = allocate(safetensors(14_000_000_000), POOLS)  # about 34 GiB
    assert allocation.gpus == 2
    assert allocation.gpu_type == "nvidia-l4"


def test_too_large_for_every_pool_names_each_pool_and_why() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        allocate(gguf(400_000_000_000, "F16"), POOLS)
    error = raised.value
    assert error.status == 400
    assert error.code == "no_pool_fits"
    assert error.param == "resources"
    message = error.message
    assert "no pool can hold 'm'" in message
    assert "'cpu-small' (cpu, 4 CPUs, 8 GiB): needs" in message
    assert "the pool has 128 GiB" in message
    assert "'l4' (gpu, 16 CPUs, 64 GiB, 4 x nvidia-l4 of 24 GiB): needs 64 GPUs" in message


def test_vllm_on_cpu_pools_only_says_it_needs_a_gpu() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        allocate(safetensors(1_000_000_000), [CPU_SMALL])
    assert "'cpu-small' (cpu, 4 CPUs, 8 GiB): vLLM needs a GPU pool" in raised.value.message


def test_requested_resources_constrain_the_pool() -> None:
    spec = gguf(135_000_000, resources=Resources(cpus=8))
    assert allocate(spec, POOLS).pool == "cpu-large"
    spec = gguf(135_000_000, resources=Resources(gpus=1, gpu_type="nvidia-h100"))
    with pytest.raises(InvalidRequestError) as raised:
        allocate(spec, POOLS)
    assert "GPU type 'nvidia-h100' asked for, the pool has 'nvidia-l4'" in raised.value.message
    assert "1 GPUs asked for, the pool has none" in raised.value.message


def test_the_minimum_replica_count_must_fit() -> None:
    spec = gguf(135_000_000, replicas=ReplicaBounds(min=6, max=8))
    allocation = allocate(spec, POOLS)
    assert allocation.pool == "cpu-large"  # the small pool has four cores
    assert allocation.max_replicas >= 6


def test_no_pools_is_a_clear_refusal() -> None:
    with pytest.raises(InvalidRequestError, match="no pools are configured"):
        allocate(gguf(135_000_000), [])


def test_a_remote_deployment_needs_no_pool() -> None:
    spec = DeploymentSpec.model_validate(
        {
            "name": "gpt",
            "model": {"name": "gpt-4o"},
            "runtime": "remote",
            "remote": {"base_url": "https://api.openai.com/v1"},
        }
    )
    assert allocate(spec, []).kind == "remote"
    assert estimate_gib(spec) == 0.0


def test_unknown_quantization_is_refused_by_name() -> None:
    with pytest.raises(InvalidRequestError, match="unknown quantization 'Q9'") as raised:
        allocate(gguf(1_000, "Q9"), POOLS)
    assert raised.value.param == "model.quantization"


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"runtime": "vllm"}, "the vllm runtime serves safetensors"),
        ({"runtime": "remote"}, "the remote runtime needs remote.base_url"),
        ({"replicas": {"min": 3, "max": 2}}, "replicas.min (3) is above replicas.max (2)"),
        ({"replicas": {"min": 1, "max": 2, "initial": 3}}, "replicas.initial must lie"),
        ({"name": "Not A Name"}, "String should match pattern"),
    ],
)
def test_specs_that_cannot_work_are_refused(fields: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(problem)):
        DeploymentSpec.model_validate({"name": "m", "model": {"name": "m"}, **fields})


def test_gpu_pools_need_gpus() -> None:
    with pytest.raises(ValidationError, match="needs gpus and gpu_memory_gib"):
        PoolSpec(name="g", kind="gpu", cpus=1, memory_gib=1)


def test_replica_commands() -> None:
    spec = gguf(135_000_000, context_length=512)
    spec.model.path = Path("/models/smol.gguf")
    command = replica_command(spec, allocate(spec, POOLS), 9000)
    assert command[1:4] == ["-m", "llama_cpp.server", "--model"]
    assert "/models/smol.gguf" in command
    assert command[command.index("--port") + 1] == "9000"
    assert command[command.index("--n_ctx") + 1] == "512"
    assert command[command.index("--model_alias") + 1] == "m"
    big = safetensors(14_000_000_000)
    vllm = replica_command(big, allocate(big, POOLS), 9001)
    assert vllm[2] == "vllm.entrypoints.openai.api_server"
    assert vllm[vllm.index("--tensor-parallel-size") + 1] == "2"


def test_the_catalog_adds_and_removes_deployments_live() -> None:
    catalog = ModelCatalog([])
    backend = BackendBase()
    catalog.add_model("smol", backend, ("small",))
    assert catalog.resolve("small").backend is backend
    catalog.set_route("r", RouteSpec(targets=[{"model": "smol"}]))  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="'smol' is already the name of 'smol'"):
        catalog.add_model("smol", BackendBase())
    with pytest.raises(InvalidRequestError, match="'r' is already the name of 'r'"):
        catalog.add_model("other", BackendBase(), ("r",))
    assert catalog.remove_model("r") is None  # routes go through remove_route
    removed = catalog.remove_model("smol")
    assert removed is not None
    assert removed.backend is backend
    assert catalog.names() == ["r"]
    assert catalog.remove_model("smol") is None
