"""``/metrics``, ``/healthz`` and ``/readyz`` of a running server."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import RemoteAtriumServer, WaitUntil

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2-135m"
HI = [{"role": "user", "content": "Say hi"}]


def scrape(http: httpx.Client) -> str:
    """The exposition text, read with the admin key."""
    resp = http.get("/metrics")
    assert resp.status_code == 200, resp.text
    return resp.text


def value(exposition: str, sample: str, **labels: str) -> float:
    """The sum of every ``sample`` whose labels include ``labels`` (0 when there is none)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == sample and labels.items() <= s.labels.items()
    )


def requests_total(http: httpx.Client, **labels: str) -> float:
    """``atrium_requests_total`` for these labels, now."""
    return value(scrape(http), "atrium_requests_total", **labels)


# -- access ---------------------------------------------------------------------------------


def test_metrics_need_a_key(server: RemoteAtriumServer) -> None:
    with server.http(api_key="") as anonymous:
        resp = anonymous.get("/metrics")

    assert resp.status_code == 401
    assert resp.json()["error"]["type"] == "authentication_error"


def test_metrics_need_an_admin_key(server: RemoteAtriumServer) -> None:
    with server.http(server.create_key()["key"]) as user:
        resp = user.get("/metrics")

    assert resp.status_code == 403
    assert resp.json()["error"]["type"] == "permission_error"


def test_metrics_with_the_admin_key(http: httpx.Client) -> None:
    resp = http.get("/metrics")

    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(resp.text)}
    assert {"atrium_requests", "atrium_tokens", "atrium_time_to_first_token_seconds"} <= names


# -- what they count ------------------------------------------------------------------------


def test_a_chat_is_counted_with_its_tokens(client: openai.OpenAI, http: httpx.Client) -> None:
    labels = {"model": CHAT_MODEL, "endpoint": "chat.completions", "status": "200"}
    before = scrape(http)

    resp = client.chat.completions.create(model="default", messages=HI, max_tokens=4)

    after = scrape(http)
    assert resp.usage is not None
    assert value(after, "atrium_requests_total", **labels) == (
        value(before, "atrium_requests_total", **labels) + 1
    )
    for direction, tokens in [
        ("prompt", resp.usage.prompt_tokens),
        ("completion", resp.usage.completion_tokens),
    ]:
        counted = {"model": CHAT_MODEL, "direction": direction}
        assert value(after, "atrium_tokens_total", **counted) == (
            value(before, "atrium_tokens_total", **counted) + tokens
        )
    assert value(after, "atrium_request_duration_seconds_count", **labels) == (
        value(before, "atrium_request_duration_seconds_count", **labels) + 1
    )


def test_a_streamed_chat_records_time_to_first_token(
    client: openai.OpenAI, http: httpx.Client, wait_until: WaitUntil
) -> None:
    ttft = {"model": CHAT_MODEL, "endpoint": "chat.completions"}
    done = {**ttft, "status": "200"}
    before = scrape(http)

    with client.chat.completions.create(
        model="default", messages=HI, max_tokens=4, stream=True
    ) as stream:
        assert list(stream)

    # The request is recorded when the stream closes, which may be just after [DONE].
    wait_until(
        lambda: requests_total(http, **done) == value(before, "atrium_requests_total", **done) + 1,
        timeout=10,
        what="the streamed request to be counted",
    )
    after = scrape(http)
    count = "atrium_time_to_first_token_seconds_count"
    assert value(after, count, **ttft) == value(before, count, **ttft) + 1
    buckets = [
        s
        for family in text_string_to_metric_families(after)
        for s in family.samples
        if s.name == "atrium_time_to_first_token_seconds_bucket" and s.labels["model"] == CHAT_MODEL
    ]
    assert buckets
    assert max(s.value for s in buckets) >= 1


def test_errors_are_counted_under_unknown_model(client: openai.OpenAI, http: httpx.Client) -> None:
    labels = {"model": "unknown", "endpoint": "chat.completions", "status": "404"}
    before = requests_total(http, **labels)

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="made-up-model-name", messages=HI, max_tokens=1)

    after = scrape(http)
    assert value(after, "atrium_requests_total", **labels) == before + 1
    assert "made-up-model-name" not in after


def test_in_flight_returns_to_zero_after_an_abandoned_stream(
    server: RemoteAtriumServer, http: httpx.Client, wait_until: WaitUntil
) -> None:
    body = {"model": "default", "messages": HI, "max_tokens": 16, "stream": True}
    with server.http() as raw, raw.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        next(resp.iter_lines())
        # Leaving the block closes the connection in the middle of the stream.

    wait_until(
        lambda: value(scrape(http), "atrium_requests_in_flight", model=CHAT_MODEL) == 0,
        timeout=30,
        what="the in-flight gauge to return to zero",
    )


def test_no_key_material_in_the_exposition(server: RemoteAtriumServer, http: httpx.Client) -> None:
    created = server.create_key()
    wrong = "atr-e2e-wrong-" + created["key"][-12:]
    with server.get_client(api_key=created["key"]) as user:
        user.embeddings.create(model="default-embedding", input="hi")
    with server.get_client(api_key=wrong) as impostor, pytest.raises(openai.AuthenticationError):
        impostor.embeddings.create(model="default-embedding", input="hi")
    bootstrap = next(k for k in server.list_keys() if k["name"] == "bootstrap admin")

    exposition = scrape(http)

    secrets = [server.api_key, created["key"], wrong]
    for secret in secrets:
        assert secret not in exposition
        assert secret[-12:] not in exposition
    for record in (bootstrap, created):
        assert record["display_prefix"] not in exposition
        assert record["id"] not in exposition
    assert server.api_key[:12] not in exposition


# -- probes ---------------------------------------------------------------------------------


def test_healthz_is_public(server: RemoteAtriumServer) -> None:
    with server.http(api_key="") as anonymous:
        resp = anonymous.get("/healthz")

    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz_is_public_and_lists_every_model(server: RemoteAtriumServer) -> None:
    with server.http(api_key="") as anonymous:
        resp = anonymous.get("/readyz")

    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready"
    assert body["store"] == "ok"
    assert set(body["models"]) == {CHAT_MODEL, "all-minilm-l6-v2"}
    assert all(model["ready"] for model in body["models"].values())
