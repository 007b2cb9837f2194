"""The LLM, Classifier and Retrieve blocks, driven by a scripted ModelCaller."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from atrium.workflows.blocks.base import BlockError
from atrium.workflows.blocks.llm import (
    ClassifierBlock,
    LlmBlock,
    check_answer,
    extract_json,
    pick_category,
    schema_errors,
)
from atrium.workflows.blocks.retrieve import RetrieveBlock
from tests.unit.workflows.block_doubles import (
    ScriptedModels,
    StaticKnowledge,
    make_context,
    make_services,
    run_block,
)

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


# -- structured output helpers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Sure! Here it is:\n```json\n{"a": 1}\n```\nAnything else?', {"a": 1}),
        ('```\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('As noted in [1], the answer is {"a": 1} and that is all.', {"a": 1}),
        ("The list: [1, 2, 3]", [1, 2, 3]),
        ('{broken then {"b": true}', {"b": True}),
    ],
)
def test_extract_json_finds_the_first_json_value(answer: str, expected: object) -> None:
    assert extract_json(answer) == expected


def test_extract_json_without_json_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("I cannot answer that.")


def test_schema_errors_name_the_path_and_the_problem() -> None:
    errors = schema_errors({"name": 3, "extra": 1}, PERSON)
    assert any(e.startswith("$.name: ") and "string" in e for e in errors)
    assert any("age" in e and "required" in e for e in errors)
    assert any("extra" in e for e in errors)
    assert schema_errors({"name": "Ada", "age": 36}, PERSON) == []


def test_check_answer_reports_an_unparsable_answer_as_one_error() -> None:
    value, errors = check_answer("nope", PERSON)
    assert value is None
    assert errors == ["the answer contains no JSON value"]


# -- LLM ----------------------------------------------------------------------------------


async def test_llm_renders_its_templates_and_answers_text(tmp_path: Path) -> None:
    models = ScriptedModels("Paris.", tokens=17)
    ctx = make_context(
        make_services(tmp_path, models=models),
        variables={"tone": "brief"},
        workflow_inputs={"country": "France"},
        upstream={"search": {"hits": 3}},
    )
    config = {
        "model": "small",
        "system": "Be {{ vars.tone }}.",
        "prompt": "{{ text }} of {{ inputs.country }}? ({{ nodes.search.hits }} hits)"
        "{% if context %} Context: {{ context }}{% endif %}",
        "max_tokens": 64,
    }
    result = await run_block(LlmBlock(), config, ctx, {"text": "Capital"})
    assert result.outputs == {"text": "Paris."}
    assert result.tokens == 17
    assert result.cost_usd == 0
    assert models.key_ids == ["key-1"]
    assert models.bodies[0] == {
        "model": "small",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France? (3 hits)"},
        ],
        "temperature": 0.0,
        "max_tokens": 64,
    }


class PricedModels(ScriptedModels):
    """The gateway's adapter prices each answer's usage (``usage.cost_usd``)."""

    async def chat(self, key_id: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await super().chat(key_id, body)
        answer["usage"]["cost_usd"] = 0.25
        return answer


async def test_llm_sums_the_cost_of_every_call(tmp_path: Path) -> None:
    models = PricedModels("not json", '{"n": 1}')
    ctx = make_context(make_services(tmp_path, models=models))
    config = {"prompt": "Count.", "json_schema": {"type": "object", "required": ["n"]}}
    result = await run_block(LlmBlock(), config, ctx, {})
    assert result.cost_usd == 0.5  # the first answer and its repair


async def test_llm_structured_output_asks_with_the_schema_and_parses_the_answer(
    tmp_path: Path,
) -> None:
    models = ScriptedModels('Here you go:\n```json\n{"name": "Ada", "age": 36}\n```')
    ctx = make_context(make_services(tmp_path, models=models))
    config = {"prompt": "Who wrote the first program? {{ data.hint }}", "json_schema": PERSON}
    result = await run_block(LlmBlock(), config, ctx, {"data": {"hint": "Lovelace"}})
    assert result.outputs["data"] == {"name": "Ada", "age": 36}
    assert "Ada" in result.outputs["text"]
    body = models.bodies[0]
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": PERSON},
    }
    prompt = models.user_message(0)
    assert prompt.startswith("Who wrote the first program? Lovelace")
    assert json.dumps(PERSON) in prompt


async def test_llm_repairs_invalid_json_until_it_validates(tmp_path: Path) -> None:
    models = ScriptedModels(
        "I think it is Ada Lovelace.",
        '{"name": "Ada"}',
        '{"name": "Ada", "age": 36}',
    )
    ctx = make_context(make_services(tmp_path, models=models))
    result = await run_block(LlmBlock(), {"prompt": "Who?", "json_schema": PERSON}, ctx)
    assert result.outputs["data"] == {"name": "Ada", "age": 36}
    assert result.tokens == 30  # three calls, ten tokens each
    first_repair = models.bodies[1]["messages"]
    assert first_repair[-2] == {"role": "assistant", "content": "I think it is Ada Lovelace."}
    assert "no JSON value" in first_repair[-1]["content"]
    second_repair = models.bodies[2]["messages"]
    # Only the latest invalid answer is shown, not the whole history.
    assert len(second_repair) == len(first_repair)
    assert second_repair[-2]["content"] == '{"name": "Ada"}'
    assert "'age' is a required property" in second_repair[-1]["content"]
    assert all(b["response_format"]["type"] == "json_schema" for b in models.bodies)


async def test_llm_fails_with_the_validation_errors_when_repairs_run_out(tmp_path: Path) -> None:
    models = ScriptedModels('{"name": 1, "age": -1}', '{"name": 2, "age": -2}')
    ctx = make_context(make_services(tmp_path, models=models))
    config = {"prompt": "Who?", "json_schema": PERSON, "repair_attempts": 1}
    with pytest.raises(BlockError, match="after 1 repair attempt:") as failure:
        await run_block(LlmBlock(), config, ctx)
    assert "$.name: 2 is not of type 'string'" in str(failure.value)
    assert "$.age: -2 is less than the minimum of 0" in str(failure.value)
    assert len(models.bodies) == 2


async def test_llm_without_repair_attempts_asks_once(tmp_path: Path) -> None:
    models = ScriptedModels("no")
    ctx = make_context(make_services(tmp_path, models=models))
    config = {"prompt": "Who?", "json_schema": PERSON, "repair_attempts": 0}
    with pytest.raises(BlockError, match="after 0 repair attempts"):
        await run_block(LlmBlock(), config, ctx)
    assert len(models.bodies) == 1


async def test_llm_answer_without_text_is_a_block_error(tmp_path: Path) -> None:
    ctx = make_context(make_services(tmp_path, models=ScriptedModels(None)))
    with pytest.raises(BlockError, match="without text"):
        await run_block(LlmBlock(), {"prompt": "Hi"}, ctx)


async def test_llm_undefined_template_name_is_a_block_error(tmp_path: Path) -> None:
    ctx = make_context(make_services(tmp_path))
    with pytest.raises(BlockError, match="template error"):
        await run_block(LlmBlock(), {"prompt": "{{ nowhere.x }}"}, ctx)


def test_llm_ports_follow_the_config() -> None:
    block = LlmBlock()
    plain = block.parse_config({"prompt": "x"})
    assert set(block.outputs(plain)) == {"text"}
    structured = block.parse_config({"prompt": "x", "json_schema": PERSON})
    assert block.outputs(structured)["data"].type == "object"
    listed = block.parse_config({"prompt": "x", "json_schema": {"type": "array"}})
    assert block.outputs(listed)["data"].type == "any"
    assert all(not port.required for port in block.inputs(plain).values())


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"prompt": "{{ unclosed"}, "invalid template"),
        ({"prompt": "x", "system": "{% include 'x' %}"}, "invalid template"),
        ({"prompt": "x", "json_schema": {"type": "nonsense"}}, "invalid JSON schema"),
        ({"prompt": "x", "temperature": 3}, "less than or equal to 2"),
        ({"prompt": "x", "surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_llm_config_is_checked_when_parsed(config: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        LlmBlock().parse_config(config)


# -- Classifier ---------------------------------------------------------------------------

CATEGORIES = [
    {"name": "billing", "description": "Invoices, payments, refunds"},
    {"name": "bug", "description": "Something is broken"},
    {"name": "bug_report", "description": "A detailed defect report"},
    {"name": "feature-request"},
]
NAMES = [c["name"] for c in CATEGORIES]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("billing", "billing"),
        ("  `billing`. ", "billing"),
        ("BILLING", "billing"),
        ("Bug Report", "bug_report"),
        ("feature request", "feature-request"),
        ("The category is: billing, clearly.", "billing"),
        ("This looks like a bug_report to me", "bug_report"),
        ("It is a bug.", "bug"),
        ("billingual", None),
        ("I am not sure", None),
    ],
)
def test_pick_category_parses_answers_robustly(answer: str, expected: str | None) -> None:
    assert pick_category(answer, NAMES) == expected


async def test_classifier_fires_the_chosen_category(tmp_path: Path) -> None:
    models = ScriptedModels("Category: billing")
    ctx = make_context(make_services(tmp_path, models=models), variables={"lang": "English"})
    config = {"categories": CATEGORIES, "instructions": "Texts are in {{ vars.lang }}."}
    block = ClassifierBlock()
    result = await run_block(block, config, ctx, {"text": "I was charged twice."})
    assert result.outputs == {"category": "billing", "text": "I was charged twice."}
    assert result.handles == ("billing", "done")
    assert result.tokens == 10
    body = models.bodies[0]
    system = body["messages"][0]["content"]
    assert "- billing: Invoices, payments, refunds" in system
    assert "- feature-request\n" in system
    assert "Texts are in English." in system
    assert body["messages"][1] == {"role": "user", "content": "I was charged twice."}
    assert body["max_tokens"] == 32
    assert block.control_handles(block.parse_config(config)) == tuple(NAMES)


async def test_classifier_falls_back_to_the_default_category(tmp_path: Path) -> None:
    ctx = make_context(make_services(tmp_path, models=ScriptedModels("No idea, sorry.")))
    config = {"categories": CATEGORIES, "default": "bug"}
    result = await run_block(ClassifierBlock(), config, ctx, {"text": "hmm"})
    assert result.outputs["category"] == "bug"
    assert result.handles == ("bug", "done")


async def test_classifier_without_a_default_fails_on_an_unknown_answer(tmp_path: Path) -> None:
    ctx = make_context(make_services(tmp_path, models=ScriptedModels("weather")))
    with pytest.raises(BlockError, match="names none of billing, bug"):
        await run_block(ClassifierBlock(), {"categories": CATEGORIES}, ctx, {"text": "sunny"})


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"categories": []}, "at least 1 item"),
        ({"categories": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"categories": [{"name": "done"}]}, "reserved"),
        ({"categories": [{"name": "error"}]}, "reserved"),
        ({"categories": [{"name": "has space"}]}, "pattern"),
        ({"categories": [{"name": "a"}], "default": "b"}, "not one of the categories"),
    ],
)
def test_classifier_config_is_checked(config: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ClassifierBlock().parse_config(config)


# -- Retrieve -----------------------------------------------------------------------------

CITATIONS = [
    {"number": 1, "document_id": "d1", "score": 0.9, "text": "Refunds take 5 days."},
    {"number": 2, "document_id": "d2", "score": 0.7, "text": "Invoices are monthly."},
]


async def test_retrieve_searches_the_query_port(tmp_path: Path) -> None:
    knowledge = StaticKnowledge(CITATIONS)
    ctx = make_context(make_services(tmp_path, knowledge=knowledge))
    config = {"knowledge_base": "support", "top_k": 2, "filters": {"lang": "en"}}
    result = await run_block(RetrieveBlock(), config, ctx, {"query": "  refunds?  "})
    assert result.outputs["context"] == "[1] Refunds take 5 days.\n\n[2] Invoices are monthly."
    assert result.outputs["citations"] == CITATIONS
    assert knowledge.calls == [
        {
            "key_id": "key-1",
            "kb": "support",
            "query": "refunds?",
            "top_k": 2,
            "filters": {"lang": "en"},
        }
    ]


async def test_retrieve_renders_a_query_template(tmp_path: Path) -> None:
    knowledge = StaticKnowledge(CITATIONS)
    ctx = make_context(
        make_services(tmp_path, knowledge=knowledge), workflow_inputs={"topic": "refunds"}
    )
    config = {"knowledge_base": "support", "query": "policy on {{ inputs.topic }}"}
    block = RetrieveBlock()
    assert not block.inputs(block.parse_config(config))["query"].required
    result = await run_block(block, config, ctx)
    assert knowledge.calls[0]["query"] == "policy on refunds"
    assert knowledge.calls[0]["top_k"] == 5
    assert knowledge.calls[0]["filters"] is None
    assert len(result.outputs["citations"]) == 2


async def test_retrieve_refuses_an_empty_query(tmp_path: Path) -> None:
    knowledge = StaticKnowledge(CITATIONS)
    ctx = make_context(make_services(tmp_path, knowledge=knowledge))
    with pytest.raises(BlockError, match="query is empty"):
        await run_block(RetrieveBlock(), {"knowledge_base": "support"}, ctx, {"query": " "})
    assert knowledge.calls == []


@pytest.mark.parametrize("top_k", [0, 51])
def test_retrieve_top_k_is_bounded(top_k: int) -> None:
    with pytest.raises(ValidationError, match="top_k"):
        RetrieveBlock().parse_config({"knowledge_base": "kb", "top_k": top_k})
