"""Kubernetes manifests for a deployment, rendered as plain dicts (pure functions, no I/O).

:func:`render` turns a :class:`DeploymentSpec`, its :class:`Allocation` and the
deployer's options into the objects the Kubernetes deployer applies, the primary
object first:

- a ``Deployment`` (llama.cpp's server for GGUF, vLLM for safetensors on GPUs,
  ``nvidia.com/gpu`` limits, node selectors and tolerations from the options and
  the pool), a ``Service`` in front of it, and a ``HorizontalPodAutoscaler``
  (``autoscaling/v2``) or a KEDA ``ScaledObject`` scaling on queue depth;
- or, where KServe is installed, one ``InferenceService`` (``serving.kserve.io/v1beta1``)
  whose custom predictor container is the same server.

The weights come from the model store (``<root>/models/<name>/<version>/``): a
``pvc://claim/sub/path`` root is mounted read-only; any other URL (``gs://``,
``s3://``, ``https://``) is downloaded by KServe's storage initializer into an
``emptyDir`` before the server starts (KServe itself does the same from ``STORAGE_URI``).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from atrium.core.errors import InvalidRequestError
from atrium.runtime.deployments import Allocation, DeploymentSpec, PoolSpec

if TYPE_CHECKING:
    from atrium.runtime.deployers.kubernetes import KubernetesOptions

Manifest = dict[str, Any]

MANAGED_BY = "atrium"
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_DEPLOYMENT = "atrium.ai/deployment"
ANNOTATION_NAME = "atrium.ai/name"
ANNOTATION_SPEC = "atrium.ai/spec"
ANNOTATION_ALLOCATION = "atrium.ai/allocation"
KSERVE_LABEL = "serving.kserve.io/inferenceservice"
MODEL_DIR = "/mnt/models"
GPU_RESOURCE = "nvidia.com/gpu"
CONTAINER_NAME = "server"
_VOLUME = "model-store"
_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")
_DNS_LABEL_MAX = 63

#: The gateway's own gauge of outstanding requests per model: the queue depth KEDA scales on.
QUEUE_METRIC = "atrium_requests_in_flight"
RATE_METRIC = "atrium_requests_total"


class Toleration(BaseModel):
    """A pod toleration (``core/v1`` Toleration), so pods can land on tainted nodes."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, ge=0)

    def manifest(self) -> Manifest:
        """The toleration as the API spells it (camelCase, unset fields left out)."""
        fields = {
            "key": self.key,
            "operator": self.operator,
            "value": self.value,
            "effect": self.effect,
            "tolerationSeconds": self.toleration_seconds,
        }
        return {k: v for k, v in fields.items() if v is not None}


class KubernetesPool(PoolSpec):
    """A node pool: its capacity for allocation, and how pods are steered onto it."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


# -- names and labels -----------------------------------------------------------------


def k8s_name(name: str) -> str:
    """A DNS-1035 label for ``name``: lowercase, ``[a-z0-9-]``, a letter first, 63 at most.

    A name that had to change gets a short hash of the original, so two names that
    sanitise alike (``a.b`` and ``a_b``) still get different objects.
    """
    clean = _DNS_UNSAFE.sub("-", name.lower()).strip("-")
    if clean and not clean[0].isalpha():
        clean = f"m-{clean}"
    if clean == name and len(clean) <= _DNS_LABEL_MAX:
        return clean
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    head = clean[: _DNS_LABEL_MAX - len(digest) - 1].rstrip("-") or "m"
    return f"{head}-{digest}"


def labels(spec: DeploymentSpec) -> dict[str, str]:
    """The labels every object of the deployment carries."""
    name = k8s_name(spec.name)
    return {LABEL_NAME: name, LABEL_MANAGED_BY: MANAGED_BY, LABEL_DEPLOYMENT: name}


def selector(name: str) -> str:
    """The label selector of a deployment's pods (by its public name)."""
    return f"{LABEL_DEPLOYMENT}={k8s_name(name)}"


