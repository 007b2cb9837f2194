"""Deployments on Kubernetes, applied with the official ``kubernetes`` client.

``deploy`` allocates a pool, renders the manifests (:mod:`.manifests`), creates each
object (an object left over from an earlier attempt is patched instead), then
watches the Deployment (or the KServe InferenceService) until the initial replicas
are ready. A deployment that does not get there within the timeout is deleted
again and reported with what its pods are waiting on. The deployer keeps no state
of its own: the cluster is the record, read back from each primary object's
annotations (the spec and the allocation it was rendered from).

The client is synchronous; every call runs in a worker thread
(:func:`asyncio.to_thread`) through one ``ApiClient`` per deployer. API failures
become typed Atrium errors carrying the API's own message: 404 ``NotFoundError``,
409 ``ConflictError``, 400/422 ``InvalidRequestError``, anything else
``DeploymentFailedError``.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field, SecretStr

from atrium.core.errors import AtriumError, ConflictError, InvalidRequestError, NotFoundError
from atrium.runtime.deployers.base import (
    Deployment,
    DeploymentFailedError,
    ReplicaState,
    ReplicaStatus,
)
from atrium.runtime.deployers.manifests import (
    LABEL_DEPLOYMENT,
    KubernetesPool,
    Manifest,
    Toleration,
    k8s_name,
    managed_selector,
    read_record,
    render,
    selector,
)
from atrium.runtime.deployments import Allocation, DeploymentSpec, PoolSpec, allocate

log = logging.getLogger("atrium.deployers.kubernetes")

T = TypeVar("T")
_FOREGROUND = "Foreground"
_POLL_SECONDS = 0.25
_WATCH: Any = watch.Watch  # untyped in the client


class KubernetesImages(BaseModel):
    """Container images of the model servers and of the model download."""

    llamacpp: str = "ghcr.io/ggml-org/llama.cpp:server"
    llamacpp_gpu: str = "ghcr.io/ggml-org/llama.cpp:server-cuda"
    vllm: str = "vllm/vllm-openai:v0.11.0"
    storage_initializer: str = "kserve/storage-initializer:v0.15.2"
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class KubernetesOptions(BaseModel):
    """Where the cluster is, and how deployments are rendered on it."""

    namespace: str = Field("default", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    api_server: str | None = Field(None, description="API server URL (else kubeconfig).")
    token: SecretStr | None = Field(None, description="Bearer token for api_server.")
    ca_cert: Path | None = Field(None, description="CA bundle for api_server.")
    verify_ssl: bool = True
    kubeconfig: Path | None = Field(None, description="Kubeconfig file (default ~/.kube/config).")
    context: str | None = Field(None, description="Kubeconfig context.")
    in_cluster: bool = Field(False, description="Use the pod's service account.")
    images: KubernetesImages = Field(default_factory=KubernetesImages)
    model_store_uri: str = Field(
        "pvc://atrium-models",
        description="The model store's root as the cluster reaches it: pvc://claim[/path], "
        "gs://, s3:// or https:// (downloaded by the storage initializer).",
    )
    model_store_secret: str | None = Field(
        None, description="Secret with the object store's credentials (as environment)."
    )
    autoscaler: Literal["hpa", "keda"] = "hpa"
    prometheus_url: str = Field(
        "http://prometheus-operated.monitoring.svc:9090",
        description="Prometheus KEDA queries for the gateway's queue depth.",
    )
    kserve: bool = Field(False, description="Render KServe InferenceServices instead.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    gpu_node_label: str = Field(
        "nvidia.com/gpu.product", description="Node label holding the GPU type."
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    service_port: int = Field(80, ge=1, le=65535)
    container_port: int = Field(8080, ge=1, le=65535)
    startup_seconds: int = Field(600, ge=5, description="Model load allowed by the probes.")
    termination_grace_seconds: int = Field(30, ge=0, description="Drain time of a pod.")
    ready_timeout_seconds: float = Field(900.0, gt=0, description="Replicas ready within.")
    delete_timeout_seconds: float = Field(120.0, gt=0, description="Objects gone within.")
    request_timeout_seconds: float = Field(30.0, gt=0, description="One API call.")
    pools: list[KubernetesPool] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Resource:
    """How the client reaches one kind: a typed API, or the custom objects API."""

    kind: str
    api: Literal["apps", "core", "autoscaling", "custom"]
    noun: str
    group: str = ""
    version: str = ""
    plural: str = ""

    @property
    def custom(self) -> bool:
        return self.api == "custom"


_RESOURCES: dict[str, _Resource] = {
    "Deployment": _Resource("Deployment", "apps", "deployment"),
    "Service": _Resource("Service", "core", "service"),
    "HorizontalPodAutoscaler": _Resource(
        "HorizontalPodAutoscaler", "autoscaling", "horizontal_pod_autoscaler"
    ),
    "ScaledObject": _Resource(
        "ScaledObject", "custom", "custom_object", "keda.sh", "v1alpha1", "scaledobjects"
    ),
    "InferenceService": _Resource(
        "InferenceService",
        "custom",
        "custom_object",
        "serving.kserve.io",
        "v1beta1",
        "inferenceservices",
    ),
}
#: Deleted in this order when a deployment stops (scalers before what they scale).
_DELETE_ORDER = ("ScaledObject", "HorizontalPodAutoscaler", "Service", "Deployment")


def api_configuration(options: KubernetesOptions) -> client.Configuration:
    """The client configuration: an explicit API server, in-cluster, or a kubeconfig."""
    configuration = client.Configuration()
    if options.api_server:
        configuration.host = options.api_server.rstrip("/")
        configuration.verify_ssl = options.verify_ssl
        if options.ca_cert:
            configuration.ssl_ca_cert = str(options.ca_cert)
        if options.token:
            configuration.api_key = {"BearerToken": options.token.get_secret_value()}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
    elif options.in_cluster:
        in_cluster: Any = config.load_incluster_config  # the loaders are untyped
        in_cluster(client_configuration=configuration)
    else:
        kubeconfig = str(options.kubeconfig) if options.kubeconfig else None
        load: Any = config.load_kube_config
        load(config_file=kubeconfig, context=options.context, client_configuration=configuration)
    return configuration


def api_error(exc: ApiException) -> AtriumError:
    """The Atrium error for an API failure, with the API's own message."""
    message = exc.reason or "error"
    try:
        body = json.loads(exc.body) if exc.body else {}
        message = body.get("message") or message
    except (TypeError, ValueError):
        pass
    status = exc.status or 0
    if status == 404:
        return NotFoundError(message)
    if status == 409:
        return ConflictError(message)
    if status in (400, 422):
        return InvalidRequestError(message)
    return DeploymentFailedError(f"Kubernetes API error {status}: {message}")


