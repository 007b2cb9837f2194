"""The OpenAI wire format, as the official client and raw HTTP see it from ``atrium serve``."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from openai.types import Completion, CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

if TYPE_CHECKING:
    from conftest import RemoteAtriumServer

pytestmark = pytest.mark.e2e

CHAT_MODEL = "smollm2-135m"
EMBEDDING_MODEL = "all-minilm-l6-v2"
HI = [{"role": "user", "content": "Say hi"}]
FINISH_REASONS = {"stop", "length"}
DIMENSIONS = 384


def assert_usage(usage: CompletionUsage | None, *, max_completion: int | None = None) -> None:
    """Usage is present, positive and adds up."""
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if max_completion is not None:
        assert usage.completion_tokens <= max_completion


def assert_chat_completion(resp: ChatCompletion, *, max_tokens: int) -> None:
    """One well-formed non-streamed chat completion."""
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == CHAT_MODEL
    assert resp.created > 0
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.message.content.strip()
    assert choice.finish_reason in FINISH_REASONS
    assert_usage(resp.usage, max_completion=max_tokens)


def sse_events(body: bytes) -> list[bytes]:
    """Split an SSE body into events; every event must end with a blank line."""
    assert body.endswith(b"\n\n"), body[-200:]
    return body[:-2].split(b"\n\n")


def sse_payloads(body: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body whose framing is exactly OpenAI's."""
    events = sse_events(body)
    assert events[-1] == b"data: [DONE]"
    payloads = []
    for event in events[:-1]:
        assert event.startswith(b"data: "), event
        assert b"\n" not in event, f"one data line per event: {event!r}"
        payloads.append(json.loads(event[len(b"data: ") :]))
    return payloads


def stream_chat(client: openai.OpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    """Every chunk of a streamed chat completion."""
    with client.chat.completions.create(stream=True, **kwargs) as stream:
        return list(stream)


def choice_chunks(chunks: list[ChatCompletionChunk]) -> Iterator[ChatCompletionChunk]:
    """The chunks that carry a choice (all but a final usage chunk)."""
    return (c for c in chunks if c.choices)


# -- chat completions -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["default", CHAT_MODEL])
def test_chat_completion_by_alias_and_canonical_name(client: openai.OpenAI, model: str) -> None:
    resp = client.chat.completions.create(model=model, messages=HI, max_tokens=8, temperature=0)

    assert_chat_completion(resp, max_tokens=8)


def test_chat_completion_raw_json_has_openai_fields(http: httpx.Client) -> None:
    resp = http.post(
        "/v1/chat/completions", json={"model": "default", "messages": HI, "max_tokens": 4}
    )

    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert {"id", "object", "created", "model", "choices", "usage"} <= body.keys()
    assert {"index", "message", "finish_reason"} <= body["choices"][0].keys()
    assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}


def test_chat_completion_accepts_text_content_parts(server: RemoteAtriumServer) -> None:
    # OpenAI accepts a message's content as a list of typed parts, not only a string.
    # (Its own client: should this fail with a 500, the connection it used is dropped.)
    with server.get_client() as own:
        resp = own.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}],
            max_tokens=8,
            temperature=0,
        )

    assert_chat_completion(resp, max_tokens=8)


def test_max_completion_tokens_bounds_the_answer(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=3,
        temperature=0,
    )

    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None
    assert resp.usage.completion_tokens == 3


def test_n_gives_that_many_choices(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="default", messages=HI, max_tokens=4, n=2, seed=1234
    )

    assert [c.index for c in resp.choices] == [0, 1]
    for choice in resp.choices:
        assert choice.message.role == "assistant"
        assert isinstance(choice.message.content, str)
        assert choice.finish_reason in FINISH_REASONS
    assert_usage(resp.usage, max_completion=2 * 4)


@pytest.mark.parametrize(
    "prompt",
    ["Say hi", "Write a haiku about the sea", "Tell me a fact about cats"],
)
def test_temperature_zero_with_seed_is_reproducible(client: openai.OpenAI, prompt: str) -> None:
    def answer() -> str | None:
        resp = client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=16,
            temperature=0,
            seed=7,
        )
        return resp.choices[0].message.content

    first, second = answer(), answer()

    assert first
    assert first == second


