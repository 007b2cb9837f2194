"""Release watchers: each polls a source on its interval and reports new releases once.

A :class:`Watcher` lists what its source holds as :class:`Detection` candidates; the
:class:`WatcherRunner` polls every watcher on its (jittered) interval, skips what the
detection ledger already holds, lets the watcher fetch the rest (a Hub download), claims
each in the ledger (unique in the database, so several workers never report a release
twice) and hands a :class:`~atrium.bus.events.ReleaseDetected` to its callback for the new
ones only. A failing poll is logged and counted and retried with backoff; the loop goes on.

Watchers here: :class:`FolderWatcher` (a folder or bucket through fsspec) and
:class:`OpenAIModelsWatcher` (any OpenAI-compatible ``GET /v1/models``); the Hugging Face
Hub watcher is in :mod:`atrium.releases.hub`. Their settings are the pydantic models
below, one kind each, joined in :data:`WatcherConfig` (a union discriminated on ``kind``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import posixpath
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol

import fsspec  # type: ignore[import-untyped]
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from atrium.bus.events import ReleaseDetected
from atrium.core import objectstore
from atrium.core.errors import UpstreamError
from atrium.core.netguard import NetworkPolicy, guarded_client
from atrium.registry.types import NAME_PATTERN
from atrium.store.detections import DetectionRepository

__all__ = [
    "BASELINE_KEY",
    "Detection",
    "DetectionCallback",
    "FolderWatcher",
    "FolderWatcherConfig",
    "HuggingFaceWatcherConfig",
    "OpenAIModelsWatcher",
    "OpenAIModelsWatcherConfig",
    "ReleaseSourceError",
    "Watcher",
    "WatcherConfig",
    "WatcherRunner",
    "WatcherStats",
    "name_matcher",
    "registry_model_name",
    "release_id_for",
]

log = logging.getLogger("atrium.releases.watchers")

#: The ledger key a watcher claims once its first poll has marked what already existed.
BASELINE_KEY: Final = "__baseline__"
_WATCHER_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NOT_IN_NAME: Final = re.compile(r"[^A-Za-z0-9._-]+")


class ReleaseSourceError(UpstreamError):
    """A watched source answered with something that is not what its API documents."""

    default_code = "release_source_error"


@dataclass(frozen=True, slots=True)
class Detection:
    """A release a watcher sees: ``key`` identifies it within the watcher.

    ``ready`` is False for what is not complete yet (a file still being written): it is
    not reported, but a first-poll baseline still marks it as known.
    """

    key: str
    source: str
    model: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)
    ready: bool = True


class Watcher(Protocol):
    """A source of releases, polled by :class:`WatcherRunner`."""

    @property
    def name(self) -> str:
        """Unique among the watchers (the ledger's namespace for its keys)."""

    @property
    def interval(self) -> float:
        """Seconds between two polls."""

    @property
    def baseline(self) -> bool:
        """Whether the first poll ever marks what exists as known instead of reporting it."""

    async def poll(self) -> list[Detection]:
        """What the source holds now (cheap: no downloads)."""

    async def fetch(self, detection: Detection) -> Detection:
        """Make a new detection's artifact usable (download it); called once per new key."""

    async def close(self) -> None:
        """Release connections."""


DetectionCallback = Callable[[ReleaseDetected], Awaitable[None]]
"""Called once per new release; it should hand the event on durably (bus, workflow)."""


# -- settings ---------------------------------------------------------------------------


class _WatcherSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_WATCHER_NAME, description="Unique name; the ledger keys on it.")
    interval_seconds: float = Field(300.0, gt=0, description="Seconds between two polls.")
    model: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Registry model the releases become versions of (default: from the name).",
    )


