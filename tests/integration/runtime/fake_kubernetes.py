"""A local stand-in for the Kubernetes API server, for the deployer's tests.

No cluster runs here, so this aiohttp server on 127.0.0.1 answers the REST paths
the Kubernetes deployer uses, in the wire format the API reference documents:

- ``apps/v1`` deployments (and their ``/scale`` subresource), ``v1`` services and
  pods, ``autoscaling/v2`` horizontalpodautoscalers, and the custom resources
  ``keda.sh/v1alpha1`` scaledobjects and ``serving.kserve.io/v1beta1`` inferenceservices;
- ``POST`` creates (201; 409 ``AlreadyExists`` Status when the name is taken; 404
  when the namespace does not exist; 422 ``Invalid`` when the object fails the
  kind's schema, checked with ``kubernetes-validate``), ``GET`` reads and lists
  (``labelSelector``, ``fieldSelector``), ``PUT`` replaces (409 on a stale
  ``resourceVersion``), ``PATCH`` takes ``application/strategic-merge-patch+json``
  (built-in kinds only; lists of objects with a ``name`` merge by name),
  ``application/merge-patch+json`` (RFC 7386) and ``application/json-patch+json``
  (RFC 6902), anything else 415; ``DELETE`` answers a Status, and with
  ``propagationPolicy=Foreground`` deletes the dependents first (the object
  carries ``deletionTimestamp`` and the ``foregroundDeletion`` finalizer meanwhile);
- ``?watch=true`` streams newline-delimited ``{"type": "ADDED|MODIFIED|DELETED",
  "object": ...}`` events: synthetic ADDED events for the current state when no
  ``resourceVersion`` is given, then changes, until ``timeoutSeconds``.

A small controller plays the Deployment and KServe controllers: it keeps the
asked-for number of pods, makes them ready after ``ready_delay`` seconds, and
writes the owner's status. :meth:`FakeKubernetes.hold_unready` keeps a
deployment's pods waiting (as on an image that cannot be pulled);
:meth:`FakeKubernetes.deny` refuses creates of a kind (as an admission policy does).
Simplifications: pods are owned by the Deployment directly (no ReplicaSets), and
one pod template hash is used per generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
from aiohttp import web

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    """One resource type the fake serves."""

    group: str
    version: str
    plural: str
    kind: str
    builtin: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps``, as the API names a resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS = {
    (k.group, k.version, k.plural): k
    for k in (
        Kind("apps", "v1", "deployments", "Deployment"),
        Kind("", "v1", "services", "Service"),
        Kind("", "v1", "pods", "Pod"),
        Kind("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
        Kind("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject", builtin=False),
        Kind("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService", False),
    )
}
DEPLOYMENTS = KINDS[("apps", "v1", "deployments")]
PODS = KINDS[("", "v1", "pods")]
ISVCS = KINDS[("serving.kserve.io", "v1beta1", "inferenceservices")]
JSON = "application/json"
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def now() -> str:
    """An RFC 3339 timestamp, as the API writes them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    """A ``v1`` Status object."""
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    if code < 400:
        del body["message"], body["reason"]
    return body


class ApiError(Exception):
    """An error answered as a Status object."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.body = status_body(code, reason, message, details)
        self.code = code


def not_found(kind: Kind, name: str) -> ApiError:
    details = {"name": name, "group": kind.group, "kind": kind.plural}
    return ApiError(404, "NotFound", f'{kind.qualified} "{name}" not found', details)


# -- patches ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge patch, as far as these objects need: maps merge, null deletes, and
    lists of objects that all have a ``name`` (containers, volumes, ports, env) merge by it."""
    if isinstance(patch, dict) and isinstance(target, dict):
        result = dict(target)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge(result.get(key), value)
        return result
    if isinstance(patch, list) and isinstance(target, list) and _named(patch) and _named(target):
        merged = {item["name"]: item for item in target}
        for item in patch:
            merged[item["name"]] = strategic_merge(merged.get(item["name"]), item)
        return list(merged.values())
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return all(isinstance(i, dict) and "name" in i for i in items)


