"""Kubernetes manifests rendered for deployments, checked against the Kubernetes schemas.

Built-in kinds (Deployment, Service, HorizontalPodAutoscaler) are validated with
``kubernetes-validate``'s strict schemas for Kubernetes 1.37 (unknown fields are
errors). KEDA's ScaledObject and KServe's InferenceService are custom resources
whose CRDs it does not ship: those are checked against the fields their CRDs
require (as the KEDA and KServe references document them), and the pod-level
parts of the InferenceService predictor (containers, node selector, tolerations)
are validated as a core ``v1`` Pod with the strict schema.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from atrium.core.errors import InvalidRequestError
from atrium.runtime.deployers.kubernetes import KubernetesOptions
from atrium.runtime.deployers.manifests import (
    KubernetesPool,
    k8s_name,
    read_record,
    render,
)
from atrium.runtime.deployments import DeploymentSpec, allocate

K8S_VERSION = "1.37"
CPU_POOL = {
    "name": "cpu",
    "kind": "cpu",
    "cpus": 16,
    "memory_gib": 64,
    "node_selector": {"pool": "cpu"},
}
GPU_POOL = {
    "name": "l4",
    "kind": "gpu",
    "cpus": 32,
    "memory_gib": 128,
    "gpus": 4,
    "gpu_type": "nvidia-l4",
    "gpu_memory_gib": 24,
    "node_selector": {"cloud.google.com/gke-nodepool": "l4"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}
    ],
}


def options(**fields: Any) -> KubernetesOptions:
    base: dict[str, Any] = {
        "namespace": "models",
        "pools": [CPU_POOL, GPU_POOL],
        "model_store_uri": "gs://atrium-models/store",
        "model_store_secret": "gcs-credentials",
        "node_selector": {"kubernetes.io/os": "linux"},
    }
    return KubernetesOptions.model_validate({**base, **fields})


def gguf_spec(name: str = "smol", **fields: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "name": name,
            "model": {
                "name": "smollm2-135m",
                "version": "3",
                "path": "smollm2-135m-q4_1.gguf",
                "size_bytes": 100 * 1024**2,
            },
            "runtime": "llamacpp",
            "replicas": {"min": 1, "max": 4, "initial": 2},
            "resources": {"cpus": 2},
            "context_length": 1024,
            **fields,
        }
    )


def vllm_spec(**fields: Any) -> DeploymentSpec:
    return DeploymentSpec.model_validate(
        {
            "name": "llama-3.1-8b",
            "model": {"name": "llama-3.1-8b", "version": "1", "format": "safetensors",
                      "parameters": 8_000_000_000, "quantization": "bf16"},
            "runtime": "vllm",
            "replicas": {"min": 1, "max": 2},
            "resources": {"cpus": 4, "gpu_type": "nvidia-l4"},
            "autoscaling": {"target": 8},
            "context_length": 8192,
            **fields,
        }
    )  # fmt: skip


def rendered(spec: DeploymentSpec, opts: KubernetesOptions) -> dict[str, dict[str, Any]]:
    allocation = allocate(spec, [*opts.pools])
    return {m["kind"]: m for m in render(spec, allocation, opts)}


def validate(manifest: dict[str, Any]) -> None:
    """Strict schema validation (raises kubernetes_validate.ValidationError)."""
    assert kubernetes_validate.validate(manifest, K8S_VERSION, strict=True) == K8S_VERSION


def pod(manifest: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = manifest["spec"]["template"]["spec"]
    return spec


# -- built-in kinds ------------------------------------------------------------------------


def test_llamacpp_cpu_deployment_service_and_hpa_validate() -> None:
    objects = rendered(gguf_spec(), options())
    assert list(objects) == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    for manifest in objects.values():
        validate(manifest)
    deployment = objects["Deployment"]
    container = pod(deployment)["containers"][0]
    assert container["image"] == "ghcr.io/ggml-org/llama.cpp:server"
    assert container["args"][:2] == ["--model", "/mnt/models/smollm2-135m-q4_1.gguf"]
    assert "--n-gpu-layers" not in container["args"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert deployment["spec"]["replicas"] == 2
    assert pod(deployment)["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "cpu"}
    assert "tolerations" not in pod(deployment)
    labels = deployment["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "smol",
        "app.kubernetes.io/managed-by": "atrium",
        "atrium.ai/deployment": "smol",
    }
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels(deployment).items()
    assert objects["Service"]["spec"]["selector"].items() <= pod_labels(deployment).items()


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = deployment["spec"]["template"]["metadata"]["labels"]
    return labels


def test_model_is_pulled_from_the_store_by_the_storage_initializer() -> None:
    deployment = rendered(gguf_spec(), options())["Deployment"]
    (init,) = pod(deployment)["initContainers"]
    assert init["args"] == ["gs://atrium-models/store/models/smollm2-135m/3", "/mnt/models"]
    assert init["envFrom"] == [{"secretRef": {"name": "gcs-credentials"}}]
    assert pod(deployment)["volumes"] == [{"name": "model-store", "emptyDir": {}}]


def test_model_on_a_pvc_is_mounted_read_only() -> None:
    opts = options(model_store_uri="pvc://atrium-models/root")
    deployment = rendered(gguf_spec(), opts)["Deployment"]
    validate(deployment)
    assert "initContainers" not in pod(deployment)
    (volume,) = pod(deployment)["volumes"]
    assert volume["persistentVolumeClaim"] == {"claimName": "atrium-models", "readOnly": True}
    mount = pod(deployment)["containers"][0]["volumeMounts"][0]
    assert mount["subPath"] == "root/models/smollm2-135m/3"
    assert mount["readOnly"] is True


def test_vllm_on_gpus_with_node_selector_and_tolerations_validates() -> None:
    objects = rendered(vllm_spec(), options())
    for manifest in objects.values():
        validate(manifest)
    spec = pod(objects["Deployment"])
    container = spec["containers"][0]
    assert container["image"].startswith("vllm/vllm-openai:")
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    # 8B parameters in bf16 need about 20 GiB: one 24 GiB L4.
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "1"
    assert container["args"][container["args"].index("--max-model-len") + 1] == "8192"
    assert spec["nodeSelector"] == {
        "kubernetes.io/os": "linux",
        "cloud.google.com/gke-nodepool": "l4",
        "nvidia.com/gpu.product": "nvidia-l4",
    }
    assert {
        "key": "dedicated",
        "operator": "Equal",
        "value": "llm",
        "effect": "NoSchedule",
    } in spec["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in spec["volumes"]


def test_larger_model_spreads_over_a_power_of_two_of_gpus() -> None:
    spec = vllm_spec(model={"name": "big", "format": "safetensors", "parameters": 30_000_000_000})
    container = pod(rendered(spec, options())["Deployment"])["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert container["args"][container["args"].index("--tensor-parallel-size") + 1] == "4"


def test_hpa_scales_between_the_spec_bounds_on_the_gateway_metric() -> None:
    hpa = rendered(vllm_spec(), options())["HorizontalPodAutoscaler"]
    validate(hpa)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 2)
    name = k8s_name("llama-3.1-8b")
    assert name.startswith("llama-3-1-8b-")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["external"]["target"] == {"type": "AverageValue", "averageValue": "8"}
    assert metric["external"]["metric"]["selector"] == {"matchLabels": {"model": "llama-3.1-8b"}}


def test_a_broken_manifest_fails_validation() -> None:
    """The validator is strict: the checks above can fail."""
    deployment = rendered(gguf_spec(), options())["Deployment"]
    pod(deployment)["containers"][0]["ports"][0]["containerPort"] = "http"  # not an integer
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    service = rendered(gguf_spec(), options())["Service"]
    service["spec"]["portz"] = service["spec"].pop("ports")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service)


# -- names and records -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["smol", "llama-3.1-8b", "qwen_2.5", "7b-chat", "a" * 63, "x.y-"])
def test_names_are_dns_1035_labels(name: str) -> None:
    import re

    sanitised = k8s_name(name)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", sanitised)
    assert len(sanitised) <= 63


def test_names_that_sanitise_alike_stay_distinct() -> None:
    assert k8s_name("qwen.2") != k8s_name("qwen_2")
    assert k8s_name("smol") == "smol"


def test_the_spec_and_allocation_are_recorded_on_the_primary_object() -> None:
    spec = gguf_spec("qwen_2.5")
    opts = options()
    deployment = rendered(spec, opts)["Deployment"]
    record = read_record(deployment["metadata"]["annotations"])
    assert record is not None
    assert record[0] == spec
    assert record[1] == allocate(spec, [*opts.pools])


# -- custom resources ----------------------------------------------------------------------------


def test_keda_scaled_object_on_queue_depth() -> None:
    """KEDA's CRD requires spec.scaleTargetRef.name and spec.triggers (each a type and
    metadata); its Prometheus scaler requires serverAddress, query and threshold."""
    objects = rendered(gguf_spec(), options(autoscaler="keda"))
    assert list(objects) == ["Deployment", "Service", "ScaledObject"]
    validate(objects["Deployment"])
    scaled = objects["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 4)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert set(trigger["metadata"]) >= {"serverAddress", "query", "threshold"}
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # a map of strings
    assert trigger["metadata"]["query"] == 'sum(atrium_requests_in_flight{model="smol"})'
    assert trigger["metadata"]["threshold"] == "4"


def test_kserve_inference_service() -> None:
    """KServe's CRD requires spec.predictor; a custom predictor's containers are core
    Containers, so the pod-level part is validated as a v1 Pod."""
    objects = rendered(vllm_spec(), options(kserve=True))
    assert list(objects) == ["InferenceService"]
    isvc = objects["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 2)
    assert isinstance(predictor["scaleTarget"], int)
    assert predictor["scaleMetric"] in {"cpu", "memory", "concurrency", "rps"}
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert {"name": "STORAGE_URI", "value": "gs://atrium-models/store/models/llama-3.1-8b/1"} in (
        container["env"]
    )
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod_part = {k: predictor[k] for k in ("containers", "nodeSelector", "tolerations")}
    validate(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": isvc["metadata"]["name"]},
         "spec": pod_part}
    )  # fmt: skip
    assert read_record(isvc["metadata"]["annotations"]) is not None


# -- refusals ----------------------------------------------------------------------------


def test_a_spec_no_pool_can_hold_is_refused_with_the_reason() -> None:
    spec = vllm_spec(model={"name": "huge", "format": "safetensors", "parameters": 400_000_000_000})
    with pytest.raises(InvalidRequestError) as caught:
        allocate(spec, [*options().pools])
    message = caught.value.message
    assert "no pool can hold 'llama-3.1-8b'" in message
    assert "'cpu' (cpu, 16 CPUs, 64 GiB): vLLM needs a GPU pool" in message
    assert "'l4'" in message
    assert "needs 64 GPUs" in message


def test_vllm_on_a_cpu_only_cluster_is_refused() -> None:
    opts = options(pools=[CPU_POOL])
    with pytest.raises(InvalidRequestError, match="vLLM needs a GPU pool"):
        allocate(vllm_spec(), [*opts.pools])


def test_a_gguf_without_a_file_name_is_refused() -> None:
    spec = gguf_spec(model={"name": "smol", "parameters": 135_000_000})
    with pytest.raises(InvalidRequestError, match=r"model\.path must name the GGUF file"):
        render(spec, allocate(spec, [*options().pools]), options())


def test_pools_carry_their_placement() -> None:
    pool = KubernetesPool.model_validate(GPU_POOL)
    assert [t.manifest() for t in pool.tolerations] == GPU_POOL["tolerations"]