def managed_selector() -> str:
    """The label selector of everything Atrium manages."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def _metadata(spec: DeploymentSpec, options: KubernetesOptions, **extra: str) -> Manifest:
    return {
        "name": k8s_name(spec.name),
        "namespace": options.namespace,
        "labels": labels(spec),
        "annotations": {ANNOTATION_NAME: spec.name, **extra},
    }


def _record(spec: DeploymentSpec, allocation: Allocation) -> dict[str, str]:
    """Annotations from which the deployer reads the spec and placement back."""
    return {
        ANNOTATION_SPEC: spec.model_dump_json(exclude_none=True),
        ANNOTATION_ALLOCATION: allocation.model_dump_json(),
    }


def read_record(annotations: dict[str, str] | None) -> tuple[DeploymentSpec, Allocation] | None:
    """The spec and allocation an object was rendered from (None if it carries none)."""
    annotations = annotations or {}
    if ANNOTATION_SPEC not in annotations or ANNOTATION_ALLOCATION not in annotations:
        return None
    spec = DeploymentSpec.model_validate(json.loads(annotations[ANNOTATION_SPEC]))
    allocation = Allocation.model_validate(json.loads(annotations[ANNOTATION_ALLOCATION]))
    return spec, allocation


# -- the model store --------------------------------------------------------------------


def model_uri(spec: DeploymentSpec, options: KubernetesOptions) -> str:
    """The version's folder in the model store: ``<root>/models/<name>/<version>``."""
    root = options.model_store_uri.rstrip("/")
    return f"{root}/models/{spec.model.name}/{spec.model.version}"


def model_file(spec: DeploymentSpec) -> str:
    """Where the server finds the weights inside the container."""
    if spec.model.format == "safetensors":
        return MODEL_DIR
    if spec.model.path is None:
        msg = "model.path must name the GGUF file (its file name in the model store)"
        raise InvalidRequestError(msg, param="model.path")
    return f"{MODEL_DIR}/{spec.model.path.name}"


def _pvc(uri: str) -> tuple[str, str] | None:
    """``pvc://claim/sub/path`` as (claim, sub/path); None for any other URL."""
    if not uri.startswith("pvc://"):
        return None
    claim, _, sub = uri.removeprefix("pvc://").partition("/")
    return claim, sub


# -- containers -------------------------------------------------------------------------


def server_args(spec: DeploymentSpec, allocation: Allocation, port: int) -> list[str]:
    """The server's command-line arguments (llama.cpp's ``llama-server`` or vLLM's)."""
    if spec.runtime == "vllm":
        return [
            "--model", model_file(spec), "--served-model-name", spec.name,
            "--host", "0.0.0.0", "--port", str(port),  # noqa: S104 - a pod listens on its IP
            "--max-model-len", str(spec.context_length),
            "--tensor-parallel-size", str(max(1, allocation.gpus)),
        ]  # fmt: skip
    args = [
        "--model", model_file(spec), "--alias", spec.name,
        "--host", "0.0.0.0", "--port", str(port),  # noqa: S104 - a pod listens on its IP
        "--ctx-size", str(spec.context_length),
        "--threads", str(max(1, math.floor(allocation.cpus))), "--metrics",
    ]  # fmt: skip
    if allocation.gpus:
        args += ["--n-gpu-layers", "999"]
    return args


def _image(spec: DeploymentSpec, allocation: Allocation, options: KubernetesOptions) -> str:
    if spec.runtime == "vllm":
        return options.images.vllm
    return options.images.llamacpp_gpu if allocation.gpus else options.images.llamacpp


