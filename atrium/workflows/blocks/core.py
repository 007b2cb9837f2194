"""The blocks the engine itself needs: Start, End, Transform, Condition, Parallel, and the
engine-run blocks (Human Approval, Sub-workflow, Map) whose ``run`` the engine replaces."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, model_validator

from atrium.workflows.blocks.base import (
    Block,
    BlockConfig,
    BlockContext,
    BlockError,
    BlockResult,
)
from atrium.workflows.dsl import IDENT, PortSpec
from atrium.workflows.expressions import Language, check_expression, evaluate, truthy


class StartBlock(Block):
    """The entry: outputs the workflow's inputs (one port per declared input)."""

    type = "start"
    title = "Start"
    description = "Where a run begins; its outputs are the workflow's inputs."
    category = "flow"
    kind = "pure"

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        return BlockResult(dict(ctx.workflow_inputs))


class EndConfig(BlockConfig):
    """Ports the End block collects (each becomes a workflow output of the same name)."""

    outputs: dict[str, PortSpec] = Field(
        default_factory=dict, description="Output name -> its type; each is an input to connect."
    )


class EndBlock(Block):
    """Collects values; each of its inputs is a workflow output."""

    type = "end"
    title = "End"
    description = "Collects the run's results; each input becomes a workflow output."
    category = "flow"
    kind = "pure"
    Config = EndConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        assert isinstance(config, EndConfig)
        return dict(config.outputs)

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        assert isinstance(config, EndConfig)
        return dict(config.outputs)

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        return BlockResult(dict(inputs))


_IDENT_NAME = re.compile(IDENT)


def _valid_expression(value: str, language: Language = "jmespath") -> str:
    problem = check_expression(value, language)
    if problem is not None:
        msg = f"invalid JMESPath expression: {problem}"
        raise ValueError(msg)
    return value


class TransformConfig(BlockConfig):
    """Named expressions over the block's inputs, ``inputs``, ``vars`` and ``nodes``."""

    language: Language = Field("jmespath", description="jmespath, or jinja for arithmetic.")
    expressions: dict[str, str] = Field(
        min_length=1, description="Output name -> the expression computing it."
    )
    output_types: dict[str, str] = Field(
        default_factory=dict, description="Declared type per output (default any)."
    )

    @model_validator(mode="after")
    def _compile(self) -> TransformConfig:
        for name, source in self.expressions.items():
            if not _IDENT_NAME.match(name):
                msg = f"output name {name!r} must be an identifier"
                raise ValueError(msg)
            try:
                _valid_expression(source, self.language)
            except ValueError as exc:
                msg = f"expressions.{name}: {exc}"
                raise ValueError(msg) from None
        return self


class TransformBlock(Block):
    """Reshape data with JMESPath (no code, no I/O: safe to recompute on replay)."""

    type = "transform"
    title = "Transform"
    description = "Compute outputs from JMESPath expressions over the inputs."
    category = "data"
    kind = "pure"
    Config = TransformConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"data": PortSpec(type="any", required=False)}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        assert isinstance(config, TransformConfig)
        return {
            name: PortSpec(type=config.output_types.get(name, "any")) for name in config.expressions
        }

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, TransformConfig)
        scope = ctx.template_scope(inputs)
        return BlockResult(
            {
                name: evaluate(src, scope, config.language)
                for name, src in config.expressions.items()
            }
        )


class ConditionConfig(BlockConfig):
    """An expression; its truth picks the ``true`` or the ``false`` handle."""

    language: Language = Field("jmespath", description="jmespath, or jinja.")
    expression: str = Field(description="True takes the `true` handle, false the `false` one.")

    @model_validator(mode="after")
    def _compile(self) -> ConditionConfig:
        _valid_expression(self.expression, self.language)
        return self


class ConditionBlock(Block):
    """Branch on an expression; the branch not taken is skipped."""

    type = "condition"
    title = "Condition"
    description = "Take the true or the false branch by a JMESPath expression."
    category = "flow"
    kind = "pure"
    Config = ConditionConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"value": PortSpec(type="any", required=False)}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"value": PortSpec(type="any", required=False), "result": PortSpec(type="boolean")}

    def control_handles(self, config: BlockConfig) -> tuple[str, ...]:
        return ("true", "false")

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        assert isinstance(config, ConditionConfig)
        result = truthy(evaluate(config.expression, ctx.template_scope(inputs), config.language))
        outputs = {"result": result, "value": inputs.get("value")}
        return BlockResult(outputs, handles=("true" if result else "false", "done"))


class ParallelBlock(Block):
    """A fan-out point: every edge from ``done`` starts a branch; joins wait for all."""

    type = "parallel"
    title = "Parallel"
    description = "Fan out into branches that run at the same time; a join waits for all."
    category = "flow"
    kind = "pure"

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"value": PortSpec(type="any", required=False)}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"value": PortSpec(type="any", required=False)}

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        return BlockResult({"value": inputs.get("value")})


