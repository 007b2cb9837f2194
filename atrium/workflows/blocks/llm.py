"""Model blocks: LLM (free text, or JSON that a schema validates) and Classifier.

:class:`ModelSession` is the one way a block talks to a model: it calls the gateway as
the run's key (so the key's limits, routing and usage apply), sums the tokens used, and
:meth:`ModelSession.ask_json` implements structured output for every block that needs it:
``response_format`` with the schema *and* the schema in the prompt (a model without
constrained decoding still sees it), the first JSON value in the answer parsed out of any
code fences or prose, validated with ``jsonschema``, and up to ``repair_attempts`` rounds
in which the model is shown its invalid answer and the validation errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Final

import jsonschema
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atrium.workflows.blocks._shared import checked_template, port_scope, render_optional
from atrium.workflows.blocks.base import Block, BlockConfig, BlockContext, BlockError, BlockResult
from atrium.workflows.dsl import IDENT, PortSpec
from atrium.workflows.expressions import render

JSON = dict[str, Any]

MAX_REPORTED_ERRORS: Final = 8
_MAX_ERROR_CHARS: Final = 300
_MAX_JSON_STARTS: Final = 200
_FENCE: Final = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
_NOT_FOUND: Final = object()
_RESERVED_HANDLES: Final = frozenset({"done", "error"})


# -- configuration shared by the model blocks -------------------------------------------


class ModelConfig(BlockConfig):
    """Which model answers, and how it samples."""

    model: str = Field(
        "default", min_length=1, description="A model name or alias from the gateway's catalogue."
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature (0: greedy).")
    max_tokens: int | None = Field(
        None, ge=1, le=131_072, description="Most tokens per answer (the model's default if unset)."
    )


def valid_schema(schema: JSON | None) -> JSON | None:
    """``schema`` unchanged when it is a valid JSON Schema (ValueError otherwise)."""
    if schema is not None:
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except SchemaError as exc:
            msg = f"invalid JSON schema: {exc.message}"
            raise ValueError(msg) from None
    return schema


# -- structured output ----------------------------------------------------------------


def extract_json(text: str) -> Any:
    """The first JSON value in a model's answer (inside code fences first); ValueError if none.

    Objects are looked for before arrays, so a citation like ``[1]`` in prose before the
    answer's object is not taken for the answer.
    """
    for candidate in [*(m.group(1) for m in _FENCE.finditer(text)), text]:
        value = _first_json(candidate.strip())
        if value is not _NOT_FOUND:
            return value
    msg = "the answer contains no JSON value"
    raise ValueError(msg)


def _first_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for opening in "{[":
        starts = [i for i, char in enumerate(text) if char == opening][:_MAX_JSON_STARTS]
        for start in starts:
            try:
                return decoder.raw_decode(text, start)[0]
            except json.JSONDecodeError:
                continue
    return _NOT_FOUND


def schema_errors(value: Any, schema: JSON) -> list[str]:
    """Why ``value`` does not validate against ``schema`` (empty when it does)."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda error: error.json_path)
    return [f"{e.json_path}: {_short(e.message)}" for e in errors[:MAX_REPORTED_ERRORS]]


def check_answer(text: str, schema: JSON) -> tuple[Any, list[str]]:
    """The JSON value in ``text`` and its validation errors (a parse failure is one error)."""
    try:
        value = extract_json(text)
    except ValueError as exc:
        return None, [str(exc)]
    return value, schema_errors(value, schema)


def schema_instructions(schema: JSON) -> str:
    """The paragraph that puts the schema in the prompt."""
    return (
        "Answer with a single JSON value that validates against this JSON Schema, "
        "and nothing else (no prose, no code fences):\n" + json.dumps(schema, ensure_ascii=False)
    )


def repair_request(errors: Sequence[str]) -> str:
    """The message that asks the model to correct an answer that did not validate."""
    listed = "\n".join(f"- {error}" for error in errors)
    return (
        f"Your answer is not valid:\n{listed}\n"
        "Reply with the corrected JSON only: one JSON value that validates against the "
        "schema, without prose and without code fences."
    )


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def chat_messages(system: str | None, user: str) -> list[JSON]:
    """An OpenAI message list: the optional system message, then the user's."""
    messages: list[JSON] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    return messages


