"""The Agent block: a model that calls tools in a loop until it can answer.

Each step the model sees the task, its tools and every earlier step (thought, action,
observation) and answers one JSON object ``{"thought", "action", "args", "answer"}``
through :meth:`ModelSession.ask_json` (the schema in the prompt and as
``response_format``, validated, with repair rounds). That works on any chat model,
including the bundled SmolLM2, which has no native tool calling but whose JSON mode is
grammar-constrained: :class:`StepSession` decodes with the exact form of each action
(a tool's name with that tool's arguments, or the final answer), so even a tiny model
makes well-formed calls. With ``native_tools`` the OpenAI ``tools`` / ``tool_calls``
protocol is used instead.

A wrong tool name, arguments that do not fit the tool's schema, a repeated call or a
failing tool become the step's observation, so the model can correct itself. When the
steps run out, the model is asked once more, without tools, for its best answer from
what its calls found.

The tools themselves (knowledge bases, HTTP APIs, other blocks, MCP servers) are in
:mod:`atrium.workflows.blocks.agent_tools`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import Field, field_validator, model_validator

from atrium.workflows.blocks._shared import checked_template, clip, port_scope, render_optional
from atrium.workflows.blocks.agent_tools import (
    ANY_OBJECT,
    FINAL_ANSWER,
    LOOKUP_CONTEXT,
    AgentTool,
    BlockLookup,
    ToolRunner,
    ToolSpec,
    as_text,
)
from atrium.workflows.blocks.base import (
    Block,
    BlockConfig,
    BlockContext,
    BlockError,
    BlockResult,
)
from atrium.workflows.blocks.llm import ModelConfig, ModelSession, chat_messages
from atrium.workflows.dsl import PortSpec

JSON = dict[str, Any]

STEP_EXCERPT_CHARS: Final = 500
MAX_THOUGHT_CHARS: Final = 300
_ANSWER: Final = {"type": "string", "minLength": 1}
_REPEAT: Final = "You made this same call"
_BEST_EFFORT: Final = (
    "Answer the task using what your tool calls found, below. Cite passages by their "
    "numbers in square brackets, like [1]. If it does not answer the task, say so."
)
_PROTOCOL: Final = (
    "You work on the task in steps. In each step, answer with one JSON object:\n"
    '- "thought": your reasoning for this step, briefly;\n'
    '- "action": the name of one of the tools below, or "final_answer";\n'
    '- "args": the tool\'s arguments as a JSON object ({} for final_answer);\n'
    '- "answer": for final_answer, your complete answer to the task ("" otherwise).\n'
    "What the tool returns is shown as the observation of your step. Choose final_answer "
    "as soon as the observations answer the task; cite passages by their numbers, like [1]."
)
_NATIVE_PROTOCOL: Final = (
    "Call the tools you need, one or more at a time; when the results answer the task, "
    "reply with your complete answer as text. Cite passages by their numbers, like [1]."
)


class AgentConfig(ModelConfig):
    """A model, its instructions and tools, and how many steps it may take."""

    instructions: str | None = Field(
        None,
        description=(
            "The system message: the agent's role and rules (a template over task, "
            "context, inputs, vars and nodes)."
        ),
    )
    tools: list[AgentTool] = Field(
        default_factory=list,
        max_length=20,
        description="Knowledge bases, HTTP APIs, other blocks and MCP servers it may call.",
    )
    max_steps: int = Field(6, ge=1, le=20, description="Most model steps before it must answer.")
    max_observation_chars: int = Field(
        4000, ge=100, le=100_000, description="Each tool result is cut to this many characters."
    )
    native_tools: bool = Field(
        False,
        description=(
            "Use the model's native tool calling (OpenAI tools / tool_calls) instead of "
            "JSON steps; the model must support it."
        ),
    )
    repair_attempts: int = Field(
        1, ge=0, le=5, description="Rounds of asking the model to fix a step that is not valid."
    )

    @field_validator("instructions")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return checked_template(value)

    @model_validator(mode="after")
    def _unique_names(self) -> AgentConfig:
        names = [tool.name for tool in self.tools]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            msg = f"tool names must be unique: {twice[0]!r} is used twice"
            raise ValueError(msg)
        return self


@dataclass(slots=True)
class Step:
    """One step of the loop: what the model thought and did, and what it saw."""

    number: int
    thought: str
    action: str
    args: JSON
    observation: str

    @property
    def answered(self) -> bool:
        """Whether the step's tool answered (not an error, a repeat or no tool at all)."""
        return bool(self.observation) and not self.observation.startswith(("error:", _REPEAT))

    def public(self) -> JSON:
        """The step in the block's ``steps`` output (the observation as an excerpt)."""
        return {
            "step": self.number,
            "thought": self.thought,
            "action": self.action,
            "args": self.args,
            "observation": clip(self.observation, STEP_EXCERPT_CHARS),
        }

    def transcript(self) -> str:
        """The step as the model reads it in later prompts."""
        lines = [f"Step {self.number}"]
        if self.thought:
            lines.append(f"Thought: {self.thought}")
        lines.append(f"Action: {self.action} {json.dumps(self.args, ensure_ascii=False)}")
        lines.append(f"Observation: {self.observation}")
        return "\n".join(lines)