@pytest.mark.parametrize("stop", [" ", ["no-such-sequence", " "]])
def test_stop_ends_the_answer_before_the_sequence(
    client: openai.OpenAI, stop: str | list[str]
) -> None:
    # Any English answer of 16 tokens has a space, so the stop is sure to be hit.
    resp = client.chat.completions.create(
        model="default", messages=HI, max_tokens=16, temperature=0, stop=stop
    )

    choice = resp.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content is not None
    assert " " not in choice.message.content
    assert resp.usage is not None
    assert resp.usage.completion_tokens < 16


def _is_json_object_prefix(text: str) -> bool:
    """Whether ``text`` is the start of a JSON object: some short ending makes it parse."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    closers = "".join("}" if c == "{" else "]" for c in reversed(stack))
    reopen = (("n" if escaped else "") + '"') if in_string else ""
    fillers = ["", "0", "null", ": null", '"k": null', "e", "ue", "rue", "l", "ll", "ull", "se"]
    fillers += ["lse", "alse"]
    for filler in fillers:
        try:
            value = json.loads(text + reopen + filler + closers)
        except ValueError:
            continue
        return isinstance(value, dict)
    return False


def test_response_format_json_object_constrains_the_answer(client: openai.OpenAI) -> None:
    def ask(**kwargs: Any) -> tuple[str, str]:
        resp = client.chat.completions.create(
            model="default", messages=HI, max_tokens=24, temperature=0, **kwargs
        )
        content = resp.choices[0].message.content
        assert content is not None
        return content, resp.choices[0].finish_reason

    free_text, _ = ask()
    constrained, finish_reason = ask(response_format={"type": "json_object"})

    # The control shows that the grammar, not the prompt, makes the answer JSON.
    assert not free_text.lstrip().startswith("{")
    assert constrained.lstrip().startswith("{")
    # 24 tokens may end the object early; whatever came must still be valid JSON so far.
    assert _is_json_object_prefix(constrained), constrained
    if finish_reason == "stop":
        assert isinstance(json.loads(constrained), dict)


def test_response_format_json_schema_is_honoured_or_refused(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}}}
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "greeting", "schema": schema},
    }
    refusal: openai.BadRequestError | None = None
    content = ""
    try:
        resp = client.chat.completions.create(
            model="default",
            messages=HI,
            max_tokens=24,
            temperature=0,
            response_format=response_format,
        )
        content = resp.choices[0].message.content or ""
    except openai.BadRequestError as exc:
        refusal = exc

    # Refusing what the model cannot do is fine; silently ignoring it is not.
    if refusal is not None:
        assert refusal.code == "unsupported"
    else:
        assert _is_json_object_prefix(content), content


# -- streamed chat --------------------------------------------------------------------------


def test_stream_with_include_usage_ends_with_one_usage_chunk(client: openai.OpenAI) -> None:
    chunks = stream_chat(
        client,
        model="default",
        messages=HI,
        max_tokens=8,
        temperature=0,
        stream_options={"include_usage": True},
    )

    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {CHAT_MODEL}
    usage_chunks = [c for c in chunks if not c.choices]
    assert len(usage_chunks) == 1
    assert chunks[-1] is usage_chunks[0]
    assert_usage(chunks[-1].usage, max_completion=8)
    with_choices = list(choice_chunks(chunks))
    assert all(c.usage is None for c in with_choices)
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text.strip()
    assert with_choices[-1].choices[0].finish_reason in FINISH_REASONS
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = stream_chat(client, model="default", messages=HI, max_tokens=8, temperature=0)

    assert chunks
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
    assert chunks[-1].choices[0].finish_reason in FINISH_REASONS


@pytest.mark.parametrize("prompt", ["Say hi", "Écris une phrase en français avec des accents"])
def test_streamed_usage_counts_the_same_tokens_as_unstreamed(
    client: openai.OpenAI, prompt: str
) -> None:
    # Both answers run into max_tokens, so they generate exactly as many tokens.
    args: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
        "temperature": 0,
    }
    whole = client.chat.completions.create(**args)
    chunks = stream_chat(client, stream_options={"include_usage": True}, **args)

    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stream_with_n_2_keeps_one_id_and_both_indexes(client: openai.OpenAI) -> None:
    chunks = stream_chat(
        client,
        model="default",
        messages=HI,
        max_tokens=3,
        n=2,
        seed=1234,
        stream_options={"include_usage": True},
    )

    assert len({c.id for c in chunks}) == 1, "every chunk of one stream carries the same id"
    with_choices = list(choice_chunks(chunks))
    assert {c.choices[0].index for c in with_choices} == {0, 1}
    for index in (0, 1):
        last = [c for c in with_choices if c.choices[0].index == index][-1]
        assert last.choices[0].finish_reason in FINISH_REASONS


# -- completions ----------------------------------------------------------------------------


def assert_text_completion(resp: Completion, *, choices: int, max_tokens: int) -> None:
    """A well-formed non-streamed text completion with ``choices`` choices."""
    assert resp.object == "text_completion"
    assert resp.id.startswith("cmpl-")
    assert resp.model == CHAT_MODEL
    assert [c.index for c in resp.choices] == list(range(choices))
    for choice in resp.choices:
        assert choice.text
        assert choice.finish_reason in FINISH_REASONS
    assert_usage(resp.usage, max_completion=choices * max_tokens)


def test_completion(client: openai.OpenAI) -> None:
    resp = client.completions.create(
        model="default", prompt="Once upon a time", max_tokens=6, temperature=0
    )

    assert_text_completion(resp, choices=1, max_tokens=6)


def test_completion_with_a_list_of_prompts_gives_one_choice_each(client: openai.OpenAI) -> None:
    resp = client.completions.create(
        model=CHAT_MODEL,
        prompt=["Once upon a time", "The capital of France is"],
        max_tokens=4,
        temperature=0,
    )

    assert_text_completion(resp, choices=2, max_tokens=4)


def test_streamed_completion(client: openai.OpenAI) -> None:
    with client.completions.create(
        model="default",
        prompt="Once upon a time",
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        chunks = list(stream)

    assert {c.object for c in chunks} == {"text_completion"}
    assert len({c.id for c in chunks}) == 1
    with_choices = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in with_choices).strip()
    assert with_choices[-1].choices[0].finish_reason in FINISH_REASONS
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert not chunks[-1].choices
    assert_usage(chunks[-1].usage, max_completion=6)


# -- embeddings -----------------------------------------------------------------------------


def norm(vector: list[float]) -> float:
    """Euclidean length."""
    return math.sqrt(sum(x * x for x in vector))


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity."""
    return sum(x * y for x, y in zip(a, b, strict=True)) / (norm(a) * norm(b))


