"""The Kubernetes deployer, with the official client, against a local stand-in API server.

The stand-in (``fake_kubernetes.py``) answers the API's documented paths and wire
format and plays the Deployment and KServe controllers (pods ready after a delay).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from kubernetes import client

from atrium.core.errors import ConflictError, InvalidRequestError, NotFoundError
from atrium.runtime.deployers import DeploymentFailedError, ReplicaState
from atrium.runtime.deployers.kubernetes import KubernetesDeployer, KubernetesOptions
from atrium.runtime.deployments import DeploymentSpec
from tests.integration.runtime.fake_kubernetes import FakeKubernetes

POOLS = [
    {"name": "cpu", "kind": "cpu", "cpus": 16, "memory_gib": 64},
    {"name": "l4", "kind": "gpu", "cpus": 32, "memory_gib": 128, "gpus": 4,
     "gpu_type": "nvidia-l4", "gpu_memory_gib": 24},
]  # fmt: skip
MANAGED = "app.kubernetes.io/managed-by"


def spec(name: str = "smol", *, initial: int = 2, maximum: int = 3) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "name": name,
            "model": {"name": "smollm2-135m", "version": "1", "path": "smol.gguf",
                      "size_bytes": 100 * 1024**2},
            "replicas": {"min": 1, "max": maximum, "initial": initial},
            "resources": {"cpus": 1},
        }
    )  # fmt: skip


def vllm_spec() -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "name": "llama-8b",
            "model": {"name": "llama-8b", "format": "safetensors", "parameters": 8_000_000_000},
            "runtime": "vllm",
            "replicas": {"min": 1, "max": 2},
        }
    )


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeKubernetes]:
    server = FakeKubernetes(ready_delay=0.3)
    await server.start()
    yield server
    await server.close()


def make_deployer(fake: FakeKubernetes, **fields: Any) -> KubernetesDeployer:
    options = KubernetesOptions.model_validate(
        {"pools": POOLS, "ready_timeout_seconds": 10, "delete_timeout_seconds": 10, **fields}
    )
    return KubernetesDeployer(options, configuration=client.Configuration(host=fake.url))


@pytest_asyncio.fixture
async def deployer(fake: FakeKubernetes) -> AsyncIterator[KubernetesDeployer]:
    made = make_deployer(fake)
    yield made
    await made.close()


def everything(fake: FakeKubernetes) -> dict[str, int]:
    kinds = ("deployments", "services", "pods", "horizontalpodautoscalers", "scaledobjects")
    return {kind: len(fake.stored(kind)) for kind in (*kinds, "inferenceservices")}


def requests(fake: FakeKubernetes, method: str, fragment: str) -> list[tuple[str, str, str]]:
    return [r for r in fake.requests if r[0] == method and fragment in r[1]]


# -- deploy, status, scale, list, stop ----------------------------------------------------------


async def test_deploy_creates_the_objects_and_returns_once_ready(
    fake: FakeKubernetes, deployer: KubernetesDeployer
) -> None:
    deployment = await deployer.deploy(spec())
    assert deployment.name == "smol"
    assert deployment.desired == 2
    assert deployment.ready == 2
    assert all(r.state == ReplicaState.READY for r in deployment.replicas)
    assert all(url.startswith("http://10.244.0.") for url in deployment.base_urls)
    assert everything(fake) == {
        "deployments": 1, "services": 1, "pods": 2, "horizontalpodautoscalers": 1,
        "scaledobjects": 0, "inferenceservices": 0,
    }  # fmt: skip
    pods = fake.stored("pods")
    assert all(p["status"]["phase"] == "Running" for p in pods)
    assert all(p["metadata"]["labels"][MANAGED] == "atrium" for p in pods)
    watches = requests(fake, "GET", "watch=true")
    assert watches, "the deployer watches the Deployment"
    assert "fieldSelector=metadata.name%3Dsmol" in watches[0][1]
    assert deployment.allocation.pool == "cpu"


async def test_status_reads_the_cluster(fake: FakeKubernetes, deployer: KubernetesDeployer) -> None:
    await deployer.deploy(spec())
    fake.stored("pods")[0]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = await deployer.status("smol")
    assert status.spec == spec()
    assert sorted(r.state for r in status.replicas) == [ReplicaState.DRAINING, ReplicaState.READY]
    with pytest.raises(NotFoundError, match="there is no deployment 'nope'"):
        await deployer.status("nope")


async def test_scale_up_and_down(fake: FakeKubernetes, deployer: KubernetesDeployer) -> None:
    await deployer.deploy(spec(initial=1))
    up = await deployer.scale("smol", 3)
    assert (up.desired, up.ready, len(up.replicas)) == (3, 3, 3)
    assert fake.stored("horizontalpodautoscalers")[0]["spec"]["minReplicas"] == 3
    scale_patches = requests(fake, "PATCH", "/deployments/smol/scale")
    assert scale_patches[-1][2] == "application/strategic-merge-patch+json"
    down = await deployer.scale("smol", 1)
    assert (down.desired, len(down.replicas)) == (1, 1)
    assert len(fake.stored("pods")) == 1
    with pytest.raises(InvalidRequestError, match="runs between 1 and 3 replicas, not 4"):
        await deployer.scale("smol", 4)
    with pytest.raises(NotFoundError):
        await deployer.scale("nope", 1)


async def test_list_shows_only_atrium_deployments(
    fake: FakeKubernetes, deployer: KubernetesDeployer
) -> None:
    await deployer.deploy(spec("smol", initial=1))
    await deployer.deploy(spec("qwen_2.5", initial=1))
    foreign = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
    }  # fmt: skip
    fake._create(fake_kind("deployments"), "default", foreign)
    listed = {d.name: d for d in await deployer.list()}
    assert set(listed) == {"smol", "qwen_2.5"}
    assert all(len(d.replicas) == 1 for d in listed.values())


def fake_kind(plural: str) -> Any:
    from tests.integration.runtime.fake_kubernetes import KINDS

    return next(k for k in KINDS.values() if k.plural == plural)


async def test_stop_deletes_everything(fake: FakeKubernetes, deployer: KubernetesDeployer) -> None:
    await deployer.deploy(spec())
    await deployer.stop("smol")
    assert set(everything(fake).values()) == {0}
    deletes = requests(fake, "DELETE", "/smol")
    assert len(deletes) == 3  # HPA, Service, Deployment
    assert all("propagationPolicy=Foreground" in d[1] for d in deletes)
    with pytest.raises(NotFoundError):
        await deployer.stop("smol")
    assert await deployer.list() == []


# -- refusals and failures ------------------------------------------------------------------------


async def test_a_second_deploy_of_the_same_name_is_a_conflict(
    fake: FakeKubernetes, deployer: KubernetesDeployer
) -> None:
    await deployer.deploy(spec())
    with pytest.raises(ConflictError, match=r"the deployment 'smol' exists .*already exists"):
        await deployer.deploy(spec(initial=1))
    assert fake.stored("deployments")[0]["spec"]["replicas"] == 2
    assert len(fake.stored("pods")) == 2


async def test_a_deployment_that_never_becomes_ready_fails_and_leaves_nothing(
    fake: FakeKubernetes,
) -> None:
    fake.hold_unready("smol")
    deployer = make_deployer(fake, ready_timeout_seconds=1.5)
    try:
        with pytest.raises(DeploymentFailedError) as caught:
            await deployer.deploy(spec())
    finally:
        await deployer.close()
    message = caught.value.message
    assert "'smol': 0 of 2 replicas ready after 1.5s" in message
    assert "ImagePullBackOff" in message
    assert caught.value.status == 502
    assert set(everything(fake).values()) == {0}


async def test_a_pool_that_cannot_hold_it_is_refused_before_any_call(
    fake: FakeKubernetes,
) -> None:
    deployer = make_deployer(fake, pools=[POOLS[0]])
    try:
        with pytest.raises(InvalidRequestError, match="vLLM needs a GPU pool"):
            await deployer.deploy(vllm_spec())
    finally:
        await deployer.close()
    assert fake.requests == []


async def test_leftovers_of_an_earlier_attempt_are_patched(
    fake: FakeKubernetes, deployer: KubernetesDeployer
) -> None:
    leftover = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "smol", "labels": {MANAGED: "atrium"}},
        "spec": {"selector": {"atrium.ai/deployment": "smol"}, "ports": [{"port": 9999}]},
    }  # fmt: skip
    fake._create(fake_kind("services"), "default", leftover)
    await deployer.deploy(spec())
    (service,) = fake.stored("services")
    assert service["spec"]["ports"][0]["port"] == 80
    assert requests(fake, "PATCH", "/services/smol")[0][2] == (
        "application/strategic-merge-patch+json"
    )


async def test_api_errors_become_atrium_errors(fake: FakeKubernetes) -> None:
    missing = make_deployer(fake, namespace="nowhere")
    try:
        with pytest.raises(NotFoundError, match='namespaces "nowhere" not found'):
            await missing.deploy(spec())
    finally:
        await missing.close()

    denial = "admission policy 'no-public-services' denied the request: services need an owner"
    fake.deny("services", 422, "Invalid", denial)
    deployer = make_deployer(fake)
    try:
        with pytest.raises(InvalidRequestError, match="no-public-services"):
            await deployer.deploy(spec())
        assert set(everything(fake).values()) == {0}, "the Deployment created first is removed"
        fake.deny("deployments", 403, "Forbidden", 'deployments.apps is forbidden: User "x"')
        with pytest.raises(DeploymentFailedError, match="Kubernetes API error 403: deployments"):
            await deployer.deploy(spec())
    finally:
        await deployer.close()


async def test_an_unreachable_api_server_is_a_clear_failure() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.retries = 0
    options = KubernetesOptions.model_validate({"pools": POOLS})
    deployer = KubernetesDeployer(options, configuration=configuration)
    try:
        with pytest.raises(DeploymentFailedError, match="cannot reach the Kubernetes API"):
            await deployer.status("smol")
    finally:
        await deployer.close()


# -- KEDA and KServe ---------------------------------------------------------------------


async def test_keda_scaled_object_is_applied_and_scaled(fake: FakeKubernetes) -> None:
    deployer = make_deployer(fake, autoscaler="keda")
    try:
        await deployer.deploy(spec(initial=1))
        (scaled,) = fake.stored("scaledobjects")
        assert scaled["spec"]["triggers"][0]["type"] == "prometheus"
        assert fake.stored("horizontalpodautoscalers") == []
        await deployer.scale("smol", 2)
        assert fake.stored("scaledobjects")[0]["spec"]["minReplicaCount"] == 2
        assert requests(fake, "PATCH", "/scaledobjects/smol")[0][2] == (
            "application/merge-patch+json"
        )
        await deployer.stop("smol")
    finally:
        await deployer.close()
    assert set(everything(fake).values()) == {0}


async def test_kserve_inference_service(fake: FakeKubernetes) -> None:
    deployer = make_deployer(fake, kserve=True)
    try:
        deployment = await deployer.deploy(vllm_spec())
        assert deployment.ready == 1
        assert deployment.allocation.gpus == 1
        (isvc,) = fake.stored("inferenceservices")
        assert isvc["spec"]["predictor"]["containers"][0]["name"] == "kserve-container"
        assert fake.stored("deployments") == []
        scaled = await deployer.scale("llama-8b", 2)
        assert (scaled.desired, scaled.ready) == (2, 2)
        assert [d.name for d in await deployer.list()] == ["llama-8b"]
        await deployer.stop("llama-8b")
    finally:
        await deployer.close()
    assert set(everything(fake).values()) == {0}
