"""Every bad request gets the right status and OpenAI's error JSON, and leaves no damage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

if TYPE_CHECKING:
    from conftest import RemoteAtriumServer, WaitUntil

pytestmark = pytest.mark.e2e

MAX_BODY_BYTES = 65_536
HI = [{"role": "user", "content": "Say hi"}]
GOOD_CHAT = {"model": "default", "messages": HI, "max_tokens": 1}


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """A small body limit, so that 413 is cheap to provoke."""
    return {"ATRIUM_SERVER__MAX_BODY_BYTES": str(MAX_BODY_BYTES)}


def assert_openai_error(
    resp: httpx.Response,
    status: int,
    *,
    type_: str,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """``resp`` is OpenAI's error JSON, exactly: ``{"error": {message, type, param, code}}``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["type"] == type_
    assert error["code"] == code
    assert error["param"] == param
    return error


def assert_still_serving(http: httpx.Client) -> None:
    """The server (on the same connection, where the client kept it) answers a good request."""
    resp = http.post("/v1/chat/completions", json=GOOD_CHAT)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["role"] == "assistant"


def iso_in(seconds: float) -> str:
    """An aware ISO 8601 time ``seconds`` from now."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


@pytest.fixture
def user_http(server: RemoteAtriumServer) -> Iterator[httpx.Client]:
    """A raw client with a fresh inference-only key."""
    with server.http(server.create_key()["key"]) as raw:
        yield raw


# -- bad bodies -----------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, bytes | dict[str, Any], int, str | None, str | None]] = [
    # (id, body, status, param, code)
    ("malformed-json", b'{"model": "default", "messages": [', 400, None, "invalid_json"),
    ("empty-body", b"", 400, None, "invalid_json"),
    ("not-an-object", b"[1, 2]", 400, None, None),
    ("temperature-text", {**GOOD_CHAT, "temperature": "hot"}, 400, "temperature", None),
    ("max-tokens-text", {**GOOD_CHAT, "max_tokens": "5"}, 400, "max_tokens", None),
    ("model-number", {**GOOD_CHAT, "model": 5}, 400, "model", None),
    ("messages-missing", {"model": "default"}, 400, "messages", None),
    ("messages-empty", {"model": "default", "messages": []}, 400, "messages", None),
    ("temperature-3", {**GOOD_CHAT, "temperature": 3}, 400, "temperature", None),
    ("top-p-2", {**GOOD_CHAT, "top_p": 2}, 400, "top_p", None),
    ("n-0", {**GOOD_CHAT, "n": 0}, 400, "n", None),
    ("max-tokens-0", {**GOOD_CHAT, "max_tokens": 0}, 400, "max_tokens", None),
    ("unknown-model", {**GOOD_CHAT, "model": "no-such-model"}, 404, "model", "model_not_found"),
]


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [case[1:] for case in BAD_BODIES],
    ids=[case[0] for case in BAD_BODIES],
)
def test_bad_chat_body_gets_openai_error_json(
    http: httpx.Client,
    body: bytes | dict[str, Any],
    status: int,
    param: str | None,
    code: str | None,
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    resp = http.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )

    assert_openai_error(resp, status, type_="invalid_request_error", code=code, param=param)
    assert resp.headers["x-request-id"]
    assert_still_serving(http)


CLIENT_BAD_ARGS: list[tuple[str, dict[str, Any], type[openai.APIStatusError], str | None]] = [
    ("temperature-text", {"temperature": "hot"}, openai.BadRequestError, "temperature"),
    ("max-tokens-text", {"max_tokens": "5"}, openai.BadRequestError, "max_tokens"),
    ("messages-empty", {"messages": []}, openai.BadRequestError, "messages"),
    ("temperature-3", {"temperature": 3}, openai.BadRequestError, "temperature"),
    ("top-p-2", {"top_p": 2}, openai.BadRequestError, "top_p"),
    ("n-0", {"n": 0}, openai.BadRequestError, "n"),
    ("max-tokens-0", {"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
    ("unknown-model", {"model": "no-such-model"}, openai.NotFoundError, "model"),
]


@pytest.mark.parametrize(
    ("overrides", "error", "param"),
    [case[1:] for case in CLIENT_BAD_ARGS],
    ids=[case[0] for case in CLIENT_BAD_ARGS],
)
def test_bad_chat_arguments_raise_the_openai_client_error(
    client: openai.OpenAI,
    overrides: dict[str, Any],
    error: type[openai.APIStatusError],
    param: str,
) -> None:
    args: dict[str, Any] = {**GOOD_CHAT, **overrides}

    with pytest.raises(error) as caught:
        client.chat.completions.create(**args)

    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert caught.value.response.headers["x-request-id"]
    if error is openai.NotFoundError:
        assert caught.value.code == "model_not_found"
    assert client.chat.completions.create(**GOOD_CHAT).choices


def test_missing_messages_via_the_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="default", messages=openai.omit)

    assert caught.value.param == "messages"


def test_embeddings_on_a_chat_model_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="default", input="hi")

    assert caught.value.code == "unsupported"
    assert caught.value.param == "model"


ODD_BUT_WELL_FORMED: list[tuple[str, str, dict[str, Any]]] = [
    # Bodies that pass schema validation: the answer may be 200 or a 4xx, never a 500.
    (
        "text-part-without-text",
        "/v1/chat/completions",
        {**GOOD_CHAT, "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    ),
    (
        "assistant-without-content",
        "/v1/chat/completions",
        {
            **GOOD_CHAT,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None},
                {"role": "user", "content": "hi again"},
            ],
        },
    ),
    (
        "tool-call-conversation",
        "/v1/chat/completions",
        {
            **GOOD_CHAT,
            "messages": [
                {"role": "user", "content": "What is 6 times 7?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
        },
    ),
    (
        "empty-prompt-in-a-list",
        "/v1/completions",
        {"model": "default", "prompt": ["", "Once upon a time"], "max_tokens": 1},
    ),
]


@pytest.mark.parametrize(
    ("path", "body"),
    [case[1:] for case in ODD_BUT_WELL_FORMED],
    ids=[case[0] for case in ODD_BUT_WELL_FORMED],
)
def test_well_formed_odd_input_is_never_a_500(
    server: RemoteAtriumServer, path: str, body: dict[str, Any]
) -> None:
    # Its own connection: after a 500 the server drops the connection it answered on.
    with server.http() as http:
        resp = http.post(path, json=body)

        assert resp.status_code < 500, resp.text
        if resp.status_code >= 400:
            error = resp.json()["error"]
            assert_openai_error(
                resp,
                resp.status_code,
                type_="invalid_request_error",
                code=error["code"],
                param=error["param"],
            )
        assert_still_serving(http)


# -- body size ------------------------------------------------------------------------------


def oversized_chat() -> bytes:
    """A well-formed chat request larger than the limit."""
    body = {**GOOD_CHAT, "messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1)}]}
    return json.dumps(body).encode()


def test_body_over_the_limit_by_content_length(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/chat/completions",
        content=oversized_chat(),
        headers={"content-type": "application/json"},
    )

    assert_openai_error(resp, 413, type_="invalid_request_error", code="request_too_large")
    assert resp.headers["x-request-id"]
    assert_still_serving(http)


def test_body_over_the_limit_when_chunked(http: httpx.Client) -> None:
    payload = oversized_chat()

    def chunks() -> Iterator[bytes]:
        # No Content-Length: httpx sends a generator with Transfer-Encoding: chunked.
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    resp = http.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )

    assert "content-length" not in resp.request.headers
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert_openai_error(resp, 413, type_="invalid_request_error", code="request_too_large")
    assert_still_serving(http)


def test_body_over_the_limit_via_the_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "x" * (MAX_BODY_BYTES + 1)}],
            max_tokens=1,
        )

    assert caught.value.status_code == 413
    assert caught.value.code == "request_too_large"


def test_body_just_under_the_limit_is_served(http: httpx.Client) -> None:
    body = {**GOOD_CHAT, "user": ""}
    body["user"] = "u" * (MAX_BODY_BYTES - len(json.dumps(body)))

    resp = http.post("/v1/chat/completions", content=json.dumps(body).encode())

    assert len(resp.request.content) == MAX_BODY_BYTES
    assert resp.status_code == 200, resp.text


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"]
)
@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_api_key"),
        ("Bearer atr-not-a-real-key-0000000000000000", "invalid_api_key"),
        ("Basic dXNlcjpwYXNz", "invalid_api_key"),
        ("Bearer", "invalid_api_key"),
    ],
    ids=["missing", "wrong", "not-bearer", "empty-bearer"],
)
def test_missing_or_wrong_key_is_401(
    server: RemoteAtriumServer, path: str, authorization: str | None, code: str
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    with server.http(api_key="") as raw:
        if path == "/v1/models":
            resp = raw.get(path, headers=headers)
        else:
            resp = raw.post(path, json=GOOD_CHAT, headers=headers)

    assert_openai_error(resp, 401, type_="authentication_error", code=code)


def test_wrong_key_via_the_client(server: RemoteAtriumServer) -> None:
    with server.get_client(api_key="atr-not-a-real-key-0000000000000000") as wrong:
        with pytest.raises(openai.AuthenticationError) as caught:
            wrong.chat.completions.create(**GOOD_CHAT)

    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "authentication_error"


def test_revoked_key_is_401(server: RemoteAtriumServer) -> None:
    created = server.create_key()
    with server.get_client(api_key=created["key"]) as user:
        assert user.chat.completions.create(**GOOD_CHAT).choices

        revoked = server.revoke_key(created["id"])

        assert revoked["revoked_at"] is not None
        with pytest.raises(openai.AuthenticationError) as caught:
            user.chat.completions.create(**GOOD_CHAT)
    assert caught.value.code == "revoked_api_key"


def test_expired_key_is_401(server: RemoteAtriumServer, wait_until: WaitUntil) -> None:
    created = server.create_key(expires_at=iso_in(3))
    with server.http(created["key"]) as user:
        assert user.get("/v1/models").status_code == 200

        wait_until(lambda: user.get("/v1/models").status_code == 401, timeout=30, what="key expiry")

        resp = user.post("/v1/chat/completions", json=GOOD_CHAT)
    assert_openai_error(resp, 401, type_="authentication_error", code="expired_api_key")


# -- authorization --------------------------------------------------------------------------


def test_key_limited_to_a_model(server: RemoteAtriumServer) -> None:
    created = server.create_key(allowed_models=["all-minilm-l6-v2"])
    with server.get_client(api_key=created["key"]) as user:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            user.chat.completions.create(**GOOD_CHAT)
        by_alias = user.embeddings.create(model="default-embedding", input="hi")
        listed = {m.id for m in user.models.list()}
        with pytest.raises(openai.NotFoundError):
            user.models.retrieve("default")

    assert caught.value.code == "model_not_allowed"
    assert caught.value.param == "model"
    assert caught.value.type == "permission_error"
    assert len(by_alias.data[0].embedding) == 384
    assert listed == {"all-minilm-l6-v2", "default-embedding"}


def test_key_without_the_inference_scope_is_403_on_inference(server: RemoteAtriumServer) -> None:
    created = server.create_key(scopes=["admin"])
    with server.http(created["key"]) as admin_only:
        chat = admin_only.post("/v1/chat/completions", json=GOOD_CHAT)
        embed = admin_only.post(
            "/v1/embeddings", json={"model": "default-embedding", "input": "hi"}
        )
        keys = admin_only.get("/v1/admin/keys")

    assert_openai_error(chat, 403, type_="permission_error", code="permission_denied")
    assert_openai_error(embed, 403, type_="permission_error", code="permission_denied")
    assert keys.status_code == 200


def test_inference_key_is_403_on_the_admin_api(
    server: RemoteAtriumServer, user_http: httpx.Client
) -> None:
    target = server.create_key()
    before = server.list_keys()

    listing = user_http.get("/v1/admin/keys")
    creating = user_http.post("/v1/admin/keys", json={"name": "sneaky", "scopes": ["admin"]})
    revoking = user_http.delete(f"/v1/admin/keys/{target['id']}")

    for resp in (listing, creating, revoking):
        assert_openai_error(resp, 403, type_="permission_error", code="permission_denied")
    assert server.list_keys() == before


def test_inference_key_via_the_client_is_403_on_admin(server: RemoteAtriumServer) -> None:
    with server.get_client(api_key=server.create_key()["key"]) as user:
        with pytest.raises(openai.PermissionDeniedError):
            user.get("/admin/keys", cast_to=object)


# -- rate limits ----------------------------------------------------------------------------


def test_rpm_limit_is_429_with_retry_after(server: RemoteAtriumServer) -> None:
    created = server.create_key(rpm=2)
    with server.get_client(api_key=created["key"]) as user:
        for _ in range(2):
            user.embeddings.create(model="default-embedding", input="hi")
        with pytest.raises(openai.RateLimitError) as caught:
            user.embeddings.create(model="default-embedding", input="hi")

    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_rpm_limit_raw_error_json(server: RemoteAtriumServer) -> None:
    created = server.create_key(rpm=2)
    body = {"model": "default-embedding", "input": "hi"}
    with server.http(created["key"]) as user:
        statuses = [user.post("/v1/embeddings", json=body).status_code for _ in range(2)]
        third = user.post("/v1/embeddings", json=body)

    assert statuses == [200, 200]
    assert_openai_error(third, 429, type_="rate_limit_error", code="rate_limit_exceeded")
    assert int(third.headers["retry-after"]) >= 1


def test_request_larger_than_the_tpm_limit_is_429(server: RemoteAtriumServer) -> None:
    created = server.create_key(tpm=10)
    with server.get_client(api_key=created["key"]) as user:
        with pytest.raises(openai.RateLimitError) as caught:
            user.chat.completions.create(model="default", messages=HI, max_tokens=16)

    assert caught.value.code == "rate_limit_exceeded"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_spent_tpm_budget_is_429(server: RemoteAtriumServer) -> None:
    # The first request fits the estimate, but really uses more (the chat template
    # counts too); the overdraft makes the next one wait.
    created = server.create_key(tpm=20)
    with server.get_client(api_key=created["key"]) as user:
        first = user.chat.completions.create(model="default", messages=HI, max_tokens=8)
        with pytest.raises(openai.RateLimitError) as caught:
            user.chat.completions.create(model="default", messages=HI, max_tokens=8)

    assert first.usage is not None
    assert first.usage.total_tokens > 20
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_tpm_counts_the_default_max_tokens_when_none_is_sent(server: RemoteAtriumServer) -> None:
    # Without max_tokens the model may generate its default (256 for the bundled one),
    # so a key allowed 100 tokens a minute must be refused up front, as it is when
    # max_tokens=256 is sent explicitly. (The stop keeps the answer short if it is not.)
    created = server.create_key(tpm=100)
    with server.get_client(api_key=created["key"]) as user:
        with pytest.raises(openai.RateLimitError):
            user.chat.completions.create(model="default", messages=HI, max_tokens=256)
        with pytest.raises(openai.RateLimitError):
            user.chat.completions.create(model="default", messages=HI, stop=[" "])


def test_refused_request_consumes_no_rpm(server: RemoteAtriumServer) -> None:
    # Both buckets are checked before either is debited.
    created = server.create_key(rpm=2, tpm=50)
    with server.http(created["key"]) as user:
        too_big = user.post(
            "/v1/embeddings", json={"model": "default-embedding", "input": "word " * 100}
        )
        small = [
            user.post(
                "/v1/embeddings", json={"model": "default-embedding", "input": "hi"}
            ).status_code
            for _ in range(3)
        ]

    assert_openai_error(too_big, 429, type_="rate_limit_error", code="rate_limit_exceeded")
    assert small == [200, 200, 429]


def test_rate_limits_are_per_key(server: RemoteAtriumServer, client: openai.OpenAI) -> None:
    created = server.create_key(rpm=1)
    with server.get_client(api_key=created["key"]) as user:
        user.embeddings.create(model="default-embedding", input="hi")
        with pytest.raises(openai.RateLimitError):
            user.embeddings.create(model="default-embedding", input="hi")

    assert client.embeddings.create(model="default-embedding", input="hi").data


# -- admin API: nothing half-written --------------------------------------------------------

BAD_KEY_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("rpm-0", {"name": "k", "rpm": 0}, "rpm"),
    ("tpm-negative", {"name": "k", "tpm": -5}, "tpm"),
    ("rpm-text", {"name": "k", "rpm": "5"}, "rpm"),
    ("unknown-scope", {"name": "k", "scopes": ["superuser"]}, "scopes.0"),
    ("no-scopes", {"name": "k", "scopes": []}, "scopes"),
    ("empty-name", {"name": ""}, "name"),
    ("blank-name", {"name": "   "}, "name"),
    ("missing-name", {"owner": "me"}, "name"),
    ("extra-field", {"name": "k", "is_superuser": True}, "is_superuser"),
    ("expiry-in-past", {"name": "k", "expires_at": "2020-01-01T00:00:00+00:00"}, "expires_at"),
    ("expiry-naive", {"name": "k", "expires_at": "2099-01-01T00:00:00"}, "expires_at"),
    ("empty-model-name", {"name": "k", "allowed_models": [""]}, "allowed_models"),
]


@pytest.mark.parametrize(
    ("fields", "param"),
    [case[1:] for case in BAD_KEY_FIELDS],
    ids=[case[0] for case in BAD_KEY_FIELDS],
)
def test_bad_key_fields_are_400_and_write_nothing(
    server: RemoteAtriumServer, http: httpx.Client, fields: dict[str, Any], param: str
) -> None:
    before = server.list_keys()

    resp = http.post("/v1/admin/keys", json=fields)

    assert_openai_error(resp, 400, type_="invalid_request_error", param=param)
    assert server.list_keys() == before


def test_malformed_admin_body_is_400(server: RemoteAtriumServer, http: httpx.Client) -> None:
    before = server.list_keys()

    resp = http.post(
        "/v1/admin/keys", content=b'{"name": ', headers={"content-type": "application/json"}
    )

    assert_openai_error(resp, 400, type_="invalid_request_error", code="invalid_json")
    assert server.list_keys() == before


def test_revoked_keys_can_be_left_out_of_the_list(server: RemoteAtriumServer) -> None:
    created = server.create_key()
    server.revoke_key(created["id"])

    with server.http() as http:
        active = http.get("/v1/admin/keys", params={"revoked": "false"}).json()["data"]
    everything = server.list_keys()

    assert created["id"] not in {k["id"] for k in active}
    listed = [k for k in everything if k["id"] == created["id"]]
    assert len(listed) == 1
    assert listed[0]["revoked_at"] is not None


def test_revoking_twice_keeps_the_first_time(server: RemoteAtriumServer) -> None:
    created = server.create_key()

    first = server.revoke_key(created["id"])
    second = server.revoke_key(created["id"])

    assert first["revoked_at"] is not None
    assert second["revoked_at"] == first["revoked_at"]


def test_unknown_key_id_is_404(http: httpx.Client) -> None:
    for resp in (http.get("/v1/admin/keys/nope"), http.delete("/v1/admin/keys/nope")):
        assert_openai_error(
            resp, 404, type_="invalid_request_error", code="not_found", param="key_id"
        )


def test_admin_api_does_not_return_secrets_after_creation(server: RemoteAtriumServer) -> None:
    created = server.create_key()

    listed = [k for k in server.list_keys() if k["id"] == created["id"]]

    assert len(listed) == 1
    assert "key" not in listed[0]
    assert created["key"] not in json.dumps(server.list_keys())
    assert created["key"].startswith(listed[0]["display_prefix"])


# -- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", [None, ""], ids=["key", "no-key"])
def test_unknown_route_is_404_json(server: RemoteAtriumServer, api_key: str | None) -> None:
    with server.http(api_key=api_key) as raw:
        resp = raw.get("/v1/no-such-thing")

    assert_openai_error(resp, 404, type_="invalid_request_error", code="unknown_route")


def test_wrong_method_is_405_json(http: httpx.Client) -> None:
    resp = http.get("/v1/chat/completions")

    assert resp.status_code == 405
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}


def test_unknown_model_via_the_client_on_every_endpoint(client: openai.OpenAI) -> None:
    calls = [
        lambda: client.chat.completions.create(model="nope", messages=HI, max_tokens=1),
        lambda: client.completions.create(model="nope", prompt="hi", max_tokens=1),
        lambda: client.embeddings.create(model="nope", input="hi"),
        lambda: client.models.retrieve("nope"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        assert caught.value.code == "model_not_found"
