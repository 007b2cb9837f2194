"""Hugging Face Hub releases: a polling watcher, and a receiver for the Hub's webhooks.

:class:`HuggingFaceWatcher` lists an author's (or a search's) model repositories through
``huggingface_hub`` and reports each matching file (``*.gguf``, optionally only some
quantizations) once per commit, downloading it into the Hub cache layout under the
configured folder. Every ``huggingface_hub`` call is blocking, so each runs in a thread.

:class:`HubWebhookReceiver` checks the ``X-Webhook-Secret`` a Hub webhook carries, parses
the documented payload and turns an update of a watched repository into an immediate
poll of that repository; :func:`hub_webhook_router` is its (public, secret-checked) route.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final, cast

from fastapi import APIRouter, Request, Response
from huggingface_hub import HfApi, ModelInfo, hf_hub_download
from huggingface_hub.utils.tqdm import silent_tqdm
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from atrium.core.errors import AuthenticationError
from atrium.core.http import json_response, parse_body
from atrium.releases.watchers import (
    Detection,
    FolderWatcher,
    FolderWatcherConfig,
    HuggingFaceWatcherConfig,
    OpenAIModelsWatcher,
    OpenAIModelsWatcherConfig,
    Watcher,
    WatcherConfig,
    WatcherRunner,
    name_matcher,
    registry_model_name,
)

__all__ = [
    "HubWebhookConfig",
    "HubWebhookPayload",
    "HubWebhookReceiver",
    "HuggingFaceWatcher",
    "WebhookOutcome",
    "build_watcher",
    "hub_webhook_router",
]

log = logging.getLogger("atrium.releases.hub")

# What a listing asks the Hub for: enough to match files and describe the release.
_EXPAND: Final = ["sha", "siblings", "lastModified", "cardData", "tags", "author"]
_QUANT: Final = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)(?![A-Za-z0-9])", re.IGNORECASE
)
_DEFAULT_BRANCH: Final = "refs/heads/main"


class HuggingFaceWatcher:
    """New model files in Hugging Face Hub repositories (a :class:`Watcher`).

    A detection's key is ``repo@commit/file``: a new commit of a watched file is a new
    release. Its ``uri`` is the downloaded file's path (in the Hub cache layout).
    """

    def __init__(self, config: HuggingFaceWatcherConfig, *, api: HfApi | None = None) -> None:
        self.name = config.name
        self.interval = config.interval_seconds
        self.baseline = config.baseline
        self._config = config
        # False, not None: never fall back to a token saved on this machine.
        self._token: str | bool = config.token.get_secret_value() if config.token else False
        self._api = api or HfApi(endpoint=config.endpoint, token=self._token)
        self._repo_matches = name_matcher(config.pattern, config.pattern_syntax)
        self._file_matches = name_matcher(config.file_pattern, "glob")

    def watches(self, repo_id: str) -> bool:
        """Whether ``repo_id`` (``author/name``) is one this watcher follows."""
        author, _, name = repo_id.rpartition("/")
        if self._config.author and author.lower() != self._config.author.lower():
            return False
        if self._config.search and self._config.search.lower() not in repo_id.lower():
            return False
        return self._repo_matches(repo_id if "/" in self._config.pattern else name)

    async def poll(self) -> list[Detection]:
        """Matching files of the most recently changed watched repositories."""
        repos = await asyncio.to_thread(self._list_repos)
        return [
            d for repo in repos if self.watches(repo.id) for d in self._files(repo, "huggingface")
        ]

    async def poll_repo(self, repo_id: str, revision: str | None = None) -> list[Detection]:
        """Matching files of one repository at ``revision`` (default: its main branch)."""
        info = await asyncio.to_thread(
            partial(self._api.model_info, repo_id, revision=revision, expand=_EXPAND)  # type: ignore[arg-type]
        )
        return self._files(info, "webhook")

    async def fetch(self, detection: Detection) -> Detection:
        """Download the file into the Hub cache under ``download_dir``; ``uri`` is its path."""
        meta = detection.metadata
        path = await asyncio.to_thread(
            partial(
                hf_hub_download,
                meta["repo_id"],
                meta["filename"],
                revision=meta["revision"],
                cache_dir=self._config.download_dir,
                endpoint=self._config.endpoint,
                token=self._token,
                tqdm_class=cast(Any, silent_tqdm),
            )
        )
        return Detection(
            key=detection.key,
            source=detection.source,
            model=detection.model,
            uri=path,
            metadata=meta,
        )

    async def close(self) -> None:
        """Nothing to close (``huggingface_hub`` keeps one shared HTTP session)."""

    def _list_repos(self) -> list[ModelInfo]:
        return list(
            self._api.list_models(
                author=self._config.author,
                search=self._config.search,
                filter=list(self._config.tags) or None,
                sort="last_modified",
                limit=self._config.max_repos,
                expand=_EXPAND,  # type: ignore[arg-type]
            )
        )

    def _files(self, repo: ModelInfo, source: str) -> list[Detection]:
        if not repo.sha:
            log.warning("Hub watcher %s: %s has no commit sha; skipped", self.name, repo.id)
            return []
        names = [s.rfilename for s in repo.siblings or []]
        return [self._detection(repo, name, source) for name in names if self._wanted(name)]

    def _wanted(self, filename: str) -> bool:
        if not self._file_matches(filename):
            return False
        wanted = {q.upper() for q in self._config.quantizations}
        return not wanted or _quantization(filename) in wanted

    def _detection(self, repo: ModelInfo, filename: str, source: str) -> Detection:
        metadata: dict[str, Any] = {
            "repo_id": repo.id,
            "revision": repo.sha,
            "filename": filename,
            "endpoint": self._config.endpoint,
            "last_modified": repo.last_modified.isoformat() if repo.last_modified else None,
            "tags": list(repo.tags or []),
            "license": _license(repo),
            "quantization": _quantization(filename),
        }
        return Detection(
            key=f"{repo.id}@{repo.sha}/{filename}",
            source=source,
            model=self._config.model or registry_model_name(repo.id.replace("/", "--")),
            uri=f"{self._config.endpoint.rstrip('/')}/{repo.id}/resolve/{repo.sha}/{filename}",
            metadata=metadata,
        )


def _quantization(filename: str) -> str | None:
    found = _QUANT.findall(filename.rsplit("/", 1)[-1])
    return found[-1].upper() if found else None


def _license(repo: ModelInfo) -> str | None:
    card = repo.card_data
    licence = getattr(card, "license", None) if card is not None else None
    if isinstance(licence, str):
        return licence
    tags = [t for t in repo.tags or [] if t.startswith("license:")]
    return tags[0].removeprefix("license:") if tags else None


def build_watcher(config: WatcherConfig) -> Watcher:
    """The watcher a config describes (one per kind)."""
    if isinstance(config, FolderWatcherConfig):
        return FolderWatcher(config)
    if isinstance(config, OpenAIModelsWatcherConfig):
        return OpenAIModelsWatcher(config)
    return HuggingFaceWatcher(config)


# -- webhooks ---------------------------------------------------------------------------


class HubWebhookConfig(BaseModel):
    """The Hub webhook receiver: the secret set on the Hub's webhook page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: SecretStr = Field(description="Compared with the X-Webhook-Secret header.")
    path: str = Field("/v1/webhooks/huggingface", pattern=r"^/")