class EngineBlock(Block):
    """A block the engine executes itself (a durable wait, child runs), not by ``run``."""

    kind = "engine"

    async def run(
        self, ctx: BlockContext, config: BlockConfig, inputs: dict[str, Any]
    ) -> BlockResult:
        # The engine dispatches on the block's type before it would call this; reaching
        # it means a block was given kind "engine" without an engine implementation.
        msg = f"the engine has no implementation for {self.type!r} blocks"
        raise BlockError(msg)


class ApprovalConfig(BlockConfig):
    """What the approver sees, and how long the run waits."""

    message: str = Field("Approve to continue.", description="A template over the inputs.")
    timeout_hours: float = Field(
        72.0, gt=0, le=24 * 365, description="Without a decision by then, the block fails."
    )


class ApprovalBlock(EngineBlock):
    """Wait, durably and across restarts, until a person approves or rejects."""

    type = "approval"
    title = "Human Approval"
    description = (
        "Pause until approved or rejected through the API; approved and rejected are handles."
    )
    category = "flow"
    Config = ApprovalConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"value": PortSpec(type="any", required=False)}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "value": PortSpec(type="any", required=False),
            "decision": PortSpec(type="string", description="approved or rejected"),
            "message": PortSpec(type="string"),
            "approver": PortSpec(type="string", required=False),
            "comment": PortSpec(type="string", required=False),
        }

    def control_handles(self, config: BlockConfig) -> tuple[str, ...]:
        return ("approved", "rejected")


class SubworkflowConfig(BlockConfig):
    """Another saved workflow, by id or name, at its published version unless pinned."""

    workflow: str = Field(description="The workflow to run (name or id).")
    version: int | None = Field(None, ge=1, description="Pin a version (default: published).")


class SubworkflowBlock(EngineBlock):
    """Run another workflow as a child run; its inputs are this block's ``inputs`` object."""

    type = "subworkflow"
    title = "Sub-workflow"
    description = "Run another workflow as a durable child run and return its outputs."
    category = "flow"
    Config = SubworkflowConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"inputs": PortSpec(type="object", required=False, default={})}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"outputs": PortSpec(type="object"), "run_id": PortSpec(type="string")}


class MapConfig(SubworkflowConfig):
    """Run a workflow once per item, at most ``concurrency`` at a time."""

    item_input: str = Field("item", pattern=IDENT, description="The child input given each item.")
    concurrency: int = Field(4, ge=1, le=64, description="Child runs at once.")
    max_items: int = Field(1000, ge=1, le=100_000, description="More items fail the block.")


class MapBlock(EngineBlock):
    """Loop / map over a list: one durable child run per item, results in order."""

    type = "map"
    title = "Map"
    description = "Run a workflow for each item of a list with a concurrency limit."
    category = "flow"
    Config = MapConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "items": PortSpec(type="array"),
            "inputs": PortSpec(type="object", required=False, default={}),
        }

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"results": PortSpec(type="array[object]"), "count": PortSpec(type="integer")}


class LoopConfig(SubworkflowConfig):
    """Run a workflow again and again, each run's outputs feeding the next, until done."""

    until: str = Field(
        description=(
            "An expression over `outputs` (the last run's) and `iteration` (1, 2, ...): "
            "the loop stops once it is true."
        )
    )
    language: Language = Field("jmespath", description="jmespath, or jinja.")
    max_iterations: int = Field(10, ge=1, le=1000, description="A hard stop.")
    carry: bool = Field(True, description="Merge each run's outputs into the next run's inputs.")

    @model_validator(mode="after")
    def _compile(self) -> LoopConfig:
        _valid_expression(self.until, self.language)
        return self


class LoopBlock(EngineBlock):
    """A loop: durable child runs one after another until a condition holds."""

    type = "loop"
    title = "Loop"
    description = "Repeat a workflow until a condition on its outputs holds (or a limit)."
    category = "flow"
    Config = LoopConfig

    def inputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {"inputs": PortSpec(type="object", required=False, default={})}

    def outputs(self, config: BlockConfig) -> dict[str, PortSpec]:
        return {
            "outputs": PortSpec(type="object"),
            "iterations": PortSpec(type="integer"),
            "history": PortSpec(type="array[object]"),
        }


def core_blocks() -> list[Block]:
    """The blocks every engine has."""
    return [
        StartBlock(),
        EndBlock(),
        TransformBlock(),
        ConditionBlock(),
        ParallelBlock(),
        ApprovalBlock(),
        SubworkflowBlock(),
        MapBlock(),
        LoopBlock(),
    ]
