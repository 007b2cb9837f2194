"""The Agent block: a scripted ModelCaller, real loopback HTTP and MCP servers, real blocks."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer
from mcp.server import MCPServer
from pydantic import ValidationError

from atrium.core.errors import NotFoundError
from atrium.core.netguard import BlockedDestinationError, NetworkPolicy
from atrium.workflows.blocks.agent import AgentBlock, decoding_schema, step_schema
from atrium.workflows.blocks.agent_tools import QUERY_SCHEMA, guarded_mcp_client
from atrium.workflows.blocks.base import BlockContext, BlockError, BlockRegistry
from atrium.workflows.blocks.library import default_blocks
from tests.unit.workflows.block_doubles import (
    LOOPBACK_POLICY,
    MemorySecrets,
    ScriptedModels,
    StaticKnowledge,
    completion,
    make_context,
    make_services,
    run_block,
)

SECRET = "sk-agent-secret"
PASSAGES = [
    {"chunk_id": "c1", "document_id": "d1", "title": "Leave", "text": "Leave is 25 days."},
    {"chunk_id": "c2", "document_id": "d1", "title": "Leave", "text": "Carry over 5 days."},
]
KB_TOOL = {
    "kind": "knowledge_base",
    "name": "handbook",
    "description": "Search the staff handbook.",
    "knowledge_base": "hr",
    "top_k": 2,
}


def step(
    action: str, args: dict[str, Any] | None = None, answer: str = "", thought: str = ""
) -> str:
    """One JSON step as the model writes it."""
    return json.dumps({"thought": thought, "action": action, "args": args or {}, "answer": answer})


def agent() -> AgentBlock:
    """The agent as the default library builds it (block tools can reach the others)."""
    block = BlockRegistry(default_blocks()).get("agent")
    assert isinstance(block, AgentBlock)
    return block


def context(
    tmp_path: Path,
    models: Any,
    *,
    knowledge: StaticKnowledge | None = None,
    policy: NetworkPolicy = LOOPBACK_POLICY,
) -> BlockContext:
    services = make_services(
        tmp_path,
        models=models,
        knowledge=knowledge,
        secrets=MemorySecrets({"api_token": SECRET}),
        policy=policy,
    )
    return make_context(services)


# -- servers --------------------------------------------------------------------------


class Api:
    """A small search API that records what it was sent and echoes the token back."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_get("/search", self.search)
        self.app.router.add_post("/items", self.items)

    async def search(self, request: web.Request) -> web.Response:
        self.requests.append({"query": dict(request.query), "headers": dict(request.headers)})
        token = request.headers.get("Authorization", "")
        return web.json_response({"results": [f"about {request.query['s']}"], "echo": token})

    async def items(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"body": body, "headers": dict(request.headers)})
        return web.json_response({"created": body}, status=201)


@pytest.fixture
async def api() -> AsyncIterator[tuple[Api, BaseTestServer]]:
    """The API on a free port of 127.0.0.1."""
    target = Api()
    async with TestServer(target.app, host="127.0.0.1") as server:
        yield target, server


def build_mcp_server() -> MCPServer:
    """An MCP server with one tool, as a real one would declare it."""
    server = MCPServer("weather")

    @server.tool()
    def forecast(city: str, days: int = 1) -> str:
        """The weather forecast for a city."""
        return f"{city}: sunny for {days} day(s)"

    @server.tool()
    async def slow(city: str) -> str:
        """Answers too late."""
        await asyncio.sleep(10)
        return city

    @server.tool()
    def broken(city: str) -> str:
        """Always fails."""
        msg = f"no data for {city}"
        raise ValueError(msg)

    return server