class _ObjectApi:
    """Kind-generic create, read, patch, delete and list over the typed and custom APIs."""

    def __init__(self, api_client: client.ApiClient, namespace: str, timeout: float) -> None:
        self.client = api_client
        self.namespace = namespace
        self._timeout = timeout
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self._apis: dict[str, Any] = {
            "apps": self.apps,
            "core": self.core,
            "autoscaling": client.AutoscalingV2Api(api_client),
            "custom": client.CustomObjectsApi(api_client),
        }

    def _method(self, resource: _Resource, verb: str) -> Callable[..., Any]:
        if resource.custom and verb == "read":
            verb = "get"
        method: Callable[..., Any] = getattr(
            self._apis[resource.api], f"{verb}_namespaced_{resource.noun}"
        )
        return method

    def _args(self, resource: _Resource, *name: str) -> tuple[str, ...]:
        if resource.custom:
            return (resource.group, resource.version, self.namespace, resource.plural, *name)
        return (*name, self.namespace)

    def dump(self, value: Any) -> Manifest:
        """A returned object as a plain dict (camelCase, as the API sent it)."""
        sanitize: Any = self.client.sanitize_for_serialization  # untyped in the client
        dumped: Manifest = sanitize(value)
        return dumped

    def create(self, manifest: Manifest) -> Manifest:
        """POST the object."""
        resource = _RESOURCES[manifest["kind"]]
        method = self._method(resource, "create")
        args = self._args(resource)
        return self.dump(method(*args, body=manifest, _request_timeout=self._timeout))

    def patch(self, kind: str, name: str, body: Manifest) -> Manifest:
        """PATCH: strategic merge for built-in kinds, JSON merge patch for custom ones."""
        resource = _RESOURCES[kind]
        extra = {"_content_type": "application/merge-patch+json"} if resource.custom else {}
        method = self._method(resource, "patch")
        result = method(
            *self._args(resource, name), body=body, _request_timeout=self._timeout, **extra
        )
        return self.dump(result)

    def read(self, kind: str, name: str) -> Manifest:
        """GET one object."""
        resource = _RESOURCES[kind]
        method = self._method(resource, "read")
        return self.dump(method(*self._args(resource, name), _request_timeout=self._timeout))

    def delete(self, kind: str, name: str) -> None:
        """DELETE with foreground propagation (dependents first); the reply is not needed."""
        resource = _RESOURCES[kind]
        method = self._method(resource, "delete")
        response = method(
            *self._args(resource, name),
            propagation_policy=_FOREGROUND,
            _preload_content=False,  # a Status or the object being deleted, either is fine
            _request_timeout=self._timeout,
        )
        response.release_conn()

    def items(self, kind: str, label_selector: str) -> list[Manifest]:
        """The items of a list by label selector."""
        resource = _RESOURCES[kind]
        method = self._method(resource, "list")
        result = self.dump(
            method(
                *self._args(resource),
                label_selector=label_selector,
                _request_timeout=self._timeout,
            )
        )
        items: list[Manifest] = result.get("items") or []
        return items

    def pods(self, label_selector: str) -> list[Manifest]:
        """Pods by label selector."""
        result = self.core.list_namespaced_pod(
            self.namespace, label_selector=label_selector, _request_timeout=self._timeout
        )
        items: list[Manifest] = self.dump(result).get("items") or []
        return items

    def scale(self, name: str, replicas: int) -> None:
        """Patch the Deployment's ``/scale`` subresource."""
        self.apps.patch_namespaced_deployment_scale(
            name,
            self.namespace,
            body={"spec": {"replicas": replicas}},
            _request_timeout=self._timeout,
        )

    def watch_until(
        self, kind: str, name: str, done: Callable[[Manifest], bool], timeout: float
    ) -> Manifest | None:
        """Watch one object (field selector on its name) until ``done`` or the timeout.

        Returns the object that satisfied ``done``, or None at the timeout. The
        server ends each watch at ``timeoutSeconds``; a new one starts while time is left.
        """
        resource = _RESOURCES[kind]
        method = self._method(resource, "list")
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            seconds = max(1, math.ceil(remaining))
            watcher: Any = _WATCH()
            stream = watcher.stream(
                method,
                *self._args(resource),
                field_selector=f"metadata.name={name}",
                timeout_seconds=seconds,
                deserialize=False,
                _request_timeout=(self._timeout, seconds + self._timeout),
            )
            try:
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED") and done(event["object"]):
                        watcher.stop()
                        found: Manifest = event["object"]
                        return found
            finally:
                stream.close()
        return None


