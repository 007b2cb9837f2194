"""A/B experiments through the real gateway: two real arms of the bundled model, a sticky
split by user, metrics per arm from the gateway's events, feedback, a verdict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from atrium.app import build_app, build_platform
from atrium.core.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "atr-" + "x" * 40
HEADERS = {"authorization": f"Bearer {KEY}"}
SMALL = {"requests": 10, "latencies": 5, "feedback": 5}


@pytest_asyncio.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, openai.AsyncOpenAI]]:
    arm: dict[str, Any] = {"backend": "llamacpp", "n_ctx": 512, "stream_interval_ms": 0}
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path,
            "auth": {"bootstrap_key": KEY},
            "models": {"arm-a": arm, "arm-b": arm},
            "workflows": {"enabled": False},
        }
    )
    platform = build_platform(settings, announce_key=lambda _: None)
    app = build_app(settings, platform)
    await platform.start()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://atrium")
    client = openai.AsyncOpenAI(
        base_url="http://atrium/v1", api_key=KEY, http_client=http, max_retries=0
    )
    try:
        yield http, client
    finally:
        await http.aclose()
        await platform.close()


async def test_a_sticky_split_with_per_arm_numbers_and_a_verdict(
    gateway: tuple[httpx.AsyncClient, openai.AsyncOpenAI],
) -> None:
    http, client = gateway
    body = {"name": "exp", "a": "arm-a", "b": "arm-b", "split": 50, "minimums": SMALL}
    created = await http.post("/v1/experiments", json=body, headers=HEADERS)
    assert created.status_code == 201, created.text
    arms: dict[str, str] = {}
    for round_ in range(2):
        for user in range(16):
            raw = await client.chat.completions.with_raw_response.create(
                model="exp",
                messages=[{"role": "user", "content": "Say yes."}],
                max_tokens=2,
                temperature=0,
                user=f"user-{user}",
            )
            served = raw.headers["x-atrium-served-by"]
            if round_ == 1:
                assert arms[f"user-{user}"] == served  # sticky: the same arm again
            arms[f"user-{user}"] = served
    assert set(arms.values()) == {"arm-a", "arm-b"}
    for user, arm in arms.items():
        rating = "up" if arm == "arm-a" else "down"
        answer = await http.post(
            "/v1/experiments/exp/feedback", json={"user": user, "rating": rating}, headers=HEADERS
        )
        assert answer.status_code == 202, answer.text
        assert answer.json()["arm"] == arm  # feedback lands on the user's arm
    shown = await until_counted(http, len(arms))
    counts = {a["arm"]: a["requests"] for a in shown["arms"]}
    assert sum(counts.values()) == 32
    assert counts["arm-a"] == 2 * sum(1 for a in arms.values() if a == "arm-a")
    verdict = shown["verdict"]
    assert verdict["feedback"]["significant"] is True
    assert verdict["winner"] == "arm-a"
    assert "feedback" in verdict["text"]
    stopped = await http.post("/v1/experiments/exp/stop", json={}, headers=HEADERS)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "concluded"
    assert stopped.json()["verdict"]["kept"] == "arm-a"
    raw = await client.chat.completions.with_raw_response.create(
        model="exp", messages=[{"role": "user", "content": "Hi"}], max_tokens=2, user="user-1"
    )
    assert raw.headers["x-atrium-served-by"] == "arm-a"
    assert raw.headers["x-atrium-routed-to"] == "arm-a"  # the arm feedback is counted against
    again = await http.post("/v1/experiments/exp/stop", json={}, headers=HEADERS)
    assert again.status_code == 409


async def until_counted(http: httpx.AsyncClient, users: int) -> dict[str, Any]:
    """Events are consumed off the request path: wait until every one is counted."""
    for _ in range(100):
        shown = (await http.get("/v1/experiments/exp", headers=HEADERS)).json()
        arms = shown["arms"]
        votes = sum(a["feedback_up"] + a["feedback_down"] for a in arms)
        if sum(a["requests"] for a in arms) == 2 * users and votes == users:
            return dict(shown)
        await asyncio.sleep(0.1)
    raise AssertionError(f"not every event was counted: {shown}")


async def test_bad_experiments_are_refused(
    gateway: tuple[httpx.AsyncClient, openai.AsyncOpenAI],
) -> None:
    http, _ = gateway
    same = {"name": "exp2", "a": "arm-a", "b": "arm-a"}
    response = await http.post("/v1/experiments", json=same, headers=HEADERS)
    assert response.status_code == 400
    assert "must be different" in response.json()["error"]["message"]
    unknown = {"name": "exp3", "a": "arm-a", "b": "nope"}
    response = await http.post("/v1/experiments", json=unknown, headers=HEADERS)
    assert response.status_code == 400
    assert "'nope' is not a configured model" in response.json()["error"]["message"]
    response = await http.get("/v1/experiments/none", headers=HEADERS)
    assert response.status_code == 404
    bad_vote = {"user": "u", "rating": "sideways"}
    response = await http.post("/v1/experiments/none/feedback", json=bad_vote, headers=HEADERS)
    assert response.status_code == 400


async def test_feedback_for_the_model_that_answered(
    gateway: tuple[httpx.AsyncClient, openai.AsyncOpenAI],
) -> None:
    http, _ = gateway
    rated = await http.post(
        "/v1/feedback", json={"model": "arm-b", "rating": "down"}, headers=HEADERS
    )
    assert rated.status_code == 202
    assert rated.json() == {"model": "arm-b", "rating": "down"}
    unknown = await http.post(
        "/v1/feedback", json={"model": "nope", "rating": "up"}, headers=HEADERS
    )
    assert unknown.status_code == 404
    bad = await http.post("/v1/feedback", json={"model": "arm-b", "rating": 5}, headers=HEADERS)
    assert bad.status_code == 400
    anonymous = await http.post("/v1/feedback", json={"model": "arm-b", "rating": "up"})
    assert anonymous.status_code == 401