def resources(allocation: Allocation) -> Manifest:
    """Requests and limits of one replica (GPUs as ``nvidia.com/gpu`` limits)."""
    memory = f"{math.ceil(allocation.memory_gib * 1024)}Mi"
    requests: dict[str, str] = {"cpu": f"{allocation.cpus:g}", "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if allocation.gpus:
        limits[GPU_RESOURCE] = str(allocation.gpus)
    return {"requests": requests, "limits": limits}


def _probe(path: str, *, period: int, failures: int, delay: int = 0) -> Manifest:
    probe: Manifest = {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def server_container(
    spec: DeploymentSpec, allocation: Allocation, options: KubernetesOptions
) -> Manifest:
    """The model server: image, arguments, port, resources and probes.

    Both servers answer ``/health`` with 200 once the model is loaded (503 before);
    the startup probe gives loading up to ``options.startup_seconds``.
    """
    port = options.container_port
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": _image(spec, allocation, options),
        "imagePullPolicy": options.images.pull_policy,
        "args": server_args(spec, allocation, port),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": resources(allocation),
        "startupProbe": _probe("/health", period=5, failures=max(1, options.startup_seconds // 5)),
        "readinessProbe": _probe("/health", period=5, failures=3),
        "livenessProbe": _probe("/health", period=10, failures=6),
    }
    if spec.runtime == "vllm":
        container["command"] = ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    return container


# -- pods -------------------------------------------------------------------------------


def _pool(allocation: Allocation, options: KubernetesOptions) -> KubernetesPool | None:
    return next((p for p in options.pools if p.name == allocation.pool), None)


def node_selector(allocation: Allocation, options: KubernetesOptions) -> dict[str, str]:
    """The options' node selector, the pool's, and the GPU type's node label."""
    pool = _pool(allocation, options)
    chosen = {**options.node_selector, **(pool.node_selector if pool else {})}
    if allocation.gpus and allocation.gpu_type:
        chosen.setdefault(options.gpu_node_label, allocation.gpu_type)
    return chosen


def tolerations(allocation: Allocation, options: KubernetesOptions) -> list[Manifest]:
    """The options' and the pool's tolerations, and the usual GPU-node taint's when on GPUs."""
    pool = _pool(allocation, options)
    chosen = [t.manifest() for t in (*options.tolerations, *(pool.tolerations if pool else ()))]
    gpu = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    if allocation.gpus and gpu not in chosen:
        chosen.append(gpu)
    return chosen


def _model_volume(spec: DeploymentSpec, options: KubernetesOptions) -> tuple[Manifest, Manifest]:
    """The weights' volume, and how the server mounts it (read-only at ``MODEL_DIR``)."""
    uri = model_uri(spec, options)
    mount: Manifest = {"name": _VOLUME, "mountPath": MODEL_DIR, "readOnly": True}
    claim = _pvc(uri)
    if claim is None:
        return {"name": _VOLUME, "emptyDir": {}}, mount
    volume = {"name": _VOLUME, "persistentVolumeClaim": {"claimName": claim[0], "readOnly": True}}
    return volume, {**mount, "subPath": claim[1]}


def _storage_initializer(spec: DeploymentSpec, options: KubernetesOptions) -> Manifest:
    """KServe's storage initializer: ``args: [source URI, destination folder]``."""
    container: Manifest = {
        "name": "storage-initializer",
        "image": options.images.storage_initializer,
        "imagePullPolicy": options.images.pull_policy,
        "args": [model_uri(spec, options), MODEL_DIR],
        "volumeMounts": [{"name": _VOLUME, "mountPath": MODEL_DIR}],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
    }
    if options.model_store_secret:
        container["envFrom"] = [{"secretRef": {"name": options.model_store_secret}}]
    return container


def pod_spec(spec: DeploymentSpec, allocation: Allocation, options: KubernetesOptions) -> Manifest:
    """The replica pod: the server, its weights, placement and graceful termination."""
    container = server_container(spec, allocation, options)
    volume, mount = _model_volume(spec, options)
    container["volumeMounts"] = [mount]
    volumes = [volume]
    if spec.runtime == "vllm":  # tensor parallelism shares memory through /dev/shm
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})  # noqa: S108
    pod: Manifest = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": options.termination_grace_seconds,
    }
    if "emptyDir" in volume:
        pod["initContainers"] = [_storage_initializer(spec, options)]
    if selected := node_selector(allocation, options):
        pod["nodeSelector"] = selected
    if tolerated := tolerations(allocation, options):
        pod["tolerations"] = tolerated
    return pod


# -- objects ------------------------------------------------------------------------------


def deployment_manifest(
    spec: DeploymentSpec, allocation: Allocation, options: KubernetesOptions
) -> Manifest:
    """The ``apps/v1`` Deployment running the replicas."""
    pod_labels = labels(spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, options, **_record(spec, allocation)),
        "spec": {
            "replicas": spec.replicas.start,
            "selector": {"matchLabels": {LABEL_DEPLOYMENT: pod_labels[LABEL_DEPLOYMENT]}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": pod_spec(spec, allocation, options),
            },
        },
    }