class _PatternSettings(BaseModel):
    pattern: str = Field("*", min_length=1, description="Which names to report.")
    pattern_syntax: Literal["glob", "regex"] = Field(
        "glob", description="fnmatch-style glob or a regular expression (both ignore case)."
    )

    @model_validator(mode="after")
    def _pattern_compiles(self) -> _PatternSettings:
        if self.pattern_syntax == "regex":
            try:
                re.compile(self.pattern)
            except re.error as exc:
                msg = f"pattern is not a regular expression: {exc}"
                raise ValueError(msg) from None
        return self


class FolderWatcherConfig(_WatcherSettings):
    """A folder or bucket watched through fsspec for new model files."""

    kind: Literal["folder"] = "folder"
    url: str = Field(
        min_length=1, description="A local folder, or an s3://, gs:// or az:// bucket URL."
    )
    pattern: str = Field("*.gguf", min_length=1, description="Glob under the folder ('**/')")
    min_age_seconds: float | None = Field(
        None,
        ge=0,
        description=(
            "A file this old is taken at once; any file is taken once its size and version "
            "are unchanged across two polls (a partly written file waits)."
        ),
    )
    baseline: bool = Field(False, description="The first poll ever marks existing files known.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        repr=False,
        description=(
            "A bucket's options (credentials, region, endpoint), as for a knowledge-base "
            "object-store source; none: the server's own credentials."
        ),
    )

    @model_validator(mode="after")
    def _store_options_known(self) -> FolderWatcherConfig:
        scheme, sep, _ = self.url.partition("://")
        provider = objectstore.PROVIDERS.get(scheme.lower()) if sep else None
        if provider is not None:
            objectstore.parse_options(provider, self.storage_options)  # ValueError if wrong
        return self


class OpenAIModelsWatcherConfig(_WatcherSettings, _PatternSettings):
    """An OpenAI-compatible provider whose ``GET {base_url}/models`` lists new model ids."""

    kind: Literal["openai"] = "openai"
    base_url: str = Field(
        pattern=r"^https?://", description="The API root, e.g. https://api.openai.com/v1."
    )
    api_key: SecretStr | None = None
    baseline: bool = Field(True, description="The first poll ever marks existing ids known.")
    allow_private_network: bool = Field(
        False, description="Allow a provider on a private or loopback address (on-premises)."
    )
    timeout_seconds: float = Field(10.0, gt=0)


class HuggingFaceWatcherConfig(_WatcherSettings, _PatternSettings):
    """Hugging Face Hub model repositories, by author, name and file type.

    ``pattern`` is matched against the repository name (after the ``/``), or against the
    whole ``author/name`` id when it holds a ``/``.
    """

    kind: Literal["huggingface"] = "huggingface"
    endpoint: str = Field("https://huggingface.co", pattern=r"^https?://")
    token: SecretStr | None = None
    author: str | None = Field(None, description="User or organisation.")
    search: str | None = Field(None, description="Substring the Hub searches repo ids for.")
    tags: tuple[str, ...] = Field((), description="Hub filter tags, e.g. ('gguf',).")
    file_pattern: str = Field("*.gguf", min_length=1, description="Glob on the file's path.")
    quantizations: tuple[str, ...] = Field(
        (), description="Only files whose name holds one of these, e.g. ('Q4_K_M',)."
    )
    download_dir: Path = Field(description="Hub cache folder files are downloaded into.")
    max_repos: int = Field(100, ge=1, le=1000, description="Most recently changed repos read.")
    baseline: bool = Field(True, description="The first poll ever marks existing files known.")

    @model_validator(mode="after")
    def _narrowed(self) -> HuggingFaceWatcherConfig:
        if not (self.author or self.search or self.tags):
            msg = "a Hub watcher needs an author, a search or tags (the whole Hub is too much)"
            raise ValueError(msg)
        return self


WatcherConfig = Annotated[
    FolderWatcherConfig | OpenAIModelsWatcherConfig | HuggingFaceWatcherConfig,
    Field(discriminator="kind"),
]
"""One watcher's settings; a list of these configures every watcher."""


# -- helpers ----------------------------------------------------------------------------