class _WebhookEvent(BaseModel):
    action: str = Field(min_length=1)
    scope: str = Field(min_length=1)


class _WebhookRepo(BaseModel):
    type: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=200)
    head_sha: str | None = Field(None, alias="headSha")


class _UpdatedRef(BaseModel):
    ref: str
    new_sha: str | None = Field(None, alias="newSha")


class HubWebhookPayload(BaseModel):
    """The parts of the Hub's webhook payload (version 3) a release watcher reads."""

    model_config = ConfigDict(extra="ignore")

    event: _WebhookEvent
    repo: _WebhookRepo
    updated_refs: list[_UpdatedRef] | None = Field(None, alias="updatedRefs")

    def is_content_update(self) -> bool:
        """A model repository was created or got new commits on its main branch."""
        if self.repo.type != "model" or self.event.action not in {"create", "update", "move"}:
            return False
        if self.event.scope not in {"repo", "repo.content"}:
            return False
        refs = self.updated_refs or []
        return not refs or any(ref.ref == _DEFAULT_BRANCH for ref in refs)

    def revision(self) -> str | None:
        """The commit to look at: the main branch's new head when the payload says it."""
        for ref in self.updated_refs or []:
            if ref.ref == _DEFAULT_BRANCH and ref.new_sha:
                return ref.new_sha
        return self.repo.head_sha


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    """What a webhook led to: polls started by these watchers, or why none."""

    repo: str
    watchers: list[str] = field(default_factory=list)
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        """Whether a poll was started."""
        return bool(self.watchers)

    def as_dict(self) -> dict[str, Any]:
        """The JSON answer."""
        return {
            "accepted": self.accepted,
            "repo": self.repo,
            "watchers": self.watchers,
            "reason": self.reason,
        }