@pytest.fixture
async def mcp_url() -> AsyncIterator[str]:
    """The MCP server over Streamable HTTP (uvicorn, in this process) on 127.0.0.1."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = build_mcp_server().streamable_http_app()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110 - uvicorn offers a flag, not an event
            await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    await task
    sock.close()


# -- the loop -------------------------------------------------------------------------


async def test_a_final_answer_at_the_first_step(tmp_path: Path) -> None:
    models = ScriptedModels(step("final_answer", answer="Paris.", thought="I know this."))
    ctx = context(tmp_path, models)
    config = {"instructions": "You are {{ vars.role | default('helpful') }}.", "tools": [KB_TOOL]}
    result = await run_block(agent(), config, ctx, {"task": "Capital of France?"})
    assert result.outputs["answer"] == "Paris."
    assert result.outputs["citations"] == []
    assert result.outputs["steps"] == [
        {
            "step": 1,
            "thought": "I know this.",
            "action": "final_answer",
            "args": {},
            "observation": "",
        }
    ]
    assert result.tokens == 10
    body = models.bodies[0]
    # Decoding is constrained to the exact form; the prompt shows the flat step schema.
    decoding = body["response_format"]["json_schema"]["schema"]
    assert decoding == decoding_schema({"handbook": QUERY_SCHEMA})
    assert [branch["properties"]["action"]["const"] for branch in decoding["anyOf"]] == [
        "handbook",
        "final_answer",
    ]
    assert json.dumps(step_schema(["handbook"])) in models.user_message(0)
    system = body["messages"][0]["content"]
    assert system.startswith("You are helpful.")
    assert "- handbook: Search the staff handbook." in system
    assert '"query"' in system
    prompt = models.user_message(0)
    assert prompt.startswith("Task: Capital of France?")
    assert "Steps so far: none." in prompt
    assert "You have 6 steps left" in prompt


async def test_a_knowledge_base_search_then_an_answer_with_citations(tmp_path: Path) -> None:
    knowledge = StaticKnowledge(PASSAGES)
    models = ScriptedModels(
        step("handbook", {"query": "annual leave"}, thought="Search first."),
        step("handbook", {"query": "carry over"}),
        step("final_answer", answer="25 days, 5 carried over [1][2]."),
    )
    ctx = context(tmp_path, models, knowledge=knowledge)
    inputs = {"task": "How much leave?", "context": {"employee": "Ada"}}
    result = await run_block(agent(), {"tools": [KB_TOOL]}, ctx, inputs)
    assert result.outputs["answer"] == "25 days, 5 carried over [1][2]."
    assert knowledge.calls[0] == {
        "key_id": "key-1",
        "kb": "hr",
        "query": "annual leave",
        "top_k": 2,
        "filters": None,
    }
    # The same passages twice: cited once each, with the numbers the model saw.
    citations = result.outputs["citations"]
    assert [(c["chunk_id"], c["number"], c["knowledge_base"]) for c in citations] == [
        ("c1", 1, "hr"),
        ("c2", 2, "hr"),
    ]
    second_prompt = models.user_message(1)
    assert '"employee": "Ada"' in second_prompt
    assert "Step 1\nThought: Search first.\nAction: handbook" in second_prompt
    assert "[1] (Leave) Leave is 25 days.\n\n[2] (Leave) Carry over 5 days." in second_prompt
    assert result.outputs["steps"][0]["observation"].startswith("[1] (Leave) Leave is 25 days.")
    assert result.tokens == 30


async def test_an_http_tool_renders_its_url_from_the_arguments(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    tool = {
        "kind": "http",
        "name": "web",
        "description": "Search the web.",
        "url": str(server.make_url("/search")) + "?s={{ args.q | urlencode }}",
        "secret_headers": {"Authorization": "api_token"},
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    models = ScriptedModels(step("web", {"q": "a&b c"}), step("final_answer", answer="Done."))
    result = await run_block(agent(), {"tools": [tool]}, context(tmp_path, models), {"task": "t"})
    assert result.outputs["answer"] == "Done."
    seen = target.requests[0]
    assert seen["query"] == {"s": "a&b c"}
    assert seen["headers"]["Authorization"] == SECRET
    assert seen["headers"]["Idempotency-Key"] == "run-1:node-1:1"
    observation = result.outputs["steps"][0]["observation"]
    assert observation.startswith("HTTP 200\n")
    assert "about a&b c" in observation
    assert SECRET not in json.dumps(models.bodies)  # the echoed token was redacted
    assert "[redacted]" in models.user_message(1)


async def test_an_http_post_tool_sends_the_arguments_as_json(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    tool = {
        "kind": "http",
        "name": "create",
        "description": "Create an item.",
        "method": "POST",
        "url": str(server.make_url("/items")),
    }
    models = ScriptedModels(step("create", {"title": "x"}), step("final_answer", answer="ok"))
    result = await run_block(agent(), {"tools": [tool]}, context(tmp_path, models), {"task": "t"})
    assert target.requests[0]["body"] == {"title": "x"}
    assert result.outputs["steps"][0]["observation"] == 'HTTP 201\n{"created": {"title": "x"}}'


async def test_an_http_tool_to_cloud_metadata_is_refused_as_an_observation(
    tmp_path: Path,
) -> None:
    tool = {
        "kind": "http",
        "name": "fetch",
        "description": "Fetch a page.",
        "url": "http://169.254.169.254/latest/meta-data/{{ args.path }}",
    }
    models = ScriptedModels(
        step("fetch", {"path": "iam"}), step("final_answer", answer="I could not fetch it.")
    )
    ctx = context(tmp_path, models, policy=NetworkPolicy(allow_private=True))
    result = await run_block(agent(), {"tools": [tool]}, ctx, {"task": "t"})
    observation = result.outputs["steps"][0]["observation"]
    assert observation.startswith("error: refused to connect to 169.254.169.254")
    assert "cloud metadata" in observation
    assert result.outputs["answer"] == "I could not fetch it."


async def test_a_block_tool_runs_the_block_with_the_arguments(tmp_path: Path) -> None:
    tool = {
        "kind": "block",
        "name": "total",
        "description": "Add numbers up.",
        "block": {"type": "transform", "config": {"expressions": {"sum": "sum(data.values)"}}},
        "parameters": {
            "type": "object",
            "properties": {"values": {"type": "array", "items": {"type": "number"}}},
            "required": ["values"],
        },
    }
    models = ScriptedModels(
        step("total", {"values": [1, 2, 3.5]}), step("final_answer", answer="6.5")
    )
    result = await run_block(agent(), {"tools": [tool]}, context(tmp_path, models), {"task": "t"})
    assert result.outputs["steps"][0]["observation"] == '{"sum": 6.5}'
    assert result.outputs["answer"] == "6.5"


async def test_a_block_tool_without_a_data_port_takes_its_inputs_by_name(
    tmp_path: Path,
) -> None:
    tool = {
        "kind": "block",
        "name": "search",
        "description": "Retrieve passages.",
        "block": {"type": "retrieve", "config": {"knowledge_base": "hr", "top_k": 1}},
    }
    models = ScriptedModels(
        step("search", {"query": "leave"}),
        step("search", {"q": "leave"}),
        step("final_answer", answer="25"),
    )
    ctx = context(tmp_path, models, knowledge=StaticKnowledge(PASSAGES))
    result = await run_block(agent(), {"tools": [tool]}, ctx, {"task": "t"})
    first, second = (s["observation"] for s in result.outputs["steps"][:2])
    assert json.loads(first)["context"] == "[1] Leave is 25 days."
    assert second == "error: search takes query, not q"


async def test_an_unknown_tool_is_fed_back_and_the_model_recovers(tmp_path: Path) -> None:
    knowledge = StaticKnowledge(PASSAGES)
    models = ScriptedModels(
        step("web_search", {"query": "leave"}),
        step("handbook", {"query": "leave"}),
        step("final_answer", answer="25 days [1]."),
    )
    ctx = context(tmp_path, models, knowledge=knowledge)
    config = {"tools": [KB_TOOL], "repair_attempts": 0}
    result = await run_block(agent(), config, ctx, {"task": "Leave?"})
    assert result.outputs["answer"] == "25 days [1]."
    first = result.outputs["steps"][0]
    assert first["action"] == "invalid"
    assert "'web_search' is not one of ['handbook', 'final_answer']" in first["observation"]
    assert "'web_search' is not one of" in models.user_message(1)
    assert len(knowledge.calls) == 1


async def test_an_unknown_tool_is_repaired_within_the_step(tmp_path: Path) -> None:
    models = ScriptedModels(
        step("web_search", {"query": "leave"}),
        step("final_answer", answer="I do not know."),
    )
    result = await run_block(
        agent(), {"tools": [KB_TOOL]}, context(tmp_path, models), {"task": "Leave?"}
    )
    assert result.outputs["answer"] == "I do not know."
    repair = models.bodies[1]["messages"][-1]["content"]
    assert "$.action: 'web_search' is not one of ['handbook', 'final_answer']" in repair


async def test_arguments_that_do_not_fit_the_schema_are_fed_back(tmp_path: Path) -> None:
    models = ScriptedModels(
        step("handbook", {"q": "leave"}),
        step("final_answer", answer="ok"),
    )
    ctx = context(tmp_path, models, knowledge=StaticKnowledge(PASSAGES))
    result = await run_block(agent(), {"tools": [KB_TOOL]}, ctx, {"task": "t"})
    observation = result.outputs["steps"][0]["observation"]
    assert observation == "error: invalid arguments for handbook: $: 'query' is a required property"
    assert result.outputs["citations"] == []


async def test_an_empty_final_answer_is_fed_back(tmp_path: Path) -> None:
    models = ScriptedModels(step("final_answer"), step("final_answer", answer="Now."))
    result = await run_block(agent(), {}, context(tmp_path, models), {"task": "t"})
    assert result.outputs["answer"] == "Now."
    assert "needs your complete answer" in result.outputs["steps"][0]["observation"]
    assert "There are no tools" in models.bodies[0]["messages"][0]["content"]


async def test_when_the_steps_run_out_the_model_gives_its_best_answer(tmp_path: Path) -> None:
    knowledge = StaticKnowledge(PASSAGES)
    models = ScriptedModels(
        step("handbook", {"query": "leave"}),
        "not json at all",  # an invalid step costs its step, it does not fail the agent
        "Probably 25 days [1].",
        tokens=7,
    )
    ctx = context(tmp_path, models, knowledge=knowledge)
    config = {"tools": [KB_TOOL], "max_steps": 2, "repair_attempts": 0}
    result = await run_block(agent(), config, ctx, {"task": "Leave?"})
    assert result.outputs["answer"] == "Probably 25 days [1]."
    assert [s["action"] for s in result.outputs["steps"]] == ["handbook", "invalid"]
    assert len(result.outputs["citations"]) == 2
    assert result.tokens == 21
    final = models.bodies[2]
    assert "response_format" not in final
    # Shaped like a knowledge-base answer: what was found, then the task as the question.
    system = final["messages"][0]["content"]
    assert "What your tool calls found:\n[1] (Leave) Leave is 25 days." in system
    assert "Step 1" not in system
    assert models.user_message(2) == "Task: Leave?"


async def test_no_answer_at_all_is_a_block_error(tmp_path: Path) -> None:
    models = ScriptedModels(step("handbook", {"query": "x"}), "   ")
    ctx = context(tmp_path, models, knowledge=StaticKnowledge(PASSAGES))
    with pytest.raises(BlockError, match=r"no answer within 1 step$"):
        await run_block(agent(), {"tools": [KB_TOOL], "max_steps": 1}, ctx, {"task": "t"})


async def test_an_empty_task_is_a_block_error(tmp_path: Path) -> None:
    with pytest.raises(BlockError, match="the task is empty"):
        await run_block(agent(), {}, context(tmp_path, ScriptedModels()), {"task": "  "})


async def test_a_best_effort_without_text_is_a_block_error(tmp_path: Path) -> None:
    models = ScriptedModels(step("final_answer", answer=" "), None)
    with pytest.raises(BlockError, match="no answer within 1 step: the model answered without"):
        await run_block(agent(), {"max_steps": 1}, context(tmp_path, models), {"task": "t"})


async def test_a_repeated_call_is_not_run_again(tmp_path: Path) -> None:
    knowledge = StaticKnowledge(PASSAGES)
    models = ScriptedModels(
        step("handbook", {"query": "leave"}),
        step("handbook", {"query": "leave"}),
        step("final_answer", answer="25 [1]."),
    )
    ctx = context(tmp_path, models, knowledge=knowledge)
    result = await run_block(agent(), {"tools": [KB_TOOL]}, ctx, {"task": "t"})
    assert len(knowledge.calls) == 1
    assert result.outputs["steps"][1]["observation"].startswith(
        "You made this same call in step 1; its observation is above."
    )


class MissingKnowledge:
    """A KnowledgeSearch whose knowledge bases do not exist (the service's own error)."""

    async def search(
        self, key_id: str, knowledge_base: str, query: str, *, top_k: int, filters: Any
    ) -> list[dict[str, Any]]:
        """Always NotFoundError."""
        msg = f"knowledge base {knowledge_base!r} not found"
        raise NotFoundError(msg)


async def test_a_failing_knowledge_base_is_an_observation(tmp_path: Path) -> None:
    models = ScriptedModels(step("handbook", {"query": "x"}), step("final_answer", answer="?"))
    services = make_services(tmp_path, models=models, knowledge=MissingKnowledge())
    result = await run_block(agent(), {"tools": [KB_TOOL]}, make_context(services), {"task": "t"})
    assert result.outputs["steps"][0]["observation"] == "error: knowledge base 'hr' not found"


async def test_a_block_tool_gets_its_own_idempotency_key_per_call(
    api: tuple[Api, BaseTestServer], tmp_path: Path
) -> None:
    target, server = api
    url = str(server.make_url("/search")) + "?s={{ data.q }}"
    tool = {
        "kind": "block",
        "name": "get",
        "description": "GET the search API.",
        "block": {"type": "http_request", "config": {"url": url}},
    }
    models = ScriptedModels(
        step("get", {"q": "one"}), step("get", {"q": "two"}), step("final_answer", answer="ok")
    )
    result = await run_block(agent(), {"tools": [tool]}, context(tmp_path, models), {"task": "t"})
    keys = [r["headers"]["Idempotency-Key"] for r in target.requests]
    assert keys == ["run-1:node-1:1", "run-1:node-1:2"]
    assert '"status": 200' in result.outputs["steps"][0]["observation"]


async def test_a_failing_block_tool_is_an_observation(tmp_path: Path) -> None:
    tool = {
        "kind": "block",
        "name": "get",
        "description": "GET a page.",
        "block": {"type": "http_request", "config": {"url": "http://169.254.169.254/"}},
    }
    models = ScriptedModels(step("get"), step("final_answer", answer="no"))
    result = await run_block(agent(), {"tools": [tool]}, context(tmp_path, models), {"task": "t"})
    observation = result.outputs["steps"][0]["observation"]
    assert observation.startswith("error: refused to connect to 169.254.169.254")


def test_arguments_with_references_decode_as_any_object() -> None:
    listed = {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}, "$defs": {"A": {}}}
    branches = decoding_schema({"tool": listed})["anyOf"]
    assert branches[0]["properties"]["args"] == {"type": "object"}
    assert branches[1]["required"] == ["thought", "action", "answer"]