def name_matcher(pattern: str, syntax: Literal["glob", "regex"]) -> Callable[[str], bool]:
    """A case-insensitive test of a name against a glob or a regular expression."""
    if syntax == "regex":
        compiled = re.compile(pattern, re.IGNORECASE)
        return lambda name: compiled.search(name) is not None
    lowered = pattern.lower()
    return lambda name: fnmatch.fnmatchcase(name.lower(), lowered)


def registry_model_name(text: str) -> str:
    """A registry model name made from ``text`` (a file stem, a repo id, a provider id)."""
    cleaned = _NOT_IN_NAME.sub("-", text).strip("-._")[:100]
    return cleaned or "model"


def release_id_for(watcher: str, key: str) -> str:
    """The release id of a detection: stable, so a retried hand-off can be deduplicated."""
    digest = hashlib.sha256(f"{watcher}\0{key}".encode()).hexdigest()
    return f"rel_{digest[:24]}"


# -- the runner -------------------------------------------------------------------------


@dataclass(slots=True)
class WatcherStats:
    """What one watcher has done since the runner started."""

    polls: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    detections: int = 0
    last_error: str | None = None
    last_poll_at: float | None = None


class WatcherRunner:
    """Polls each watcher on its interval and reports each new release once.

    ``jitter`` spreads polls by that fraction of the delay (several workers do not poll
    in step); after ``n`` failures in a row the next try waits
    ``min(retry_max_seconds, retry_base_seconds * 2**(n-1))``, jittered.
    """

    def __init__(
        self,
        watchers: Sequence[Watcher],
        ledger: DetectionRepository,
        on_detected: DetectionCallback,
        *,
        jitter: float = 0.1,
        retry_base_seconds: float = 10.0,
        retry_max_seconds: float = 900.0,
    ) -> None:
        names = [w.name for w in watchers]
        if len(set(names)) != len(names):
            msg = f"watcher names must be unique: {sorted(names)}"
            raise ValueError(msg)
        self._watchers = {w.name: w for w in watchers}
        self._ledger = ledger
        self._on_detected = on_detected
        self._jitter = jitter
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds
        self._random = random.Random()  # noqa: S311 - spreading polls, not security
        self._stats = {name: WatcherStats() for name in names}
        self._locks = {name: asyncio.Lock() for name in names}
        self._wakes = {name: asyncio.Event() for name in names}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def watchers(self) -> Mapping[str, Watcher]:
        """The watchers by name."""
        return dict(self._watchers)

    def stats(self) -> dict[str, WatcherStats]:
        """A copy of every watcher's counters."""
        return {name: replace(stats) for name, stats in self._stats.items()}

    async def start(self) -> None:
        """Start one polling loop per watcher (the first poll comes almost at once)."""
        if self._tasks:
            return
        for watcher in self._watchers.values():
            task = asyncio.create_task(self._loop(watcher), name=f"watcher:{watcher.name}")
            self._tasks.append(task)

    async def stop(self) -> None:
        """Stop the loops (a poll in flight is cancelled) and close the watchers."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for watcher in self._watchers.values():
            await watcher.close()

    def poll_soon(self, name: str) -> None:
        """Wake a watcher's loop for a poll now instead of at its next interval."""
        self._wakes[name].set()

    async def run_poll(
        self,
        watcher: Watcher,
        poll: Callable[[], Awaitable[list[Detection]]] | None = None,
    ) -> list[ReleaseDetected]:
        """Poll once (``poll`` instead of ``watcher.poll`` if given) and report what is new.

        Polls of one watcher never overlap. Errors propagate to the caller.
        """
        async with self._locks[watcher.name]:
            self._stats[watcher.name].polls += 1
            self._stats[watcher.name].last_poll_at = time.time()
            candidates = await (poll or watcher.poll)()
            if watcher.baseline and not await self._ledger.seen(watcher.name, BASELINE_KEY):
                await self._mark_known(watcher, candidates)
                return []
            reported = [await self._report(watcher, c) for c in candidates if c.ready]
            return [event for event in reported if event is not None]

    def record_error(self, name: str, error: BaseException) -> int:
        """Count and log a failed poll; returns how many failed in a row."""
        stats = self._stats[name]
        stats.errors += 1
        stats.consecutive_errors += 1
        stats.last_error = f"{type(error).__name__}: {error}"
        log.warning(
            "release watcher %s failed (%d in a row): %s",
            name,
            stats.consecutive_errors,
            stats.last_error,
        )
        return stats.consecutive_errors

    async def _loop(self, watcher: Watcher) -> None:
        delay = self._random.uniform(0, self._jitter * min(watcher.interval, 10.0))
        while True:
            await self._sleep_or_wake(watcher.name, delay)
            try:
                await self.run_poll(watcher)
            except Exception as exc:  # noqa: BLE001 - logged and counted; the loop goes on
                failures = self.record_error(watcher.name, exc)
                delay = self._jittered(min(self._retry_max, self._retry_base * 2 ** (failures - 1)))
            else:
                self._stats[watcher.name].consecutive_errors = 0
                delay = self._jittered(watcher.interval)

    async def _sleep_or_wake(self, name: str, delay: float) -> None:
        wake = self._wakes[name]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await wake.wait()
        wake.clear()

    def _jittered(self, delay: float) -> float:
        return delay * self._random.uniform(1 - self._jitter, 1 + self._jitter)

    async def _mark_known(self, watcher: Watcher, candidates: list[Detection]) -> None:
        # Claimed silently; the marker goes last, so a worker that polls meanwhile also
        # takes its first poll as a baseline instead of reporting what already existed.
        for candidate in candidates:
            await self._ledger.claim(watcher.name, candidate.key, {"baseline": True})
        await self._ledger.claim(watcher.name, BASELINE_KEY, {"known": len(candidates)})
        log.info(
            "release watcher %s: %d existing releases marked known", watcher.name, len(candidates)
        )

    async def _report(self, watcher: Watcher, candidate: Detection) -> ReleaseDetected | None:
        if await self._ledger.seen(watcher.name, candidate.key):
            return None
        detection = await watcher.fetch(candidate)
        event = ReleaseDetected(
            watcher=watcher.name,
            key=detection.key,
            source=detection.source,
            model=detection.model,
            uri=detection.uri,
            release_id=release_id_for(watcher.name, detection.key),
            metadata=detection.metadata,
        )
        payload = event.model_dump(mode="json", exclude={"id", "occurred_at", "watcher", "key"})
        if not await self._ledger.claim(watcher.name, detection.key, payload):
            return None  # another worker reported it meanwhile
        self._stats[watcher.name].detections += 1
        log.info("release watcher %s: new release %s (%s)", watcher.name, event.key, event.uri)
        try:
            await self._on_detected(event)
        except Exception:  # claimed already: retrying the poll cannot help
            log.exception("handing on release %s of watcher %s failed", event.key, watcher.name)
            self._stats[watcher.name].errors += 1
        return event