def service_manifest(spec: DeploymentSpec, options: KubernetesOptions) -> Manifest:
    """The ``v1`` Service the gateway reaches the replicas through."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, options),
        "spec": {
            "type": options.service_type,
            "selector": {LABEL_DEPLOYMENT: k8s_name(spec.name)},
            "ports": [
                {
                    "name": "http",
                    "port": options.service_port,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }


def hpa_manifest(spec: DeploymentSpec, options: KubernetesOptions) -> Manifest:
    """An ``autoscaling/v2`` HPA on the gateway's per-model metric (an External metric)."""
    metric = QUEUE_METRIC if spec.autoscaling.metric == "in_flight" else RATE_METRIC
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, options),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": k8s_name(spec.name),
            },
            "minReplicas": max(1, spec.replicas.min),  # 0 needs the HPAScaleToZero gate
            "maxReplicas": spec.replicas.max,
            "metrics": [
                {
                    "type": "External",
                    "external": {
                        "metric": {
                            "name": metric,
                            "selector": {"matchLabels": {"model": spec.name}},
                        },
                        "target": {
                            "type": "AverageValue",
                            "averageValue": f"{spec.autoscaling.target:g}",
                        },
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": int(spec.autoscaling.scale_down_delay_seconds)
                }
            },
        },
    }


def queue_query(spec: DeploymentSpec) -> str:
    """The PromQL KEDA evaluates: the gateway's outstanding requests (or rate) for the model."""
    model = json.dumps(spec.name)  # a PromQL string literal
    if spec.autoscaling.metric == "in_flight":
        return f"sum({QUEUE_METRIC}{{model={model}}})"
    return f"sum(rate({RATE_METRIC}{{model={model}}}[1m]))"


def scaled_object_manifest(spec: DeploymentSpec, options: KubernetesOptions) -> Manifest:
    """A KEDA ``ScaledObject`` (``keda.sh/v1alpha1``) with a Prometheus trigger on queue depth."""
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(spec, options),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": k8s_name(spec.name),
            },
            "minReplicaCount": spec.replicas.min,  # KEDA scales to zero itself
            "maxReplicaCount": spec.replicas.max,
            "pollingInterval": 15,
            "cooldownPeriod": int(spec.autoscaling.scale_down_delay_seconds),
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": options.prometheus_url,
                        "query": queue_query(spec),
                        "threshold": f"{spec.autoscaling.target:g}",
                    },
                }
            ],
        },
    }


def inference_service_manifest(
    spec: DeploymentSpec, allocation: Allocation, options: KubernetesOptions
) -> Manifest:
    """A KServe ``InferenceService`` with the server as its custom predictor container.

    KServe downloads ``STORAGE_URI`` into ``/mnt/models`` itself (PVC or object store).
    """
    container = server_container(spec, allocation, options)
    container["name"] = "kserve-container"  # the name KServe expects of the serving container
    container["env"] = [{"name": "STORAGE_URI", "value": model_uri(spec, options)}]
    predictor: Manifest = {
        "minReplicas": spec.replicas.min,
        "maxReplicas": spec.replicas.max,
        "scaleMetric": "concurrency" if spec.autoscaling.metric == "in_flight" else "rps",
        "scaleTarget": max(1, math.ceil(spec.autoscaling.target)),
        "labels": labels(spec),
        "containers": [container],
    }
    if selected := node_selector(allocation, options):
        predictor["nodeSelector"] = selected
    if tolerated := tolerations(allocation, options):
        predictor["tolerations"] = tolerated
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": _metadata(spec, options, **_record(spec, allocation)),
        "spec": {"predictor": predictor},
    }


def render(
    spec: DeploymentSpec, allocation: Allocation, options: KubernetesOptions
) -> list[Manifest]:
    """Every object of the deployment, the primary one (Deployment or InferenceService) first."""
    if spec.runtime == "remote":
        msg = "a remote provider runs no replicas: add it as an openai_compat model"
        raise InvalidRequestError(msg, param="runtime")
    if options.kserve:
        return [inference_service_manifest(spec, allocation, options)]
    scaler = (
        scaled_object_manifest(spec, options)
        if options.autoscaler == "keda"
        else hpa_manifest(spec, options)
    )
    return [deployment_manifest(spec, allocation, options), service_manifest(spec, options), scaler]