def json_patch(target: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902 JSON patch (add, replace, remove)."""
    result = copy.deepcopy(target)
    for op in operations:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif op["op"] in ("add", "replace"):
            if isinstance(node, list):
                index = len(node) if last == "-" else int(last)
                node[index : index + (op["op"] == "replace")] = [op["value"]]
            else:
                node[last] = op["value"]
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch operation {op['op']!r}")
    return result


# -- selectors --------------------------------------------------------------------------------


def label_match(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``."""
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_match(selector: str | None, obj: Obj) -> bool:
    """Field selectors on ``metadata.name`` and ``metadata.namespace``."""
    for term in filter(None, (selector or "").split(",")):
        negate = "!=" in term
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        if key not in ("metadata.name", "metadata.namespace"):
            raise ApiError(400, "BadRequest", f'field label not supported: "{key}"')
        actual = obj["metadata"].get(key.split(".")[1])
        if (actual == value) == negate:
            return False
    return True


@dataclass
class Hold:
    """Why a deployment's pods stay unready."""

    reason: str
    message: str


@dataclass
class FakeKubernetes:
    """The fake API server and its controller."""

    ready_delay: float = 0.2
    deletion_delay: float = 0.1
    namespaces: set[str] = field(default_factory=lambda: {"default"})
    objects: dict[tuple[Kind, str, str], Obj] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    url: str = ""
    _revision: int = 0
    _history: list[tuple[int, Kind, str, Obj]] = field(default_factory=list)
    _watchers: set[asyncio.Queue[tuple[int, Kind, str, Obj] | None]] = field(default_factory=set)
    _holds: dict[str, Hold] = field(default_factory=dict)
    _denials: dict[str, ApiError] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _runner: web.AppRunner | None = None

    # -- control ---------------------------------------------------------------------------

    async def start(self) -> str:
        """Serve on a free port of 127.0.0.1; returns the base URL."""
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def close(self) -> None:
        """End every watch, the controller's work and the server."""
        for queue in self._watchers:
            queue.put_nowait(None)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def hold_unready(
        self,
        name: str,
        reason: str = "ImagePullBackOff",
        message: str = 'Back-off pulling image "ghcr.io/ggml-org/llama.cpp:server"',
    ) -> None:
        """Keep the pods of Deployment ``name`` waiting with this reason."""
        self._holds[name] = Hold(reason, message)

    def deny(self, plural: str, code: int, reason: str, message: str) -> None:
        """Refuse every create of ``plural`` with this Status (an admission policy's denial)."""
        self._denials[plural] = ApiError(code, reason, message)

    def stored(self, plural: str, namespace: str = "default") -> list[Obj]:
        """The stored objects of a kind."""
        return [
            o for (k, ns, _), o in self.objects.items() if k.plural == plural and ns == namespace
        ]

    # -- dispatch ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        content_type = request.headers.get("Content-Type", "")
        self.requests.append((request.method, request.path_qs, content_type.split(";")[0]))
        try:
            kind, namespace, name, sub = self._route(request.path)
            if name is None:
                return await self._collection(request, kind, namespace)
            return await self._item(request, kind, namespace, name, sub)
        except ApiError as error:
            return web.json_response(error.body, status=error.code)

    def _route(self, path: str) -> tuple[Kind, str, str | None, str | None]:
        parts = path.strip("/").split("/")
        if parts[:1] == ["api"]:
            group, rest = "", parts[1:]
        elif parts[:1] == ["apis"] and len(parts) > 2:
            group, rest = parts[1], parts[2:]
        else:
            raise web.HTTPNotFound(text="404 page not found")
        if len(rest) < 4 or rest[1] != "namespaces" or len(rest) > 6:
            raise web.HTTPNotFound(text="404 page not found")
        version, _, namespace, plural, *tail = rest
        kind = KINDS.get((group, version, plural))
        if kind is None:
            raise web.HTTPNotFound(text="404 page not found")
        name = tail[0] if tail else None
        sub = tail[1] if len(tail) > 1 else None
        if sub is not None and (kind is not DEPLOYMENTS or sub != "scale"):
            raise web.HTTPNotFound(text="404 page not found")
        return kind, namespace, name, sub

    async def _collection(self, request: web.Request, kind: Kind, ns: str) -> web.StreamResponse:
        if request.method == "POST":
            created = self._create(kind, ns, await _body(request))
            return web.json_response(created, status=201)
        if request.method != "GET":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        if request.query.get("watch") in ("true", "1", "True"):
            return await self._watch(request, kind, ns)
        return web.json_response(self._list(kind, ns, request.query))

    async def _item(
        self, request: web.Request, kind: Kind, ns: str, name: str, sub: str | None
    ) -> web.StreamResponse:
        if sub == "scale":
            return web.json_response(await self._scale(request, ns, name))
        if request.method == "GET":
            return web.json_response(self._get(kind, ns, name))
        if request.method == "PUT":
            return web.json_response(self._replace(kind, ns, name, await _body(request)))
        if request.method == "PATCH":
            patched = self._patch(
                kind, ns, name, request.headers.get("Content-Type", ""), await _body(request)
            )
            return web.json_response(patched)
        if request.method == "DELETE":
            policy = request.query.get("propagationPolicy", "Background")
            code, body = self._delete(kind, ns, name, policy)
            return web.json_response(body, status=code)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")

    # -- storage -----------------------------------------------------------------------------

    def _get(self, kind: Kind, ns: str, name: str) -> Obj:
        obj = self.objects.get((kind, ns, name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    def _emit(self, kind: Kind, event: str, obj: Obj) -> None:
        self._revision += 1
        if event != "DELETED":
            obj["metadata"]["resourceVersion"] = str(self._revision)
        snapshot = copy.deepcopy(obj)
        self._history.append((self._revision, kind, event, snapshot))
        for queue in self._watchers:
            queue.put_nowait((self._revision, kind, event, snapshot))

    def _check(self, kind: Kind, ns: str, obj: Obj) -> None:
        if obj.get("apiVersion") != kind.api_version or obj.get("kind") != kind.kind:
            msg = (
                f"the API version in the data ({obj.get('apiVersion')}) does not match "
                f"the expected API version ({kind.api_version})"
            )
            raise ApiError(400, "BadRequest", msg)
        metadata = obj.get("metadata") or {}
        if metadata.get("namespace", ns) != ns:
            msg = (
                "the namespace of the provided object does not match the namespace sent "
                "on the request"
            )
            raise ApiError(400, "BadRequest", msg)
        if not metadata.get("name"):
            raise ApiError(
                422,
                "Invalid",
                f"{kind.kind}.{kind.group} is invalid: metadata.name: Required value",
            )
        if kind.builtin:
            try:
                kubernetes_validate.validate(obj, "1.37", strict=False)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.absolute_path)
                title = f'{kind.kind}.{kind.group or "core"} "{metadata["name"]}"'
                msg = f"{title} is invalid: {where}: {exc.message}"
                raise ApiError(422, "Invalid", msg) from None
        if kind is DEPLOYMENTS:
            _check_selector(obj)

    def _create(self, kind: Kind, ns: str, obj: Obj) -> Obj:
        if kind.plural in self._denials:
            raise self._denials[kind.plural]
        if ns not in self.namespaces:
            raise ApiError(
                404, "NotFound", f'namespaces "{ns}" not found', {"name": ns, "kind": "namespaces"}
            )
        self._check(kind, ns, obj)
        name = obj["metadata"]["name"]
        if (kind, ns, name) in self.objects:
            details = {"name": name, "group": kind.group, "kind": kind.plural}
            raise ApiError(
                409, "AlreadyExists", f'{kind.qualified} "{name}" already exists', details
            )
        obj = copy.deepcopy(obj)
        metadata = obj["metadata"]
        metadata.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=now())
        if kind is not PODS and kind.kind != "Service":
            metadata["generation"] = 1
        _defaults(kind, obj)
        self.objects[(kind, ns, name)] = obj
        self._emit(kind, "ADDED", obj)
        self._kick(kind, ns, name)
        return obj

    def _replace(self, kind: Kind, ns: str, name: str, obj: Obj) -> Obj:
        current = self._get(kind, ns, name)
        self._check(kind, ns, obj)
        version = obj["metadata"].get("resourceVersion")
        if version is not None and version != current["metadata"]["resourceVersion"]:
            msg = (
                f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
            raise ApiError(
                409, "Conflict", msg, {"name": name, "group": kind.group, "kind": kind.plural}
            )
        return self._update(kind, ns, name, current, obj)

    def _patch(self, kind: Kind, ns: str, name: str, content_type: str, patch: Any) -> Obj:
        current = self._get(kind, ns, name)
        media = content_type.split(";", 1)[0].strip()
        if media == MERGE:
            updated = merge_patch(current, patch)
        elif media == SMP and kind.builtin:
            updated = strategic_merge(current, patch)
        elif media == JSON_PATCH and isinstance(patch, list):
            updated = json_patch(current, patch)
        else:
            msg = (
                "the body of the request was in an unknown format - accepted media types include: "
                + ", ".join(
                    [
                        JSON_PATCH,
                        MERGE,
                        *([SMP] if kind.builtin else []),
                        "application/apply-patch+yaml",
                    ]
                )
            )
            raise ApiError(415, "UnsupportedMediaType", msg)
        self._check(kind, ns, updated)
        return self._update(kind, ns, name, current, updated)

    def _update(self, kind: Kind, ns: str, name: str, current: Obj, new: Obj) -> Obj:
        new = copy.deepcopy(new)
        keep = (
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "finalizers",
        )
        for key in keep:
            if key in current["metadata"]:
                new["metadata"][key] = current["metadata"][key]
        if "status" in current:
            new["status"] = current["status"]  # the main resource does not write status
        if new.get("spec") != current.get("spec") and "generation" in current["metadata"]:
            new["metadata"]["generation"] = current["metadata"]["generation"] + 1
        _defaults(kind, new)
        self.objects[(kind, ns, name)] = new
        self._emit(kind, "MODIFIED", new)
        self._kick(kind, ns, name)
        return new

    def _delete(self, kind: Kind, ns: str, name: str, policy: str) -> tuple[int, Obj]:
        obj = self._get(kind, ns, name)
        details = {
            "name": name,
            "group": kind.group,
            "kind": kind.plural,
            "uid": obj["metadata"]["uid"],
        }
        if policy == "Foreground" and kind in (DEPLOYMENTS, ISVCS):
            if "deletionTimestamp" not in obj["metadata"]:
                obj["metadata"]["deletionTimestamp"] = now()
                obj["metadata"]["finalizers"] = ["foregroundDeletion"]
                self._emit(kind, "MODIFIED", obj)
                self._spawn(self._collect(kind, ns, name))
            return 202, status_body(202, "", "", details)
        self._remove(kind, ns, name)
        if kind in (DEPLOYMENTS, ISVCS):  # background: the garbage collector follows
            for pod in self._owned(ns, obj):
                self._remove(PODS, ns, pod["metadata"]["name"])
        return 200, status_body(200, "", "", details)

    def _remove(self, kind: Kind, ns: str, name: str) -> None:
        obj = self.objects.pop((kind, ns, name), None)
        if obj is not None:
            self._emit(kind, "DELETED", obj)

    async def _collect(self, kind: Kind, ns: str, name: str) -> None:
        """Foreground deletion: the dependents go first, then the owner."""
        owner = self.objects[(kind, ns, name)]
        await asyncio.sleep(self.deletion_delay)
        for pod in self._owned(ns, owner):
            self._remove(PODS, ns, pod["metadata"]["name"])
        await asyncio.sleep(self.deletion_delay)
        self._remove(kind, ns, name)

    def _list(self, kind: Kind, ns: str, query: Any) -> Obj:
        items = []
        for obj in self._matching(kind, ns, query):
            item = copy.deepcopy(obj)
            if kind.builtin:  # typed lists carry kind and apiVersion only on the list
                item.pop("kind", None)
                item.pop("apiVersion", None)
            items.append(item)
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": {"resourceVersion": str(self._revision)},
            "items": items,
        }

    def _matching(self, kind: Kind, ns: str, query: Any) -> list[Obj]:
        return [
            obj
            for (k, n, _), obj in sorted(self.objects.items(), key=lambda kv: kv[0][2])
            if k is kind
            and n == ns
            and label_match(query.get("labelSelector"), obj["metadata"].get("labels") or {})
            and field_match(query.get("fieldSelector"), obj)
        ]

    # -- watch -----------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, kind: Kind, ns: str) -> web.StreamResponse:
        query = request.query
        timeout = float(query.get("timeoutSeconds", "1800"))
        queue: asyncio.Queue[tuple[int, Kind, str, Obj] | None] = asyncio.Queue()
        self._watchers.add(queue)
        response = web.StreamResponse(headers={"Content-Type": JSON})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            since = query.get("resourceVersion")
            if since in (None, "", "0"):
                initial = [("ADDED", obj) for obj in self._matching(kind, ns, query)]
            else:
                initial = [(e, o) for rv, k, e, o in self._history if rv > int(since) and k is kind]
                initial = [(e, o) for e, o in initial if _selected(o, ns, query)]
            for event, obj in initial:
                await _send(response, event, obj)
            await self._stream(response, queue, kind, ns, query, timeout)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._watchers.discard(queue)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        queue: asyncio.Queue[Any],
        kind: Kind,
        ns: str,
        query: Any,
        seconds: float,
    ) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while (remaining := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                item = await asyncio.wait_for(queue.get(), remaining)
            except TimeoutError:
                return
            if item is None:
                return
            _, event_kind, event, obj = item
            if event_kind is kind and _selected(obj, ns, query):
                await _send(response, event, obj)

    # -- scale subresource ----------------------------------------------------------------------

    async def _scale(self, request: web.Request, ns: str, name: str) -> Obj:
        deployment = self._get(DEPLOYMENTS, ns, name)
        if request.method in ("PATCH", "PUT"):
            body = await _body(request)
            media = request.headers.get("Content-Type", "").split(";")[0]
            if request.method == "PATCH" and media not in (SMP, MERGE):
                raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {media}")
            replicas = body.get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                msg = f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                msg += repr(replicas)
                raise ApiError(422, "Invalid", msg)
            updated = {**deployment, "spec": {**deployment["spec"], "replicas": replicas}}
            deployment = self._update(DEPLOYMENTS, ns, name, deployment, updated)
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: deployment["metadata"][k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": deployment["spec"]["replicas"]},
            "status": {
                "replicas": deployment.get("status", {}).get("replicas", 0),
                "selector": ",".join(
                    f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items()
                ),
            },
        }

    # -- the controller ---------------------------------------------------------------------------

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kick(self, kind: Kind, ns: str, name: str) -> None:
        if kind in (DEPLOYMENTS, ISVCS):
            self._reconcile(kind, ns, name)

    def _owned(self, ns: str, owner: Obj) -> list[Obj]:
        uid = owner["metadata"]["uid"]
        return [
            pod
            for (k, n, _), pod in list(self.objects.items())
            if k is PODS
            and n == ns
            and any(r["uid"] == uid for r in pod["metadata"].get("ownerReferences", []))
        ]

    def _reconcile(self, kind: Kind, ns: str, name: str) -> None:
        owner = self.objects.get((kind, ns, name))
        if owner is None or "deletionTimestamp" in owner["metadata"]:
            return
        want = _wanted(owner)
        pods = sorted(self._owned(ns, owner), key=lambda p: p["metadata"]["name"])
        for pod in pods[want:]:
            self._remove(PODS, ns, pod["metadata"]["name"])
        for _ in range(want - len(pods)):
            self._create_pod(kind, ns, owner)
        self._write_status(kind, ns, name)
        if name not in self._holds:
            self._spawn(self._make_ready(kind, ns, name))

    def _create_pod(self, kind: Kind, ns: str, owner: Obj) -> None:
        template, labels = _template(owner)
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        name = f"{owner['metadata']['name']}-{digest}-{uuid.uuid4().hex[:5]}"
        hold = self._holds.get(owner["metadata"]["name"])
        containers = template.get("containers") or []
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {**labels, "pod-template-hash": digest},
                "ownerReferences": [
                    {
                        "apiVersion": owner["apiVersion"],
                        "kind": owner["kind"],
                        "name": owner["metadata"]["name"],
                        "uid": owner["metadata"]["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**template, "nodeName": "node-1"},
            "status": _pod_status(containers, ready=False, hold=hold),
        }
        self._create(PODS, ns, pod)

    async def _make_ready(self, kind: Kind, ns: str, name: str) -> None:
        await asyncio.sleep(self.ready_delay)
        owner = self.objects.get((kind, ns, name))
        if owner is None or name in self._holds or "deletionTimestamp" in owner["metadata"]:
            return
        for index, pod in enumerate(self._owned(ns, owner)):
            if pod["status"]["phase"] != "Running":
                containers = pod["spec"].get("containers") or []
                pod["status"] = _pod_status(containers, ready=True, ip=f"10.244.0.{index + 10}")
                self._emit(PODS, "MODIFIED", pod)
        self._write_status(kind, ns, name)

    def _write_status(self, kind: Kind, ns: str, name: str) -> None:
        owner = self.objects[(kind, ns, name)]
        pods = self._owned(ns, owner)
        ready = sum(1 for p in pods if p["status"]["phase"] == "Running")
        if kind is ISVCS:
            status = _isvc_status(owner, ready >= _wanted(owner), self._holds.get(name))
        else:
            status = _deployment_status(owner, len(pods), ready)
        if owner.get("status") != status:
            owner["status"] = status
            self._emit(kind, "MODIFIED", owner)


# -- helpers ------------------------------------------------------------------------------------


async def _body(request: web.Request) -> Any:
    try:
        return json.loads(await request.read())
    except ValueError as exc:
        raise ApiError(
            400, "BadRequest", f"the body of the request could not be decoded: {exc}"
        ) from None


async def _send(response: web.StreamResponse, event: str, obj: Obj) -> None:
    await response.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")


def _selected(obj: Obj, ns: str, query: Any) -> bool:
    return (
        obj["metadata"].get("namespace") == ns
        and label_match(query.get("labelSelector"), obj["metadata"].get("labels") or {})
        and field_match(query.get("fieldSelector"), obj)
    )


def _check_selector(obj: Obj) -> None:
    spec = obj.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        name = obj["metadata"]["name"]
        msg = (
            f'Deployment.apps "{name}" is invalid: spec.template.metadata.labels: Invalid value: '
            f"{json.dumps(labels)}: `selector` does not match template `labels`"
        )
        raise ApiError(422, "Invalid", msg)


def _defaults(kind: Kind, obj: Obj) -> None:
    """What the API server fills in on write."""
    spec = obj.setdefault("spec", {})
    if kind is DEPLOYMENTS:
        spec.setdefault("replicas", 1)
        obj.setdefault("status", {})
    elif kind.kind == "Service":
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("clusterIP", "10.96.0.42")
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("sessionAffinity", "None")
        obj.setdefault("status", {"loadBalancer": {}})
    elif kind.kind == "HorizontalPodAutoscaler":
        obj.setdefault("status", {"currentReplicas": 0, "desiredReplicas": 0})


def _wanted(owner: Obj) -> int:
    if owner["kind"] == "InferenceService":
        return int(owner["spec"]["predictor"].get("minReplicas") or 1)
    return int(owner["spec"].get("replicas", 1))


def _template(owner: Obj) -> tuple[Obj, dict[str, str]]:
    """The pod spec and labels an owner stamps its pods from."""
    if owner["kind"] == "InferenceService":
        predictor = owner["spec"]["predictor"]
        keys = ("containers", "nodeSelector", "tolerations")
        labels = {
            **predictor.get("labels", {}),
            "serving.kserve.io/inferenceservice": owner["metadata"]["name"],
        }
        return {k: predictor[k] for k in keys if k in predictor}, labels
    template = owner["spec"]["template"]
    return copy.deepcopy(template["spec"]), dict(template["metadata"]["labels"])


def _pod_status(
    containers: list[Obj], *, ready: bool, hold: Hold | None = None, ip: str | None = None
) -> Obj:
    flag = "True" if ready else "False"
    statuses = []
    for container in containers:
        entry: Obj = {
            "name": container["name"],
            "image": container["image"],
            "imageID": f"docker-pullable://{container['image']}@sha256:{'0' * 64}" if ready else "",
            "ready": ready,
            "started": ready,
            "restartCount": 0,
        }
        if ready:
            entry["state"] = {"running": {"startedAt": now()}}
        else:
            waiting = (
                {"reason": hold.reason, "message": hold.message}
                if hold
                else {"reason": "ContainerCreating"}
            )
            entry["state"] = {"waiting": waiting}
        statuses.append(entry)
    conditions = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": now()},
        {"type": "Ready", "status": flag, "lastTransitionTime": now()},
    ]
    if not ready:
        for condition in conditions[2:]:
            condition["reason"] = "ContainersNotReady"
            condition["message"] = (
                f"containers with unready status: [{' '.join(c['name'] for c in containers)}]"
            )
    status: Obj = {
        "phase": "Running" if ready else "Pending",
        "conditions": conditions,
        "hostIP": "192.168.0.2",
        "startTime": now(),
        "containerStatuses": statuses,
        "qosClass": "Burstable",
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return status


def _deployment_status(owner: Obj, total: int, ready: int) -> Obj:
    status: Obj = {"observedGeneration": owner["metadata"]["generation"]}
    if total:
        status.update(replicas=total, updatedReplicas=total)
    if ready:
        status.update(readyReplicas=ready, availableReplicas=ready)
    if total - ready:
        status["unavailableReplicas"] = total - ready
    available = ready >= int(owner["spec"].get("replicas", 1))
    status["conditions"] = [
        {
            "type": "Available",
            "status": "True" if available else "False",
            "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
            "message": "Deployment has minimum availability."
            if available
            else "Deployment does not have minimum availability.",
            "lastUpdateTime": now(),
            "lastTransitionTime": now(),
        }
    ]
    return status


def _isvc_status(owner: Obj, ready: bool, hold: Hold | None) -> Obj:
    flag = "True" if ready else "False"
    conditions = []
    for kind in ("PredictorReady", "Ready"):
        condition: Obj = {"type": kind, "status": flag, "lastTransitionTime": now()}
        if hold and not ready:
            condition.update(reason=hold.reason, message=hold.message)
        conditions.append(condition)
    name, ns = owner["metadata"]["name"], owner["metadata"]["namespace"]
    status: Obj = {"observedGeneration": owner["metadata"]["generation"], "conditions": conditions}
    if ready:
        status["url"] = f"http://{name}.{ns}.example.com"
    return status