# -- reading the cluster back ---------------------------------------------------------------


def _pod_state(pod: Manifest) -> ReplicaState:
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return ReplicaState.DRAINING
    phase = status.get("phase")
    if phase == "Failed":
        return ReplicaState.UNHEALTHY
    if phase == "Succeeded":
        return ReplicaState.STOPPED
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conditions.get("Ready") == "True":
        return ReplicaState.READY
    if _restarts(pod):
        return ReplicaState.RESTARTING
    return ReplicaState.STARTING


def _restarts(pod: Manifest) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses)


def _last_exit_code(pod: Manifest) -> int | None:
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (container.get("lastState") or {}).get("terminated")
        if terminated and terminated.get("exitCode") is not None:
            return int(terminated["exitCode"])
    return None


def replica_statuses(pods: list[Manifest], port: int) -> list[ReplicaStatus]:
    """One status per pod (oldest first), with its OpenAI base URL on the pod IP."""
    ordered = sorted(
        pods,
        key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]),
    )
    replicas = []
    for index, pod in enumerate(ordered):
        ip = (pod.get("status") or {}).get("podIP")
        replicas.append(
            ReplicaStatus(
                index=index,
                state=_pod_state(pod),
                base_url=f"http://{ip}:{port}/v1" if ip else None,
                restarts=_restarts(pod),
                last_exit_code=_last_exit_code(pod),
            )
        )
    return replicas


