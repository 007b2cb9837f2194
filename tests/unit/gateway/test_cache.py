"""The response cache: keys, the in-process LRU, JSON <-> stream conversions, recording."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from atrium.core.settings import CacheSettings
from atrium.gateway.cache import (
    MIB,
    CachedAnswer,
    InProcessResponseCache,
    StreamRecorder,
    build_response_cache,
    cache_key,
)
from atrium.runtime.schema import JSON, ChatCompletionRequest, CompletionRequest, Usage

# -- realistic OpenAI wire payloads ----------------------------------------------------

_CHAT_HEAD = {
    "id": "chatcmpl-9xK2",
    "object": "chat.completion.chunk",
    "created": 1718000000,
    "model": "smollm2-135m",
    "system_fingerprint": "fp_44709d6fcb",
}
_TEXT_HEAD = {
    "id": "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe",
    "object": "text_completion",
    "created": 1690759702,
    "model": "gpt-3.5-turbo-instruct",
}
USAGE = {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}


def chat_chunk(delta: JSON, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return orjson.dumps({**_CHAT_HEAD, "choices": [choice]})


def text_chunk(text: str, finish: str | None = None) -> bytes:
    choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
    return orjson.dumps({**_TEXT_HEAD, "choices": [choice]})


def usage_chunk(head: JSON) -> bytes:
    return orjson.dumps({**head, "choices": [], "usage": USAGE})


CHAT_STREAM = [
    chat_chunk({"role": "assistant", "content": ""}),
    chat_chunk({"content": "Hello"}),
    chat_chunk({"content": " there, how may I"}),
    chat_chunk({"content": " assist you today?"}),
    chat_chunk({}, "stop"),
    usage_chunk(_CHAT_HEAD),
]
TEXT_STREAM = [
    text_chunk("This"),
    text_chunk(" is a"),
    text_chunk(" test", None),
    text_chunk("", "length"),
    usage_chunk(_TEXT_HEAD),
]
CHAT_BODY: JSON = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1677652288,
    "model": "gpt-4o-mini",
    "system_fingerprint": "fp_44709d6fcb",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there, how may I assist you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": USAGE,
}


def recorded(payloads: list[bytes]) -> CachedAnswer:
    recorder = StreamRecorder()
    for payload in payloads:
        recorder.feed(payload)
    answer = recorder.answer()
    assert answer is not None
    return answer


# -- keys ------------------------------------------------------------------------------


def chat(**fields: Any) -> ChatCompletionRequest:
    body = {
        "model": "small",
        "messages": [{"role": "user", "content": "Name a prime."}],
        "temperature": 0,
        **fields,
    }
    return ChatCompletionRequest.model_validate_json(orjson.dumps(body))


def test_key_is_deterministic_and_a_sha256() -> None:
    key = cache_key("smollm2", chat())
    assert key == cache_key("smollm2", chat())
    assert key is not None
    assert len(key) == 64
    int(key, 16)


@pytest.mark.parametrize(
    "fields",
    [
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "someone-else"},
        {"model": "an-alias-of-smollm2"},
        {"stop": ["\n"]},  # vs "\n" in the base request below
        {"top_p": None},  # an explicit null asks what an absent field asks
    ],
)
def test_delivery_and_attribution_do_not_change_the_key(fields: JSON) -> None:
    base = chat(stop="\n")
    assert cache_key("smollm2", chat(**{"stop": "\n", **fields})) == cache_key("smollm2", base)


def test_json_field_order_does_not_change_the_key() -> None:
    one = b'{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}],"seed":1}'
    two = b'{"seed":1,"messages":[{"content":"hi","role":"user"}],"temperature":0.0,"model":"m"}'
    first = ChatCompletionRequest.model_validate_json(one)
    second = ChatCompletionRequest.model_validate_json(two)
    assert cache_key("m", first) == cache_key("m", second)


@pytest.mark.parametrize(
    "fields",
    [
        {"messages": [{"role": "user", "content": "Name two primes."}]},
        {
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "x"},
            ]
        },
        {"seed": 7},
        {"max_tokens": 5},
        {"max_completion_tokens": 5},
        {"top_p": 0.5},
        {"presence_penalty": 1.0},
        {"stop": "END"},
        {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"tool_choice": "none"},
        {"logit_bias": {"50256": -100}},  # unknown to the schema, yet it changes the answer
    ],
)
def test_what_changes_the_answer_changes_the_key(fields: JSON) -> None:
    assert cache_key("smollm2", chat(**fields)) != cache_key("smollm2", chat())


def test_model_scope_and_endpoint_change_the_key() -> None:
    request = chat()
    assert cache_key("smollm2", request) != cache_key("qwen", request)
    assert cache_key("smollm2", request, scope="team-a") != cache_key("smollm2", request)
    completion = CompletionRequest(model="small", prompt="Name a prime.", temperature=0)
    assert cache_key("smollm2", completion) not in {None, cache_key("smollm2", request)}


@pytest.mark.parametrize(
    "fields",
    [{"temperature": None}, {"temperature": 0.7}, {"temperature": 0, "n": 2}, {"seed": 3, "n": 2}],
)
def test_non_deterministic_requests_have_no_key(fields: JSON) -> None:
    assert cache_key("smollm2", chat(**fields)) is None


def test_a_seed_makes_a_sampled_request_cacheable() -> None:
    assert cache_key("smollm2", chat(temperature=0.7, seed=42)) is not None
    completion = CompletionRequest(model="m", prompt="Once", seed=42, temperature=1.0)
    assert cache_key("m", completion) is not None


# -- the in-process LRU ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def body_answer(text: str) -> CachedAnswer:
    body = orjson.loads(orjson.dumps(CHAT_BODY))
    body["choices"][0]["message"]["content"] = text
    return CachedAnswer.from_body(body)


async def test_a_hit_is_marked_replayed_and_the_stored_answer_is_not() -> None:
    cache = InProcessResponseCache()
    answer = body_answer("hi")
    await cache.put("k", answer, 60)
    hit = await cache.get("k")
    assert hit is not None
    assert hit.replayed
    assert not answer.replayed
    assert hit.as_json() == answer.as_json()
    assert await cache.get("other") is None


async def test_lru_evicts_the_least_recently_used_past_max_entries() -> None:
    cache = InProcessResponseCache(max_entries=2)
    await cache.put("a", body_answer("a"), 60)
    await cache.put("b", body_answer("b"), 60)
    assert await cache.get("a") is not None  # a is now the most recently used
    await cache.put("c", body_answer("c"), 60)
    assert len(cache) == 2
    assert await cache.get("b") is None
    assert await cache.get("a") is not None
    assert await cache.get("c") is not None


async def test_lru_evicts_past_max_bytes_and_skips_answers_too_big() -> None:
    size = body_answer("x" * 1000).size()
    cache = InProcessResponseCache(max_bytes=size * 2 + 10, max_entry_bytes=size + 10)
    for key in ("a", "b", "c"):
        await cache.put(key, body_answer(key * 1000), 60)
    assert len(cache) == 2
    assert cache.bytes == size * 2
    assert await cache.get("a") is None
    await cache.put("huge", body_answer("y" * 5000), 60)
    assert await cache.get("huge") is None
    assert len(cache) == 2


async def test_replacing_a_key_keeps_the_byte_count_exact() -> None:
    cache = InProcessResponseCache()
    await cache.put("k", body_answer("short"), 60)
    await cache.put("k", body_answer("a longer answer"), 60)
    assert len(cache) == 1
    assert cache.bytes == body_answer("a longer answer").size()
    await cache.close()
    assert (len(cache), cache.bytes) == (0, 0)


async def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = InProcessResponseCache(clock=clock)
    await cache.put("k", body_answer("hi"), 30)
    clock.now += 29.9
    assert await cache.get("k") is not None
    clock.now += 0.1
    assert await cache.get("k") is None
    assert (len(cache), cache.bytes) == (0, 0)
    await cache.put("k", body_answer("hi"), 0)  # no lifetime, nothing stored
    assert len(cache) == 0


# -- conversions -----------------------------------------------------------------------


def test_a_recorded_chat_stream_serves_as_json() -> None:
    answer = recorded(CHAT_STREAM)
    body = answer.as_json()
    assert body["object"] == "chat.completion"
    assert body["id"] == "chatcmpl-9xK2"
    assert body["created"] == 1718000000
    assert body["system_fingerprint"] == "fp_44709d6fcb"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello there, how may I assist you today?"},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == USAGE


def test_a_recorded_completion_stream_serves_as_json() -> None:
    body = recorded(TEXT_STREAM).as_json()
    assert body["object"] == "text_completion"
    assert body["choices"] == [
        {"index": 0, "text": "This is a test", "logprobs": None, "finish_reason": "length"}
    ]
    assert body["usage"] == USAGE


def test_a_chat_body_serves_as_a_stream_of_role_content_and_finish_chunks() -> None:
    answer = CachedAnswer.from_body(CHAT_BODY)
    chunks = [orjson.loads(e) for e in answer.as_events()]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello there, how may I assist you today?"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        ("chatcmpl-123", 1677652288, "gpt-4o-mini")
    }
    final = orjson.loads(answer.usage_chunk())
    assert final["choices"] == []
    assert final["usage"] == USAGE


@pytest.mark.parametrize("stream", [CHAT_STREAM, TEXT_STREAM])
def test_json_and_stream_forms_round_trip(stream: list[bytes]) -> None:
    from_stream = recorded(stream)
    body = from_stream.as_json()
    again = recorded([*CachedAnswer.from_body(body).as_events(), from_stream.usage_chunk()])
    assert again.as_json() == body
    assert again.usage == Usage(prompt_tokens=9, completion_tokens=12)


def test_streamed_tool_calls_are_reassembled() -> None:
    call = {"index": 0, "id": "call_abc", "type": "function"}
    stream = [
        chat_chunk(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{**call, "function": {"name": "get_weather", "arguments": ""}}],
            }
        ),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
        chat_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
        chat_chunk({}, "tool_calls"),
        usage_chunk(_CHAT_HEAD),
    ]
    message = recorded(stream).as_json()["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
    events = CachedAnswer.from_body({**CHAT_BODY, "choices": [choice]}).as_events()
    replayed = recorded([*events, usage_chunk(_CHAT_HEAD)])
    assert replayed.as_json()["choices"] == [choice]


async def test_replay_yields_backend_style_events_with_usage_last() -> None:
    events = [e async for e in CachedAnswer.from_body(CHAT_BODY).replay()]
    assert [e.usage_only for e in events] == [False, False, False, True]
    assert events[-1].usage == Usage(prompt_tokens=9, completion_tokens=12)
    assert all(e.more for e in events)  # from memory: the gateway sends them in one write


def test_as_json_hands_out_copies() -> None:
    answer = CachedAnswer.from_body(CHAT_BODY)
    answer.as_json()["choices"][0]["message"]["content"] = "changed"
    assert answer.as_json()["choices"][0]["message"]["content"].startswith("Hello")


@pytest.mark.parametrize("answer", [CachedAnswer.from_body(CHAT_BODY), recorded(CHAT_STREAM)])
def test_serialised_answers_read_back_equal(answer: CachedAnswer) -> None:
    assert CachedAnswer.from_bytes(answer.to_bytes()) == answer


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"v": 99}', b'{"v": 1, "body": null}'])
def test_foreign_values_do_not_read_as_answers(raw: bytes) -> None:
    with pytest.raises(ValueError, match="cached answer"):
        CachedAnswer.from_bytes(raw)


def test_an_answer_is_a_body_or_events() -> None:
    with pytest.raises(ValueError, match="either"):
        CachedAnswer()
    with pytest.raises(ValueError, match="either"):
        CachedAnswer(body=CHAT_BODY, events=(b"{}",))


# -- recording -------------------------------------------------------------------------


def test_the_recorder_keeps_chunks_without_the_usage_chunk() -> None:
    answer = recorded(CHAT_STREAM)
    assert answer.events == tuple(CHAT_STREAM[:-1])
    assert answer.usage == Usage(prompt_tokens=9, completion_tokens=12)
    assert answer.created == 1718000000
    assert not answer.replayed


@pytest.mark.parametrize(
    "payloads",
    [
        [],
        CHAT_STREAM[:4],  # cut off before finish_reason
        [*CHAT_STREAM[:3], b'{"error":{"message":"upstream failed","type":"server_error"}}'],
        [*CHAT_STREAM[:3], b"{not json", *CHAT_STREAM[4:]],
    ],
)
def test_the_recorder_ignores_incomplete_streams(payloads: list[bytes]) -> None:
    recorder = StreamRecorder()
    for payload in payloads:
        recorder.feed(payload)
    assert recorder.answer() is None


def test_the_recorder_gives_up_on_abandoned_or_oversized_streams() -> None:
    abandoned = StreamRecorder()
    for payload in CHAT_STREAM:
        abandoned.feed(payload)
    abandoned.abandon()
    assert abandoned.answer() is None
    small = StreamRecorder(max_bytes=200)
    for payload in CHAT_STREAM:
        small.feed(payload)
    assert small.answer() is None


# -- settings --------------------------------------------------------------------------


def test_settings_defaults_and_the_factory() -> None:
    settings = CacheSettings()
    assert settings.backend == "off"
    assert (settings.max_bytes, settings.max_entry_bytes) == (256 * MIB, 4 * MIB)
    assert build_response_cache(settings) is None
    cache = build_response_cache(CacheSettings(backend="inprocess"))
    assert isinstance(cache, InProcessResponseCache)
    with pytest.raises(ValueError, match="Redis client"):
        build_response_cache(CacheSettings(backend="redis"))