# -- native tool calls ----------------------------------------------------------------


class NativeModels(ScriptedModels):
    """A ModelCaller answering scripted assistant messages (with ``tool_calls``)."""

    def __init__(self, *messages: dict[str, Any]) -> None:
        super().__init__()
        self.messages = list(messages)

    async def chat(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The next scripted message as a chat completion."""
        self.bodies.append(json.loads(json.dumps(body)))  # a copy: the loop appends to it
        assert self.messages, f"unexpected model call #{len(self.bodies)}"
        answer = completion(None)
        answer["choices"][0]["message"] = {"role": "assistant", **self.messages.pop(0)}
        return answer


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


async def test_native_tool_calls(tmp_path: Path) -> None:
    models = NativeModels(
        {
            "content": None,
            "tool_calls": [
                tool_call("a", "handbook", '{"query": "leave"}'),
                tool_call("b", "nowhere", "{}"),
                tool_call("c", "handbook", "{not json"),
            ],
        },
        {"content": "25 days [1]."},
    )
    ctx = context(tmp_path, models, knowledge=StaticKnowledge(PASSAGES))
    config = {"tools": [KB_TOOL], "native_tools": True}
    result = await run_block(agent(), config, ctx, {"task": "Leave?"})
    assert result.outputs["answer"] == "25 days [1]."
    assert result.tokens == 20
    first = models.bodies[0]
    assert "response_format" not in first
    assert first["tools"][0]["function"]["name"] == "handbook"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["query"]
    messages = models.bodies[1]["messages"]
    assert messages[2]["role"] == "assistant"
    assert [m["tool_call_id"] for m in messages[3:]] == ["a", "b", "c"]
    assert messages[3]["content"].startswith("[1] (Leave) Leave is 25 days.")
    assert messages[4]["content"].startswith("error: there is no tool 'nowhere'")
    assert messages[5]["content"].startswith("error: the arguments are not JSON")
    assert len(result.outputs["citations"]) == 2


async def test_native_steps_running_out_ask_for_the_best_answer(tmp_path: Path) -> None:
    models = NativeModels(
        {"content": "", "tool_calls": [tool_call("a", "handbook", '{"query": "x"}')]},
        {"content": "Best guess."},
    )
    ctx = context(tmp_path, models, knowledge=StaticKnowledge(PASSAGES))
    config = {"tools": [KB_TOOL], "native_tools": True, "max_steps": 1}
    result = await run_block(agent(), config, ctx, {"task": "t"})
    assert result.outputs["answer"] == "Best guess."
    assert "tools" not in models.bodies[1]


# -- MCP ------------------------------------------------------------------------------


def mcp_tool(name: str, url: str, tool: str, **extra: Any) -> dict[str, Any]:
    """An ``mcp`` tool spec."""
    return {
        "kind": "mcp",
        "name": name,
        "description": f"{name}.",
        "url": url,
        "tool": tool,
        **extra,
    }


async def test_an_mcp_tool_is_called_over_streamable_http(mcp_url: str, tmp_path: Path) -> None:
    tools = [
        mcp_tool("weather", mcp_url, "forecast"),
        mcp_tool("broken", mcp_url, "broken", parameters={"type": "object"}),
    ]
    models = ScriptedModels(
        step("weather", {"city": "Oslo", "days": 2}),
        step("weather", {"town": "Oslo"}),
        step("broken", {"city": "Oslo"}),
        step("final_answer", answer="Sunny."),
    )
    result = await run_block(agent(), {"tools": tools}, context(tmp_path, models), {"task": "t"})
    assert result.outputs["answer"] == "Sunny."
    # The server's own input schema was listed and shown to the model.
    assert (
        '"city": {"title": "City", "type": "string"}' in models.bodies[0]["messages"][0]["content"]
    )
    first, second, third = (s["observation"] for s in result.outputs["steps"][:3])
    assert first == "Oslo: sunny for 2 day(s)"
    assert second == "error: invalid arguments for weather: $: 'city' is a required property"
    assert third.startswith("error: Error executing tool broken")


async def test_an_mcp_call_past_its_timeout_is_an_observation(mcp_url: str, tmp_path: Path) -> None:
    tool = mcp_tool("slow", mcp_url, "slow", parameters={"type": "object"}, timeout_seconds=0.5)
    models = ScriptedModels(step("slow", {"city": "Oslo"}), step("final_answer", answer="late"))
    result = await run_block(agent(), {"tools": [tool]}, context(tmp_path, models), {"task": "t"})
    observation = result.outputs["steps"][0]["observation"]
    assert observation == "error: MCP server 127.0.0.1: no answer within 0.5 s"


async def test_an_mcp_server_the_policy_forbids_is_refused_before_connecting(
    mcp_url: str, tmp_path: Path
) -> None:
    tool = mcp_tool("weather", mcp_url, "forecast", parameters={"type": "object"})
    models = ScriptedModels(step("weather", {"city": "Oslo"}), step("final_answer", answer="no"))
    ctx = context(tmp_path, models, policy=NetworkPolicy())
    result = await run_block(agent(), {"tools": [tool]}, ctx, {"task": "t"})
    observation = result.outputs["steps"][0]["observation"]
    assert observation == "error: refused to connect to 127.0.0.1: 127.0.0.1 is a loopback address"


async def test_an_unreachable_mcp_server_is_an_observation(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tool = mcp_tool("weather", f"http://127.0.0.1:{port}/mcp", "forecast")
    models = ScriptedModels(step("weather", {"city": "Oslo"}), step("final_answer", answer="no"))
    result = await run_block(agent(), {"tools": [tool]}, context(tmp_path, models), {"task": "t"})
    observation = result.outputs["steps"][0]["observation"]
    assert observation == "error: MCP server 127.0.0.1: All connection attempts failed"


# -- config ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "problem"),
    [
        ([KB_TOOL, KB_TOOL], "'handbook' is used twice"),
        ([{**KB_TOOL, "name": "final_answer"}], "the agent's own action"),
        ([{**KB_TOOL, "kind": "shell"}], "does not match any of the expected tags"),
        (
            [{"kind": "block", "name": "x", "description": "d", "block": {"type": "nope"}}],
            "there is no block type 'nope'",
        ),
        (
            [{"kind": "block", "name": "x", "description": "d", "block": {"type": "agent"}}],
            "there is no block type 'agent'",
        ),
        (
            [{"kind": "block", "name": "x", "description": "d", "block": {"type": "end"}}],
            "cannot run as a tool",
        ),
        (
            [
                {
                    "kind": "block",
                    "name": "x",
                    "description": "d",
                    "block": {"type": "transform", "config": {"expressions": {}}},
                }
            ],
            "invalid transform config: expressions",
        ),
        (
            [{"kind": "http", "name": "x", "description": "d", "url": "{{ unclosed"}],
            "invalid template",
        ),
        (
            [
                {
                    "kind": "http",
                    "name": "x",
                    "description": "d",
                    "url": "https://a.example",
                    "headers": {"Bad Header": "v"},
                }
            ],
            "not a valid header name",
        ),
        (
            [{"kind": "mcp", "name": "x", "description": "d", "url": "ftp://a", "tool": "t"}],
            "http or https URL",
        ),
    ],
)
def test_invalid_configs_are_refused_when_saved(tools: list[Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        agent().parse_config({"tools": tools})


def test_ports_and_catalogue() -> None:
    block = agent()
    config = block.parse_config({"tools": [KB_TOOL]})
    assert block.inputs(config)["task"].required
    assert not block.inputs(config)["context"].required
    assert set(block.outputs(config)) == {"answer", "citations", "steps"}
    assert block.kind == "step"
    json.dumps(block.describe())


async def test_an_agent_without_a_lookup_has_no_block_tools(tmp_path: Path) -> None:
    tool = {"kind": "block", "name": "x", "description": "d", "block": {"type": "transform"}}
    with pytest.raises(ValidationError, match="there is no block type 'transform'"):
        AgentBlock().parse_config({"tools": [tool]})


async def test_the_mcp_client_itself_refuses_what_the_policy_forbids(mcp_url: str) -> None:
    # Behind the early check: the SDK's own connections are vetted too (DNS rebinding).
    async with guarded_mcp_client(NetworkPolicy(), {}, 5.0) as client:
        with pytest.raises(BlockedDestinationError, match="loopback"):
            await client.post(mcp_url, json={})
        with pytest.raises(BlockedDestinationError, match="scheme 'ftp'"):
            await client.get("ftp://127.0.0.1/")
    async with guarded_mcp_client(LOOPBACK_POLICY, {"X-Test": "1"}, 5.0) as client:
        response = await client.get(mcp_url)
    assert response.status_code in {400, 405, 406}  # reached: the server answered