class ModelSession:
    """Chat completions for one block execution, as the run's key; sums the tokens used."""

    def __init__(self, ctx: BlockContext, config: ModelConfig) -> None:
        self._ctx = ctx
        self._config = config
        self.tokens = 0
        self.cost_usd = 0.0

    async def ask(self, messages: list[JSON], *, response_format: JSON | None = None) -> str:
        """One completion's text."""
        body: JSON = {
            "model": self._config.model,
            "messages": messages,
            "temperature": self._config.temperature,
        }
        if self._config.max_tokens is not None:
            body["max_tokens"] = self._config.max_tokens
        if response_format is not None:
            body["response_format"] = response_format
        answer = await self._ctx.services.models.chat(self._ctx.key_id, body)
        self.tokens += _total_tokens(answer)
        self.cost_usd += _cost(answer)
        return _answer_text(answer)

    async def ask_json(
        self, messages: list[JSON], schema: JSON, *, repair_attempts: int
    ) -> tuple[str, Any]:
        """The answer's text and its JSON value, validated by ``schema``; BlockError if never."""
        last = messages[-1]
        prompt = [
            *messages[:-1],
            {**last, "content": f"{last['content']}\n\n{schema_instructions(schema)}"},
        ]
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema},
        }
        text = await self.ask(prompt, response_format=response_format)
        value, errors = check_answer(text, schema)
        for _ in range(repair_attempts):
            if not errors:
                break
            # Only the latest invalid answer is shown: the conversation stays short.
            repair = [
                *prompt,
                {"role": "assistant", "content": text},
                {"role": "user", "content": repair_request(errors)},
            ]
            text = await self.ask(repair, response_format=response_format)
            value, errors = check_answer(text, schema)
        if errors:
            rounds = f"after {repair_attempts} repair attempt{'s' * (repair_attempts != 1)}"
            listed = "; ".join(errors)
            msg = f"the model's answer does not match the JSON schema {rounds}: {listed}"
            raise BlockError(msg)
        return text, value


def _answer_text(answer: JSON) -> str:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        msg = "the model's answer has no message"
        raise BlockError(msg) from None
    if not isinstance(content, str):
        msg = "the model answered without text"
        raise BlockError(msg)
    return content


def _cost(answer: JSON) -> float:
    """What the gateway priced the call at (``usage.cost_usd``; 0 for unpriced models)."""
    usage = answer.get("usage")
    cost = usage.get("cost_usd") if isinstance(usage, dict) else None
    return float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else 0.0


def _total_tokens(answer: JSON) -> int:
    usage = answer.get("usage")
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return total if isinstance(total, int) and not isinstance(total, bool) else 0


# -- LLM ------------------------------------------------------------------------------


class LlmConfig(ModelConfig):
    """A prompt for a model; with ``json_schema``, the answer is JSON the schema validates."""

    system: str | None = Field(None, description="The system message (a template).")
    prompt: str = Field(
        min_length=1,
        description=(
            "The user message: a template over the ports (context, text, data), "
            "inputs, vars and nodes."
        ),
    )
    json_schema: JSON | None = Field(
        None,
        description=(
            "A JSON Schema for structured output: the answer is parsed, validated and "
            "given as the data output."
        ),
    )
    repair_attempts: int = Field(
        2, ge=0, le=5, description="Rounds of asking the model to fix an answer that is invalid."
    )

    @field_validator("system", "prompt")
    @classmethod
    def _templates(cls, value: str | None) -> str | None:
        return checked_template(value)

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: JSON | None) -> JSON | None:
        return valid_schema(value)


class LlmBlock(Block):
    """Ask a model; free text, or JSON validated by a schema with automatic repair rounds."""

    type = "llm"
    title = "LLM"
    description = "Prompt a model; optionally get JSON that a schema validates."
    category = "ai"
    Config = LlmConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "context": PortSpec(type="any", required=False, description="Retrieved context."),
            "text": PortSpec(type="string", required=False),
            "data": PortSpec(type="any", required=False),
        }

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        assert isinstance(config, LlmConfig)
        ports = {"text": PortSpec(type="string", description="The model's answer.")}
        if config.json_schema is not None:
            kind = "object" if config.json_schema.get("type") == "object" else "any"
            ports["data"] = PortSpec(type=kind, description="The answer, validated.")
        return ports

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, LlmConfig)
        scope = port_scope(ctx, self.inputs(config), inputs)
        messages = chat_messages(
            render_optional(config.system, scope), render(config.prompt, scope)
        )
        session = ModelSession(ctx, config)
        if config.json_schema is None:
            text = await session.ask(messages)
            return BlockResult({"text": text}, tokens=session.tokens, cost_usd=session.cost_usd)
        text, data = await session.ask_json(
            messages, config.json_schema, repair_attempts=config.repair_attempts
        )
        return BlockResult(
            {"text": text, "data": data}, tokens=session.tokens, cost_usd=session.cost_usd
        )


