"""Provider keys from the encrypted secret store: read at use, rotated live, never shown.

Anthropic and Gemini are the fakes speaking their APIs; the OpenAI-compatible
upstream is a loopback server that checks its bearer token the way OpenAI does.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from atrium.app import build_app, build_platform
from atrium.core.settings import Settings
from tests.integration.providers.fake_anthropic import FakeAnthropic
from tests.integration.providers.fake_gemini import FakeGemini
from tests.integration.providers.loopback import LoopbackServer

pytestmark = pytest.mark.integration

ADMIN = "atr-" + "v" * 40
ANTHROPIC_V1, ANTHROPIC_V2 = "sk-ant-stored-" + "1" * 24, "sk-ant-stored-" + "2" * 24
GEMINI_V1, GEMINI_V2 = "AIza-stored-" + "1" * 24, "AIza-stored-" + "2" * 24
OPENAI_V1, OPENAI_V2 = "sk-openai-stored-" + "1" * 24, "sk-openai-stored-" + "2" * 24
ALL_VALUES = (ANTHROPIC_V1, ANTHROPIC_V2, GEMINI_V1, GEMINI_V2, OPENAI_V1, OPENAI_V2)
SECRETS = {"claude": "anthropic-key", "gemini": "gemini-key", "upstream": "openai-key"}


@dataclass
class BearerUpstream:
    """An OpenAI-compatible upstream that answers only its current bearer token."""

    api_key: str

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                error = {"message": "Incorrect API key provided.", "type": "invalid_request_error"}
                return JSONResponse({"error": error}, status_code=401)
            return JSONResponse(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "up",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "ok"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )

        async def models(_: Request) -> Response:
            return JSONResponse({"object": "list", "data": []})

        return Starlette(
            routes=[
                Route("/v1/chat/completions", chat, methods=["POST"]),
                Route("/v1/models", models),
            ]
        )


@dataclass
class Fakes:
    anthropic: FakeAnthropic
    gemini: FakeGemini
    upstream: BearerUpstream


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Fakes]]:
    fakes = Fakes(FakeAnthropic(ANTHROPIC_V1), FakeGemini(GEMINI_V1), BearerUpstream(OPENAI_V1))
    with (
        LoopbackServer(fakes.anthropic.app) as anthropic_server,
        LoopbackServer(fakes.gemini.app) as gemini_server,
        LoopbackServer(fakes.upstream.app()) as upstream_server,
    ):
        models = {
            "claude": {
                "backend": "anthropic",
                "model": "claude-sonnet-4-6",
                "api_key_secret": SECRETS["claude"],
                "base_url": anthropic_server.url,
            },
            "gemini": {
                "backend": "gemini",
                "model": "gemini-2.5-flash",
                "api_key_secret": SECRETS["gemini"],
                "base_url": gemini_server.url,
            },
            "upstream": {
                "backend": "openai_compat",
                "base_url": upstream_server.url + "/v1",
                "api_key_secret": SECRETS["upstream"],
                "health_check_seconds": 0,
            },
        }
        settings = Settings.model_validate(
            {
                "data_dir": tmp_path,
                "auth": {"bootstrap_key": ADMIN},
                "models": models,
                "credential_refresh_seconds": 0,  # read at every call: rotation shows at once
            }
        )
        platform = build_platform(settings, announce_key=lambda _: None)
        await platform.start()
        transport = httpx.ASGITransport(build_app(settings, platform))
        try:
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://atrium",
                headers={"authorization": f"Bearer {ADMIN}"},
            ) as http:
                yield http, fakes
        finally:
            await platform.close()


async def _ask(http: httpx.AsyncClient, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    return await http.post("/v1/chat/completions", json=body)


async def _store(http: httpx.AsyncClient, values: dict[str, str]) -> None:
    for model, value in values.items():
        stored = await http.put(f"/v1/admin/secrets/{SECRETS[model]}", json={"value": value})
        assert stored.status_code == 200
        assert value not in stored.text


async def test_provider_keys_are_read_from_the_store_and_rotated_without_a_restart(
    gateway: tuple[httpx.AsyncClient, Fakes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    http, fakes = gateway
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    for model, secret in SECRETS.items():  # nothing stored yet: a 502 naming the secret
        missing = await _ask(http, model)
        assert missing.status_code == 502
        assert missing.json()["error"]["code"] == "upstream_credential_unavailable"
        assert secret in missing.json()["error"]["message"]

    await _store(http, {"claude": ANTHROPIC_V1, "gemini": GEMINI_V1, "upstream": OPENAI_V1})
    for model in SECRETS:
        answer = await _ask(http, model)
        assert answer.status_code == 200, answer.text
        seen.append(answer.text)

    fakes.anthropic.api_key, fakes.gemini.api_key = ANTHROPIC_V2, GEMINI_V2
    fakes.upstream.api_key = OPENAI_V2
    for model in SECRETS:  # the providers moved on; the old keys are refused
        stale = await _ask(http, model)
        assert stale.status_code in {401, 502}, stale.text
        seen.append(stale.text)
    await _store(http, {"claude": ANTHROPIC_V2, "gemini": GEMINI_V2, "upstream": OPENAI_V2})
    for model in SECRETS:
        rotated = await _ask(http, model)
        assert rotated.status_code == 200, rotated.text
        seen.append(rotated.text)

    for path in ("/v1/models", "/v1/admin/secrets", "/readyz", "/metrics", "/v1/admin/routes"):
        shown = await http.get(path)
        assert shown.status_code < 500
        seen.append(shown.text)
    assert sorted(SECRETS.values()) == [
        item["name"] for item in (await http.get("/v1/admin/secrets")).json()["data"]
    ]
    logged = [record.getMessage() for record in caplog.records]
    logged += [str(record.args) for record in caplog.records]
    at_rest = (tmp_path / "atrium.db").read_bytes()
    for value in ALL_VALUES:
        assert not [text for text in seen if value in text]
        assert not [line for line in logged if value in line]
        assert value.encode() not in at_rest


async def test_a_deleted_secret_stops_the_model(
    gateway: tuple[httpx.AsyncClient, Fakes],
) -> None:
    http, _ = gateway
    await _store(http, {"upstream": OPENAI_V1})
    assert (await _ask(http, "upstream")).status_code == 200
    deleted = await http.delete(f"/v1/admin/secrets/{SECRETS['upstream']}")
    assert deleted.status_code == 200
    refused = await _ask(http, "upstream")
    assert refused.status_code == 502
    assert refused.json()["error"]["code"] == "upstream_credential_unavailable"


def test_a_key_and_a_secret_name_are_exclusive() -> None:
    base = {"backend": "anthropic", "model": "claude-sonnet-4-6"}
    with pytest.raises(ValueError, match="api_key or api_key_secret"):
        Settings.model_validate({"models": {"c": base}})
    both = {**base, "api_key": "x", "api_key_secret": "anthropic-key"}
    with pytest.raises(ValueError, match="not both"):
        Settings.model_validate({"models": {"c": both}})
    with pytest.raises(ValueError, match="api_key_secret"):
        Settings.model_validate({"models": {"c": {**base, "api_key_secret": "no spaces"}}})