class HubWebhookReceiver:
    """Checks and parses Hub webhooks and polls the watched repository at once.

    The poll runs in the background (a Hub webhook wants a quick answer, a download can
    take minutes); its releases go through ``runner`` like any other, deduplicated.
    """

    def __init__(
        self,
        secret: SecretStr,
        runner: WatcherRunner,
        watchers: Iterable[HuggingFaceWatcher] | None = None,
    ) -> None:
        if not secret.get_secret_value():
            raise ValueError("a webhook secret must not be empty")
        self._secret = secret.get_secret_value().encode()
        self._runner = runner
        chosen = runner.watchers.values() if watchers is None else watchers
        self._watchers = [w for w in chosen if isinstance(w, HuggingFaceWatcher)]
        self._tasks: set[asyncio.Task[None]] = set()

    async def receive(self, secret: str | None, body: bytes) -> WebhookOutcome:
        """Verify, parse, start the polls; 401 for a wrong secret, 400 for a bad body."""
        self._verify(secret)
        payload = parse_body(HubWebhookPayload, body)
        repo = payload.repo.name
        if not payload.is_content_update():
            return WebhookOutcome(repo, reason="not a content update of a model repository")
        watchers = [w for w in self._watchers if w.watches(repo)]
        if not watchers:
            return WebhookOutcome(repo, reason="no watcher follows this repository")
        for watcher in watchers:
            self._spawn(watcher, repo, payload.revision())
        return WebhookOutcome(repo, watchers=[w.name for w in watchers])

    async def drain(self) -> None:
        """Wait for the polls started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Cancel the polls still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _verify(self, secret: str | None) -> None:
        if secret is None:
            raise AuthenticationError("missing X-Webhook-Secret header", code="invalid_secret")
        if not hmac.compare_digest(secret.encode(), self._secret):
            raise AuthenticationError("wrong X-Webhook-Secret", code="invalid_secret")

    def _spawn(self, watcher: HuggingFaceWatcher, repo: str, revision: str | None) -> None:
        task = asyncio.create_task(self._poll(watcher, repo, revision), name=f"hub-webhook:{repo}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _poll(self, watcher: HuggingFaceWatcher, repo: str, revision: str | None) -> None:
        try:
            await self._runner.run_poll(watcher, partial(watcher.poll_repo, repo, revision))
        except Exception as exc:  # noqa: BLE001 - logged and counted; the next poll retries
            self._runner.record_error(watcher.name, exc)


def hub_webhook_router(
    receiver: HubWebhookReceiver, *, path: str = "/v1/webhooks/huggingface"
) -> APIRouter:
    """``POST {path}``: public (the Hub sends no API key), checked by its secret instead.

    202 when a poll started, 200 when the event concerns nothing watched, 401 for a
    missing or wrong secret, 400 for a body that is not the Hub's payload.
    """
    router = APIRouter(tags=["releases"])

    @router.post(path)
    async def hub_webhook(request: Request) -> Response:
        outcome = await receiver.receive(
            request.headers.get("x-webhook-secret"), await request.body()
        )
        return json_response(outcome.as_dict(), status=202 if outcome.accepted else 200)

    return router