def step_schema(tool_names: list[str]) -> JSON:
    """The JSON Schema a step is checked against (and that the prompt shows)."""
    return {
        "type": "object",
        "properties": {
            "thought": {"type": "string"},
            "action": {"type": "string", "enum": [*tool_names, FINAL_ANSWER]},
            "args": {"type": "object"},
            "answer": {"type": "string"},
        },
        "required": ["thought", "action"],
    }


def decoding_schema(tools: Mapping[str, JSON]) -> JSON:
    """The exact form of a step, for constrained decoding: one branch per action.

    A grammar-constrained model (llama.cpp's JSON mode, the bundled model's) then names
    only a tool that exists, gives it arguments of that tool's shape, keeps its thought
    short and writes ``answer`` only to answer. Every such step also fits
    :func:`step_schema`, whose validation errors are the precise ones a model can act on.
    """
    thought = {"type": "string", "maxLength": MAX_THOUGHT_CHARS}
    branches: list[JSON] = [
        {
            "type": "object",
            "properties": {"thought": thought, "action": {"const": name}, "args": decodable(args)},
            "required": ["thought", "action", "args"],
        }
        for name, args in tools.items()
    ]
    final = {"thought": thought, "action": {"const": FINAL_ANSWER}, "answer": _ANSWER}
    branches.append({"type": "object", "properties": final, "required": list(final)})
    return {"anyOf": branches}


class StepSession(ModelSession):
    """A model session whose structured requests decode with :func:`decoding_schema`.

    :meth:`ModelSession.ask_json` sends the schema it validates with; a step is validated
    with the flat :func:`step_schema` (its errors name the wrong field), while the model
    is constrained by the exact per-action form.
    """

    def __init__(self, ctx: BlockContext, config: ModelConfig, decoding: JSON) -> None:
        super().__init__(ctx, config)
        self._decoding = decoding

    async def ask(self, messages: list[JSON], *, response_format: JSON | None = None) -> str:
        """One completion's text; a JSON-schema request decodes with the exact form."""
        if response_format is not None:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": "step", "schema": self._decoding},
            }
        return await super().ask(messages, response_format=response_format)


def decodable(schema: JSON) -> JSON:
    """``schema`` for use inside the step schema; any object when it has references.

    A ``$ref`` (as in MCP servers' listed schemas) points into its own document's root and
    would not resolve inside another one; the runner still checks the full schema.
    """
    return ANY_OBJECT if "$ref" in json.dumps(schema) else schema


def tool_catalogue(tools: list[ToolSpec], runner: ToolRunner) -> str:
    """The tools as the system message lists them, each with its arguments' schema."""
    if not tools:
        return "There are no tools: answer with final_answer."
    lines = ["Tools:"]
    for tool in tools:
        schema = json.dumps(runner.schema(tool), ensure_ascii=False)
        lines.append(f"- {tool.name}: {tool.description} Arguments (JSON Schema): {schema}")
    return "\n".join(lines)