@pytest.mark.parametrize("encoding_format", [None, "float"])
@pytest.mark.parametrize("model", ["default-embedding", EMBEDDING_MODEL])
def test_embedding_of_one_input(
    client: openai.OpenAI, model: str, encoding_format: str | None
) -> None:
    # None: the client's default, which asks for base64 and decodes it.
    extra: dict[str, Any] = {"encoding_format": encoding_format} if encoding_format else {}
    resp = client.embeddings.create(model=model, input="The sea is calm tonight.", **extra)

    assert resp.object == "list"
    assert resp.model == EMBEDDING_MODEL
    assert len(resp.data) == 1
    item = resp.data[0]
    assert item.object == "embedding"
    assert item.index == 0
    assert len(item.embedding) == DIMENSIONS
    assert norm(item.embedding) == pytest.approx(1.0, abs=1e-3)
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens


def test_embeddings_wire_formats_carry_the_same_vector(http: httpx.Client) -> None:
    body = {"model": "default-embedding", "input": "The sea is calm tonight."}
    as_float = http.post("/v1/embeddings", json={**body, "encoding_format": "float"})
    as_base64 = http.post("/v1/embeddings", json={**body, "encoding_format": "base64"})

    vector = as_float.json()["data"][0]["embedding"]
    encoded = as_base64.json()["data"][0]["embedding"]
    assert isinstance(vector, list)
    assert all(isinstance(x, float) for x in vector)
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    assert len(raw) == DIMENSIONS * 4  # little-endian float32, as OpenAI sends it
    decoded = list(struct.unpack(f"<{DIMENSIONS}f", raw))
    assert decoded == pytest.approx(vector, abs=1e-6)