# -- a folder or bucket -----------------------------------------------------------------


class FolderWatcher:
    """New model files in a folder or bucket (anything fsspec opens).

    A file's key is its URL, size and version (etag, generation or modification time),
    so a file replaced in place is a new release. A file is reported once its size and
    version are unchanged across two polls, or at once when older than
    ``min_age_seconds``: a file still being written waits.
    """

    def __init__(
        self, config: FolderWatcherConfig, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = config.name
        self.interval = config.interval_seconds
        self.baseline = config.baseline
        self._config = config
        self._clock = clock
        self._fs, root = objectstore.url_to_fs(config.url, config.storage_options)
        self._glob = posixpath.join(root.rstrip("/"), config.pattern)
        self._local = "file" in _protocols(self._fs)
        self._previous: dict[str, str] = {}

    async def poll(self) -> list[Detection]:
        """Every matching file, ready or still settling."""
        listing = await asyncio.to_thread(self._fs.glob, self._glob, detail=True)
        now = self._clock()
        current: dict[str, str] = {}
        found: list[Detection] = []
        for path, info in sorted(listing.items()):
            if info.get("type", "file") != "file" or not info.get("size"):
                continue
            detection = self._detection(path, info)
            current[path] = detection.key
            modified = _modified_at(info)
            old = self._config.min_age_seconds
            aged = old is not None and modified is not None and now - modified >= old
            ready = aged or self._previous.get(path) == detection.key
            found.append(replace(detection, ready=ready))
        self._previous = current
        return found

    async def fetch(self, detection: Detection) -> Detection:
        """Nothing to fetch: the file is where the registry can read it."""
        return detection

    async def close(self) -> None:
        """Nothing to close."""

    def _detection(self, path: str, info: Mapping[str, Any]) -> Detection:
        uri = path if self._local else self._fs.unstrip_protocol(path)
        size = int(info["size"])
        version = _version_of(info)
        stem = posixpath.basename(path).rsplit(".", 1)[0]
        return Detection(
            key=f"{uri}|{size}|{version}",
            source="folder",
            model=self._config.model or registry_model_name(stem),
            uri=uri,
            metadata={
                "filename": posixpath.basename(path),
                "size": size,
                "file_version": version,
            },
        )


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _version_of(info: Mapping[str, Any]) -> str:
    # Object stores name a version (ETag, generation); a file system has a modified time.
    for name in (
        "ETag",
        "etag",
        "e_tag",
        "generation",
        "md5Hash",
        "mtime",
        "LastModified",
        "updated",
        "created",
    ):
        value = info.get(name)
        if value is not None:
            return str(value).strip('"')
    return "unversioned"


def _modified_at(info: Mapping[str, Any]) -> float | None:
    for name in ("mtime", "LastModified", "updated", "created"):
        value = info.get(name)
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


# -- an OpenAI-compatible provider ------------------------------------------------------


class _ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1)
    created: int | None = None
    owned_by: str | None = None