def native_tools(tools: list[ToolSpec], runner: ToolRunner) -> list[JSON]:
    """The tools in OpenAI's ``tools`` request field."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": runner.schema(tool),
            },
        }
        for tool in tools
    ]


class AgentLoop:
    """One execution of the agent: the model session, the tools and the steps so far."""

    def __init__(
        self,
        ctx: BlockContext,
        config: AgentConfig,
        runner: ToolRunner,
        instructions: str | None,
        task: str,
    ) -> None:
        self._ctx = ctx
        self._config = config
        self._runner = runner
        self._instructions = instructions
        self._task = task
        self._tools: dict[str, ToolSpec] = {tool.name: tool for tool in config.tools}
        schemas = {name: runner.schema(tool) for name, tool in self._tools.items()}
        self.session = StepSession(ctx, config, decoding_schema(schemas))
        self.steps: list[Step] = []

    async def answer(self) -> str:
        """The final answer: from the loop, else the best effort once the steps ran out."""
        found = await (self._native_loop() if self._config.native_tools else self._json_loop())
        return found if found is not None else await self._best_effort()

    def _system(self, protocol: str | None) -> str:
        parts = [self._instructions, protocol]
        if protocol is not None:
            parts.append(tool_catalogue(list(self._tools.values()), self._runner))
        return "\n\n".join(part for part in parts if part)

    def _transcript(self) -> str:
        if not self.steps:
            return "Steps so far: none."
        return "Steps so far:\n\n" + "\n\n".join(step.transcript() for step in self.steps)

    # -- JSON steps ---------------------------------------------------------------

    async def _json_loop(self) -> str | None:
        system = self._system(_PROTOCOL)
        schema = step_schema(list(self._tools))
        for number in range(1, self._config.max_steps + 1):
            left = self._config.max_steps - number + 1
            prompt = (
                f"{self._task}\n\n{self._transcript()}\n\n"
                f"You have {left} step{'s' * (left != 1)} left. Choose the next action."
            )
            try:
                _text, value = await self.session.ask_json(
                    chat_messages(system, prompt),
                    schema,
                    repair_attempts=self._config.repair_attempts,
                )
            except BlockError as exc:  # an answer that never validated costs its step
                self.steps.append(Step(number, "", "invalid", {}, f"error: {exc}. {self._hint()}"))
                continue
            answer = await self._act(number, value)
            if answer is not None:
                return answer
        return None

    def _hint(self) -> str:
        names = ", ".join([*self._tools, FINAL_ANSWER])
        return (
            f'Reply with one JSON object whose "action" is one of: {names}; whose "args" '
            'fit that tool\'s arguments; and, for final_answer, whose "answer" is your answer.'
        )

    async def _act(self, number: int, value: JSON) -> str | None:
        """Run the step's action; the answer when it is a (non-empty) final answer."""
        thought, action = str(value.get("thought", "")).strip(), str(value["action"])
        args, answer = value.get("args", {}), str(value.get("answer", "")).strip()
        if action == FINAL_ANSWER and answer:
            self.steps.append(Step(number, thought, action, args, ""))
            return answer
        if action == FINAL_ANSWER:
            observation = 'error: final_answer needs your complete answer in "answer"'
        else:
            observation = await self._observe(action, args)
        self.steps.append(Step(number, thought, action, args, observation))
        return None

    async def _observe(self, action: str, args: Any) -> str:
        tool = self._tools.get(action)
        if tool is None:
            names = ", ".join([*self._tools, FINAL_ANSWER])
            return f"error: there is no tool {action!r}; the actions are: {names}"
        if not isinstance(args, dict):
            return f"error: the arguments of {action} must be a JSON object"
        earlier = next(
            (s for s in self.steps if (s.action, s.args) == (action, args) and s.answered),
            None,
        )
        if earlier is not None:  # a loop: the answer would be the same, and the prompt longer
            return (
                f"{_REPEAT} in step {earlier.number}; its observation is above. "
                "Call something else, or give your final answer."
            )
        return await self._runner.call(tool, args)

    # -- native tool calls --------------------------------------------------------

    async def _native_loop(self) -> str | None:
        messages = chat_messages(self._system(_NATIVE_PROTOCOL), self._task)
        tools = native_tools(list(self._tools.values()), self._runner)
        for number in range(1, self._config.max_steps + 1):
            message = await self._native_turn(messages, tools)
            answer = await self._native_step(number, message, messages)
            if answer is not None:
                return answer
        return None

    async def _native_step(self, number: int, message: JSON, messages: list[JSON]) -> str | None:
        """Run the turn's tool calls (their results appended to ``messages``), or answer."""
        calls = message.get("tool_calls") or []
        raw = message.get("content")
        content = raw.strip() if isinstance(raw, str) else ""
        if not calls and content:
            self.steps.append(Step(number, "", FINAL_ANSWER, {}, ""))
            return content
        if not calls:
            observation = "error: the answer is empty; answer the task or call a tool"
            self.steps.append(Step(number, "", "invalid", {}, observation))
            messages.append({"role": "user", "content": observation})
            return None
        messages.append({"role": "assistant", "content": content or None, "tool_calls": calls})
        for call in calls:
            observation = await self._native_call(number, content, call)
            call_id = call.get("id", "") if isinstance(call, dict) else ""
            messages.append({"role": "tool", "tool_call_id": call_id, "content": observation})
        return None

    async def _native_turn(self, messages: list[JSON], tools: list[JSON]) -> JSON:
        body: JSON = {
            "model": self._config.model,
            "messages": messages,
            "temperature": self._config.temperature,
        }
        if tools:
            body["tools"] = tools
        if self._config.max_tokens is not None:
            body["max_tokens"] = self._config.max_tokens
        answer = await self._ctx.services.models.chat(self._ctx.key_id, body)
        self.session.tokens += usage_tokens(answer)
        try:
            message = answer["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            message = None
        if not isinstance(message, dict):
            msg = "the model's answer has no message"
            raise BlockError(msg)
        return message

    async def _native_call(self, number: int, thought: str, call: Any) -> str:
        function = call.get("function") if isinstance(call, dict) else None
        args: JSON = {}
        if not isinstance(function, dict):
            observation, name = "error: a tool call without a function", "invalid"
        else:
            name = str(function.get("name", ""))
            args, problem = _arguments(function.get("arguments"))
            observation = problem or await self._observe(name, args)
        self.steps.append(Step(number, thought, name, args, observation))
        return observation

    # -- out of steps -------------------------------------------------------------

    async def _best_effort(self) -> str:
        """Ask, without tools, for the answer from what the tool calls found.

        Shaped like the knowledge-base answer prompt (what was found in the system message,
        the task as the user's): the form small models answer best.
        """
        steps = self._config.max_steps
        system = "\n\n".join(
            part for part in (self._instructions, _BEST_EFFORT, self._findings()) if part
        )
        failure = f"no answer within {steps} step{'s' * (steps != 1)}"
        try:
            text = await self.session.ask(chat_messages(system, self._task))
        except BlockError as exc:
            raise BlockError(f"{failure}: {exc}") from None
        if not text.strip():
            raise BlockError(failure)
        return text.strip()

    def _findings(self) -> str:
        """Each distinct observation of a call that worked (not the thoughts: a small model
        would carry on writing steps)."""
        found = dict.fromkeys(step.observation for step in self.steps if step.answered)
        if not found:
            return "Your tool calls found nothing."
        return "What your tool calls found:\n" + "\n\n".join(found)


def _arguments(raw: Any) -> tuple[JSON, str | None]:
    """A native tool call's arguments (a JSON string, or an object) and any problem."""
    if isinstance(raw, dict):
        return raw, None
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw.strip() else {}
    except json.JSONDecodeError as exc:
        return {}, f"error: the arguments are not JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(value, dict):
        return {}, "error: the arguments must be a JSON object"
    return value, None


def usage_tokens(answer: JSON) -> int:
    """``usage.total_tokens`` of a chat completion (0 when absent)."""
    usage = answer.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else 0


def task_text(inputs: dict[str, Any]) -> str:
    """The task, and its context when given, as the model reads them."""
    task = str(inputs.get("task") or "").strip()
    if not task:
        msg = "the task is empty: there is nothing to do"
        raise BlockError(msg)
    context = inputs.get("context")
    if context is None or context in ("", [], {}):
        return f"Task: {task}"
    return f"Task: {task}\n\nContext:\n{as_text(context)}"


class AgentBlock(Block):
    """A model that calls tools (knowledge bases, HTTP, blocks, MCP) until it can answer.

    ``lookup`` finds the blocks that ``block`` tools run, by type; the default library
    passes the other blocks it registers (so an agent cannot run an agent).
    """

    type = "agent"
    title = "Agent"
    description = (
        "A model that searches knowledge bases, calls APIs, blocks and MCP tools in a "
        "loop, then answers with citations."
    )
    category = "ai"
    Config = AgentConfig

    def __init__(self, lookup: BlockLookup | None = None) -> None:
        self._lookup: BlockLookup = lookup or (lambda _type: None)

    def parse_config(self, raw: Mapping[str, Any]) -> BlockConfig:
        """The typed config; each block tool's type and config are checked too."""
        return self.Config.model_validate(dict(raw), context={LOOKUP_CONTEXT: self._lookup})

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "task": PortSpec(type="string", description="What the agent should do or answer."),
            "context": PortSpec(
                type="any", required=False, description="Anything it should know first."
            ),
        }

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "answer": PortSpec(type="string", description="The final answer."),
            "citations": PortSpec(
                type="array[object]",
                description="Knowledge-base passages the agent was shown, numbered as cited.",
            ),
            "steps": PortSpec(
                type="array[object]",
                description="Each step: thought, action, args and an excerpt of the observation.",
            ),
        }

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, AgentConfig)
        task = task_text(inputs)
        scope = port_scope(ctx, self.inputs(config), inputs)
        instructions = render_optional(config.instructions, scope)
        runner = ToolRunner(ctx, scope, self._lookup, config.max_observation_chars)
        await runner.list_mcp_schemas(config.tools)
        loop = AgentLoop(ctx, config, runner, instructions, task)
        answer = await loop.answer()
        return BlockResult(
            {
                "answer": answer,
                "citations": runner.citations,
                "steps": [step.public() for step in loop.steps],
            },
            tokens=loop.session.tokens + runner.tokens,
            cost_usd=loop.session.cost_usd + runner.cost_usd,
        )


__all__ = [
    "AgentBlock",
    "AgentConfig",
    "AgentLoop",
    "Step",
    "StepSession",
    "decoding_schema",
    "step_schema",
]
