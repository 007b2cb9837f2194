"""Every block a default engine offers: the core blocks, then AI, integration and documents."""

from __future__ import annotations

from atrium.workflows.blocks.agent import AgentBlock
from atrium.workflows.blocks.artifacts import SaveArtifactBlock
from atrium.workflows.blocks.base import Block
from atrium.workflows.blocks.core import core_blocks
from atrium.workflows.blocks.documents import AnalyzeDocumentBlock, GenerateReportBlock
from atrium.workflows.blocks.http import HttpRequestBlock
from atrium.workflows.blocks.llm import ClassifierBlock, LlmBlock
from atrium.workflows.blocks.notify import NotifyBlock
from atrium.workflows.blocks.retrieve import RetrieveBlock


def default_blocks() -> list[Block]:
    """One instance of each block type, for a ``BlockRegistry``.

    The Agent's ``block`` tools may run any of the other blocks here (not an agent: a
    tool that starts another agent loop is left out by construction).
    """
    blocks: list[Block] = [
        *core_blocks(),
        LlmBlock(),
        ClassifierBlock(),
        RetrieveBlock(),
        HttpRequestBlock(),
        NotifyBlock(),
        AnalyzeDocumentBlock(),
        GenerateReportBlock(),
        SaveArtifactBlock(),
    ]
    by_type = {block.type: block for block in blocks}
    return [*blocks, AgentBlock(by_type.get)]


__all__ = ["default_blocks"]
