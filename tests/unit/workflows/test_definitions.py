"""The definition language: types, validation on save, sandboxed expressions and templates."""

from __future__ import annotations

from typing import Any

import pytest

from atrium.core.errors import InvalidRequestError
from atrium.workflows.blocks.base import BlockError, BlockRegistry
from atrium.workflows.blocks.library import default_blocks
from atrium.workflows.dsl import (
    dump_yaml,
    load_yaml,
    parse_workflow,
    type_fits,
    value_fits,
    workflow_json_schema,
)
from atrium.workflows.expressions import check_template, evaluate, render
from atrium.workflows.graph import WorkflowValidationError, compile_workflow
from atrium.workflows.walk import check_inputs

REGISTRY = BlockRegistry(default_blocks())


@pytest.mark.parametrize(
    ("source", "target", "fits"),
    [
        ("integer", "number", True),
        ("number", "integer", False),
        ("string", "any", True),
        ("any", "integer", True),
        ("array[integer]", "array[number]", True),
        ("array[string]", "array[number]", False),
        ("array[object]", "array", True),
        ("object", "string", False),
    ],
)
def test_port_types_fit_like_json_types(source: str, target: str, fits: bool) -> None:
    assert type_fits(source, target) is fits


def test_values_are_checked_strictly() -> None:
    assert value_fits(3, "integer")
    assert not value_fits(True, "integer")  # a boolean is not a number
    assert not value_fits("3", "number")
    assert value_fits([1, 2], "array[integer]")
    assert not value_fits([1, "2"], "array[integer]")


def _definition(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "wf",
        "inputs": {"text": {"type": "string"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {
                "id": "count",
                "type": "transform",
                "config": {"expressions": {"n": "length(data)"}, "output_types": {"n": "integer"}},
            },
        ],
        "edges": [
            {"source": "start", "source_handle": "text", "target": "count", "target_handle": "data"}
        ],
    }
    return {**base, **changes}


def _problems(definition: dict[str, Any]) -> set[tuple[str | None, str]]:
    with pytest.raises(WorkflowValidationError) as caught:
        compile_workflow(parse_workflow(definition), REGISTRY)
    return {(p.node, p.field) for p in caught.value.problems}


def test_a_valid_definition_compiles_in_topological_order() -> None:
    graph = compile_workflow(parse_workflow(_definition()), REGISTRY)
    assert graph.order == ["start", "count"]


def test_type_mismatches_missing_inputs_and_unreachable_nodes_are_each_named() -> None:
    definition = _definition(
        nodes=[
            *_definition()["nodes"],
            {"id": "ask", "type": "llm", "config": {"prompt": "hi"}},
            {"id": "lonely", "type": "transform", "config": {"expressions": {"x": "`1`"}}},
            {"id": "approve", "type": "approval"},
            {"id": "fetch", "type": "http_request", "config": {"url": "https://example.com"}},
        ],
        edges=[
            *_definition()["edges"],
            {"source": "count", "source_handle": "n", "target": "ask", "target_handle": "text"},
            {"source": "start", "source_handle": "done", "target": "fetch"},
            {
                "source": "fetch",
                "source_handle": "status",
                "target": "approve",
                "target_handle": "nope",
            },
        ],
    )
    problems = _problems(definition)
    assert ("ask", "inputs.text") in problems  # integer into a string port
    assert ("lonely", "edges") in problems  # unreachable
    assert ("approve", "inputs.nope") in problems  # no such input


def test_schema_errors_come_all_at_once_in_one_400() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_workflow({"name": "runs", "nodes": [{"id": "1bad", "type": "start"}], "surprise": 1})
    message = caught.value.message
    assert "name" in message
    assert "reserved" in message
    assert "nodes.0.id" in message
    assert "surprise" in message


def test_control_handles_cannot_collide_with_outputs() -> None:
    definition = _definition(
        nodes=[
            *_definition()["nodes"],
            {
                "id": "pick",
                "type": "classifier",
                "config": {"categories": [{"name": "text", "description": "x"}]},
            },
        ],
        edges=[
            *_definition()["edges"],
            {"source": "start", "source_handle": "text", "target": "pick", "target_handle": "text"},
        ],
    )
    assert ("pick", "config") in _problems(definition) or (
        "pick",
        "config.categories",
    ) in _problems(definition)


def test_run_inputs_are_checked_before_a_run() -> None:
    graph = compile_workflow(parse_workflow(_definition()), REGISTRY)
    assert check_inputs(graph, {"text": "abc"}) == []
    assert check_inputs(graph, {}) == ["missing required input 'text' (string)"]
    assert check_inputs(graph, {"text": 1, "extra": 2}) == [
        "unknown input 'extra' (inputs: text)",
        "input 'text' must be string",
    ]


def test_yaml_round_trips_and_the_json_schema_is_exported() -> None:
    spec = parse_workflow(_definition())
    assert load_yaml(dump_yaml(spec)) == spec
    schema = workflow_json_schema()
    assert {"nodes", "edges", "inputs", "outputs"} <= set(schema["properties"])
    with pytest.raises(InvalidRequestError, match="not valid YAML"):
        load_yaml("nodes: [")


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ inputs.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{% for i in range(10**9) %}x{% endfor %}",
    ],
)
def test_templates_cannot_reach_python_internals(template: str) -> None:
    with pytest.raises(BlockError):
        render(template, {"inputs": {}})


def test_templates_cannot_include_files() -> None:
    assert check_template("{% include '/etc/passwd' %}") is not None
    assert check_template("{% import 'x' as y %}") is not None
    with pytest.raises(BlockError):
        render("{{ missing }}", {})  # undefined names fail rather than render empty


def test_templates_and_expressions_do_their_job() -> None:
    scope = {"rows": [{"qty": 2, "price": 3.5}, {"qty": 1, "price": 10}], "name": "Ann"}
    assert render("Hello {{ name }}: {{ rows | length }} rows", scope) == "Hello Ann: 2 rows"
    assert evaluate("rows[?qty > `1`].price", scope) == [3.5]
    assert evaluate("rows | map(attribute='qty') | sum", scope, "jinja") == 3
    assert evaluate("rows[0].qty * rows[0].price", scope, "jinja") == 7.0
    with pytest.raises(BlockError, match="expression"):
        evaluate("rows[0].__class__", scope, "jinja")


async def test_engine_blocks_are_never_run_as_plain_blocks() -> None:
    approval = REGISTRY.get("approval")
    assert approval is not None
    assert approval.kind == "engine"
    with pytest.raises(BlockError, match="no implementation for 'approval'"):
        await approval.run(None, approval.parse_config({}), {})  # type: ignore[arg-type]