def test_batch_embeddings_keep_the_input_order(client: openai.OpenAI) -> None:
    texts = [
        "The cat sleeps on the warm windowsill.",
        "Quarterly revenue grew by eight percent.",
        "Mix flour, eggs and milk into a batter.",
    ]
    batch = client.embeddings.create(model="default-embedding", input=texts)
    singles = [
        client.embeddings.create(model="default-embedding", input=text).data[0].embedding
        for text in texts
    ]

    assert [item.index for item in batch.data] == [0, 1, 2]
    for position, item in enumerate(batch.data):
        assert len(item.embedding) == DIMENSIONS
        assert norm(item.embedding) == pytest.approx(1.0, abs=1e-3)
        similarities = [cosine(item.embedding, single) for single in singles]
        assert similarities[position] > 0.999
        assert max(range(len(texts)), key=similarities.__getitem__) == position
    assert batch.usage.prompt_tokens > 0


# -- models ---------------------------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    models = list(client.models.list())

    ids = [m.id for m in models]
    assert {CHAT_MODEL, "default", EMBEDDING_MODEL, "default-embedding"} <= set(ids)
    assert len(ids) == len(set(ids))
    for model in models:
        assert model.object == "model"
        assert model.created > 0
        assert model.owned_by


@pytest.mark.parametrize("name", [CHAT_MODEL, "default", EMBEDDING_MODEL, "default-embedding"])
def test_models_retrieve(client: openai.OpenAI, name: str) -> None:
    model = client.models.retrieve(name)

    assert model.id == name
    assert model.object == "model"
    assert model.owned_by


# -- raw HTTP: SSE framing and request ids --------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "default", "messages": HI, "max_tokens": 4}),
        (
            "/v1/chat/completions",
            {
                "model": "default",
                "messages": HI,
                "max_tokens": 4,
                "stream_options": {"include_usage": True},
            },
        ),
        ("/v1/completions", {"model": "default", "prompt": "Once upon a time", "max_tokens": 4}),
    ],
    ids=["chat", "chat-with-usage", "completions"],
)
def test_sse_framing(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    with http.stream("POST", path, json={**body, "stream": True}) as resp:
        raw = resp.read()

    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-request-id"]
    payloads = sse_payloads(raw)
    assert payloads
    include_usage = "stream_options" in body
    assert ("usage" in payloads[-1] and payloads[-1]["choices"] == []) is include_usage


REQUESTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/default", None),
    ("GET", "/v1/no-such-route", None),
    ("POST", "/v1/chat/completions", {"model": "default", "messages": HI, "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"model": "default", "messages": []}),
    ("POST", "/v1/chat/completions", {"model": "nope", "messages": HI}),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "default", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
    ),
    ("POST", "/v1/completions", {"model": "default", "prompt": "Hi", "max_tokens": 2}),
    ("POST", "/v1/embeddings", {"model": "default-embedding", "input": "hi"}),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
@pytest.mark.parametrize("authenticated", [True, False], ids=["key", "no-key"])
def test_every_response_has_a_request_id(
    server: RemoteAtriumServer,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    authenticated: bool,
) -> None:
    with server.http(api_key=None if authenticated else "") as raw:
        resp = raw.request(method, path, json=body)

    assert resp.headers.get("x-request-id"), (resp.status_code, resp.text)


def test_a_sane_incoming_request_id_is_echoed(http: httpx.Client) -> None:
    resp = http.get("/v1/models", headers={"x-request-id": "e2e-trace-42"})

    assert resp.headers["x-request-id"] == "e2e-trace-42"


@pytest.mark.parametrize("incoming", ["x" * 129, "caf\u00e9", "tab\there"])
def test_an_unsafe_incoming_request_id_is_replaced(http: httpx.Client, incoming: str) -> None:
    resp = http.get("/v1/models", headers={"x-request-id": incoming.encode("utf-8")})

    assert resp.headers["x-request-id"]
    assert resp.headers["x-request-id"] != incoming