def _desired(primary: Manifest) -> int:
    spec = primary.get("spec") or {}
    if primary.get("kind") == "InferenceService":
        replicas = (spec.get("predictor") or {}).get("minReplicas")
        return 1 if replicas is None else int(replicas)
    replicas = spec.get("replicas")
    return 1 if replicas is None else int(replicas)


def _is_ready(primary: Manifest, replicas: int) -> bool:
    """Whether the primary object reports ``replicas`` ready on its current generation."""
    status = primary.get("status") or {}
    if primary.get("kind") == "InferenceService":
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return conditions.get("Ready") == "True"
    generation = (primary.get("metadata") or {}).get("generation") or 0
    observed = status.get("observedGeneration") or 0
    ready = status.get("readyReplicas") or 0
    return observed >= generation and ready >= replicas


def _scaled_down(primary: Manifest, replicas: int) -> bool:
    status = primary.get("status") or {}
    return int(status.get("replicas") or 0) <= replicas


def diagnose(pods: list[Manifest]) -> str:
    """What the unready pods are waiting on (scheduling, image pulls, crashes)."""
    reasons: list[str] = []
    for pod in pods:
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("status") == "False" and condition.get("message"):
                reasons.append(f"{pod['metadata']['name']}: {condition['message']}")
        for container in status.get("containerStatuses") or []:
            waiting = (container.get("state") or {}).get("waiting")
            if waiting:
                detail = waiting.get("message") or ""
                reasons.append(f"{pod['metadata']['name']}: {waiting.get('reason')} {detail}")
    return "; ".join(r.strip() for r in reasons) or "no pod reported a reason"


# -- the deployer -----------------------------------------------------------------------------