# -- Classifier -----------------------------------------------------------------------


class Category(BaseModel):
    """One category a Classifier may pick; its name is also a control handle."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=IDENT, description="An identifier; the handle that fires.")
    description: str = Field("", max_length=2000, description="What belongs in this category.")


class ClassifierConfig(ModelConfig):
    """Categories to choose from; the chosen one's handle fires."""

    categories: list[Category] = Field(
        min_length=1, max_length=50, description="The categories; each name is a handle."
    )
    instructions: str | None = Field(None, description="Extra guidance (a template).")
    default: str | None = Field(
        None,
        description=(
            "The category taken when the answer names none; unset, such an answer fails the block."
        ),
    )
    max_tokens: int | None = Field(32, ge=1, le=4096, description="Most tokens per answer.")

    @field_validator("instructions")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        return checked_template(value)

    @model_validator(mode="after")
    def _names(self) -> ClassifierConfig:
        names = [c.name for c in self.categories]
        if len(set(names)) != len(names):
            msg = "category names must be unique"
            raise ValueError(msg)
        reserved = _RESERVED_HANDLES.intersection(names)
        if reserved:
            msg = f"{sorted(reserved)[0]!r} is a reserved handle name, not a category"
            raise ValueError(msg)
        if self.default is not None and self.default not in names:
            msg = f"default {self.default!r} is not one of the categories"
            raise ValueError(msg)
        return self


def _normalised(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


def pick_category(answer: str, names: Sequence[str]) -> str | None:
    """The category an answer names: exactly, then ignoring case, then mentioned in it.

    Among mentions the earliest wins, and a longer name before a shorter one at the same
    place (``bug_report`` over ``bug``).
    """
    cleaned = answer.strip().strip("`'\"*.:").strip()
    if cleaned in names:
        return cleaned
    by_norm = {_normalised(name): name for name in names}
    if _normalised(cleaned) in by_norm:
        return by_norm[_normalised(cleaned)]
    text = _normalised(answer)
    hits: list[tuple[int, int, str]] = []
    for norm, name in by_norm.items():
        match = re.search(rf"(?<![a-z0-9]){re.escape(norm)}(?![a-z0-9])", text)
        if match is not None:
            hits.append((match.start(), -len(norm), name))
    return min(hits)[2] if hits else None


def classifier_prompt(config: ClassifierConfig, instructions: str | None) -> str:
    """The system message: the categories, the guidance, and the answer's form."""
    lines = ["Classify the text into exactly one of these categories:"]
    for category in config.categories:
        described = f": {category.description}" if category.description else ""
        lines.append(f"- {category.name}{described}")
    if instructions:
        lines.append(instructions)
    lines.append("Answer with the category name only.")
    return "\n".join(lines)


class ClassifierBlock(Block):
    """Route by meaning: a model picks one category, whose handle fires."""

    type = "classifier"
    title = "Classifier"
    description = "A model sorts the text into one of your categories; each is a branch."
    category = "ai"
    Config = ClassifierConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"text": PortSpec(type="string", description="The text to classify.")}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "category": PortSpec(type="string", description="The chosen category's name."),
            "text": PortSpec(type="string", description="The classified text, passed on."),
        }

    def control_handles(self, config: BlockConfig) -> tuple[str, ...]:
        assert isinstance(config, ClassifierConfig)
        return tuple(c.name for c in config.categories)

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, ClassifierConfig)
        scope = port_scope(ctx, self.inputs(config), inputs)
        text = str(inputs.get("text") or "")
        system = classifier_prompt(config, render_optional(config.instructions, scope))
        session = ModelSession(ctx, config)
        answer = await session.ask(chat_messages(system, text))
        names = [c.name for c in config.categories]
        chosen = pick_category(answer, names) or config.default
        if chosen is None:
            msg = f"the model's answer {answer.strip()[:200]!r} names none of {', '.join(names)}"
            raise BlockError(msg)
        return BlockResult(
            {"category": chosen, "text": text},
            handles=(chosen, "done"),
            tokens=session.tokens,
            cost_usd=session.cost_usd,
        )


__all__ = [
    "ClassifierBlock",
    "ClassifierConfig",
    "LlmBlock",
    "LlmConfig",
    "ModelConfig",
    "ModelSession",
    "chat_messages",
    "check_answer",
    "extract_json",
    "pick_category",
    "schema_errors",
    "valid_schema",
]