class _ModelList(BaseModel):
    model_config = ConfigDict(extra="allow")

    data: list[_ModelEntry]


class OpenAIModelsWatcher:
    """New model ids on an OpenAI-compatible provider's ``GET /v1/models``.

    The request goes through the SSRF guard (no private or loopback address unless the
    config allows private networks). A detection's ``uri`` is the provider's model id.
    """

    def __init__(
        self, config: OpenAIModelsWatcherConfig, *, client: httpx.AsyncClient | None = None
    ) -> None:
        self.name = config.name
        self.interval = config.interval_seconds
        self.baseline = config.baseline
        self._config = config
        self._url = config.base_url.rstrip("/") + "/models"
        self._matches = name_matcher(config.pattern, config.pattern_syntax)
        self._client = client or guarded_client(
            NetworkPolicy(allow_private=config.allow_private_network),
            timeout=config.timeout_seconds,
        )

    async def poll(self) -> list[Detection]:
        """The provider's model ids that match the pattern."""
        headers = {"Accept": "application/json"}
        if self._config.api_key is not None:
            headers["Authorization"] = f"Bearer {self._config.api_key.get_secret_value()}"
        response = await self._client.get(self._url, headers=headers)
        if response.status_code != 200:
            msg = f"{self._url} answered {response.status_code}"
            raise ReleaseSourceError(msg)
        try:
            listing = _ModelList.model_validate_json(response.content)
        except ValidationError:
            msg = f"{self._url} did not answer with a model list"
            raise ReleaseSourceError(msg) from None
        return [self._detection(entry) for entry in listing.data if self._matches(entry.id)]

    async def fetch(self, detection: Detection) -> Detection:
        """Nothing to fetch: the provider serves the model."""
        return detection

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    def _detection(self, entry: _ModelEntry) -> Detection:
        return Detection(
            key=entry.id,
            source="openai",
            model=self._config.model or registry_model_name(entry.id),
            uri=entry.id,
            metadata={
                "provider": self._config.base_url,
                "owned_by": entry.owned_by,
                "created": entry.created,
            },
        )