class KubernetesDeployer:
    """Runs deployments as Kubernetes objects (Deployment, Service, HPA/KEDA, or KServe)."""

    def __init__(
        self,
        options: KubernetesOptions | None = None,
        *,
        configuration: client.Configuration | None = None,
    ) -> None:
        self._options = options or KubernetesOptions()
        self._client = client.ApiClient(configuration or api_configuration(self._options))
        self._api = _ObjectApi(
            self._client, self._options.namespace, self._options.request_timeout_seconds
        )

    @property
    def options(self) -> KubernetesOptions:
        """The options the deployer renders and applies with."""
        return self._options

    def service_url(self, name: str) -> str:
        """The OpenAI base URL of a deployment's Service, as the cluster's DNS names it."""
        service = k8s_name(name)
        if self._options.kserve:  # KServe fronts the predictor with its own Service
            return f"http://{service}-predictor.{self._options.namespace}.svc.cluster.local/v1"
        host = f"{service}.{self._options.namespace}.svc.cluster.local"
        return f"http://{host}:{self._options.service_port}/v1"

    # -- the Deployer protocol -------------------------------------------------------------

    def allocate(self, spec: DeploymentSpec) -> Allocation:
        """The cluster pool ``spec`` would be placed on (400 when none can hold it)."""
        pools: builtins.list[PoolSpec] = [*self._options.pools]
        return allocate(spec, pools)

    async def deploy(self, spec: DeploymentSpec) -> Deployment:
        """Create the objects and return once ``replicas.start`` replicas are ready.

        A second deploy of a running name is a 409; one that does not become ready
        in time is deleted again and raised as a ``DeploymentFailedError``.
        """
        allocation = self.allocate(spec)
        manifests = render(spec, allocation, self._options)
        primary = manifests[0]
        try:
            await self._call(self._api.create, primary)
        except ConflictError as exc:
            msg = f"the deployment {spec.name!r} exists ({exc.message})"
            raise ConflictError(msg, param="name") from exc
        name = primary["metadata"]["name"]
        try:
            for manifest in manifests[1:]:
                await self._apply(manifest)
            await self._wait(primary["kind"], name, spec.replicas.start, spec.name)
        except BaseException:
            await asyncio.shield(self._teardown(name))
            raise
        return await self.status(spec.name)

    async def scale(self, name: str, replicas: int) -> Deployment:
        """Set the replica count (and the autoscaler's floor); returns once it is reached."""
        primary, spec, allocation = await self._primary(name)
        bounds = spec.replicas
        if not bounds.min <= replicas <= bounds.max:
            msg = f"{name!r} runs between {bounds.min} and {bounds.max} replicas, not {replicas}"
            raise InvalidRequestError(msg, param="replicas")
        if replicas > allocation.max_replicas:
            msg = f"pool {allocation.pool!r} holds at most {allocation.max_replicas} of {name!r}"
            raise InvalidRequestError(msg, param="replicas")
        kind, k8s = primary["kind"], primary["metadata"]["name"]
        if kind == "InferenceService":
            body = {"spec": {"predictor": {"minReplicas": replicas}}}
            await self._call(self._api.patch, kind, k8s, body)
        else:
            await self._raise_floor(k8s, replicas)
            await self._call(self._api.scale, k8s, replicas)
        await self._wait(kind, k8s, replicas, name, down=replicas < _desired(primary))
        return await self.status(name)

    async def status(self, name: str) -> Deployment:
        """The deployment as the cluster has it now (404 if Atrium manages none so named)."""
        primary, _, _ = await self._primary(name)
        pods = await self._call(self._api.pods, selector(name))
        return self._snapshot(primary, pods)

    async def stop(self, name: str, drain_seconds: float = 30.0) -> None:
        """Delete every object of the deployment (foreground) and wait until all are gone.

        Pods drain for ``options.termination_grace_seconds`` (set on the pods when they
        were rendered); ``drain_seconds`` is not used here.
        """
        primary, _, _ = await self._primary(name)
        await self._teardown(primary["metadata"]["name"])

    async def list(self) -> builtins.list[Deployment]:
        """Every deployment Atrium manages in the namespace."""
        kinds = ["Deployment", *(["InferenceService"] if self._options.kserve else [])]
        primaries: builtins.list[Manifest] = []
        for kind in kinds:
            primaries += await self._call(self._api.items, kind, managed_selector())
        pods = await self._call(self._api.pods, managed_selector())
        deployments = []
        for primary in primaries:
            label = (primary["metadata"].get("labels") or {}).get(LABEL_DEPLOYMENT)
            own = [
                p
                for p in pods
                if (p["metadata"].get("labels") or {}).get(LABEL_DEPLOYMENT) == label
            ]
            if read_record(primary["metadata"].get("annotations")) is not None:
                deployments.append(self._snapshot(primary, own))
        return deployments

    async def close(self) -> None:
        """Release the API client's connections (the cluster's objects stay)."""
        await asyncio.to_thread(self._client.close)

    # -- steps ----------------------------------------------------------------------------------

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        """One client call in a worker thread, its failure as a typed Atrium error."""
        try:
            return await asyncio.to_thread(method, *args)
        except ApiException as exc:
            raise api_error(exc) from exc
        except urllib3.exceptions.HTTPError as exc:
            msg = f"cannot reach the Kubernetes API: {exc}"
            raise DeploymentFailedError(msg) from exc

    async def _apply(self, manifest: Manifest) -> None:
        """Create, or patch what an earlier attempt left under the same name."""
        try:
            await self._call(self._api.create, manifest)
        except ConflictError:
            kind, name = manifest["kind"], manifest["metadata"]["name"]
            log.info("%s %s exists; patching it", kind, name)
            await self._call(self._api.patch, kind, name, manifest)

    async def _primary(self, name: str) -> tuple[Manifest, DeploymentSpec, Allocation]:
        """The Deployment (or InferenceService) of ``name``, and the spec it was rendered from."""
        kind = "InferenceService" if self._options.kserve else "Deployment"
        try:
            primary = await self._call(self._api.read, kind, k8s_name(name))
        except NotFoundError:
            raise NotFoundError(f"there is no deployment {name!r}", param="name") from None
        record = read_record(primary["metadata"].get("annotations"))
        if record is None or record[0].name != name:
            msg = f"{kind} {k8s_name(name)!r} is not an Atrium deployment of {name!r}"
            raise NotFoundError(msg, param="name")
        return primary, record[0], record[1]

    async def _raise_floor(self, name: str, replicas: int) -> None:
        """Move the autoscaler's minimum to ``replicas`` so it does not undo the scale."""
        if self._options.autoscaler == "keda":
            kind, body = "ScaledObject", {"spec": {"minReplicaCount": replicas}}
        else:
            kind, body = "HorizontalPodAutoscaler", {"spec": {"minReplicas": max(1, replicas)}}
        try:
            await self._call(self._api.patch, kind, name, body)
        except NotFoundError:
            log.info("%s %s is gone; scaling the Deployment alone", kind, name)

    async def _wait(
        self, kind: str, name: str, replicas: int, public: str, *, down: bool = False
    ) -> None:
        """Watch the primary object until ``replicas`` are ready (or, down, no more are left)."""
        timeout = self._options.ready_timeout_seconds

        def done(obj: Manifest) -> bool:
            return _scaled_down(obj, replicas) if down else _is_ready(obj, replicas)

        reached = await self._call(self._api.watch_until, kind, name, done, timeout)
        if reached is not None:
            return
        pods = await self._call(self._api.pods, selector(public))
        ready = sum(1 for r in replica_statuses(pods, 0) if r.state == ReplicaState.READY)
        msg = (
            f"{public!r}: {ready} of {replicas} replicas ready after {timeout:g}s "
            f"({diagnose(pods)})"
        )
        raise DeploymentFailedError(msg)

    async def _teardown(self, name: str) -> None:
        """Delete each object Atrium made under ``name`` and wait until none is left."""
        kinds = ("InferenceService", *_DELETE_ORDER)
        doomed: builtins.list[str] = []
        for kind in kinds:
            if kind == "InferenceService" and not self._options.kserve:
                continue
            if await self._delete_managed(kind, name):
                doomed.append(kind)
        deadline = time.monotonic() + self._options.delete_timeout_seconds
        for kind in doomed:
            while await self._exists(kind, name):
                if time.monotonic() > deadline:
                    limit = self._options.delete_timeout_seconds
                    msg = f"{kind} {name!r} was not deleted within {limit:g}s"
                    raise DeploymentFailedError(msg)
                await asyncio.sleep(_POLL_SECONDS)

    async def _delete_managed(self, kind: str, name: str) -> bool:
        """Delete the object if it is there and Atrium's; whether a delete was sent."""
        try:
            current = await self._call(self._api.read, kind, name)
        except NotFoundError:
            return False
        labels = current["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") != "atrium":
            log.warning("%s %s is not managed by Atrium; left alone", kind, name)
            return False
        try:
            await self._call(self._api.delete, kind, name)
        except NotFoundError:
            return False
        return True

    async def _exists(self, kind: str, name: str) -> bool:
        try:
            await self._call(self._api.read, kind, name)
        except NotFoundError:
            return False
        return True

    def _snapshot(self, primary: Manifest, pods: builtins.list[Manifest]) -> Deployment:
        record = read_record(primary["metadata"].get("annotations"))
        if record is None:
            raise NotFoundError(f"{primary['metadata']['name']!r} is not an Atrium deployment")
        spec, allocation = record
        return Deployment(
            name=spec.name,
            spec=spec,
            allocation=allocation,
            desired=_desired(primary),
            replicas=replica_statuses(pods, self._options.container_port),
        )
