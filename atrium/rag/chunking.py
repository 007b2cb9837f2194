"""Token-aware chunking of parsed documents.

Text is split recursively, on paragraph breaks, then line breaks, then sentence ends,
then spaces, then (for one monstrous token) characters, until every piece fits the
budget; pieces are then packed greedily into chunks, each starting with the last
``overlap_tokens`` of the chunk before it. Tables are packed by rows, each chunk starting
with the table's header row. With ``heading_aware``, chunks never cross sections and
begin with the section's heading path.

Token counts come from the embedder's own tokenizer (``count_tokens``). Each piece is
counted once and each chunk once more to check the estimate, so chunking is linear in
the text; a chunk whose real count exceeds the limit (tokenizers are not exactly
additive) gives pieces back until it fits.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atrium.rag.types import Chunk, ParsedDocument, Section

__all__ = ["ChunkingSpec", "chunk_document"]

#: Where text may be cut, strongest first: paragraphs, lines, sentences, words.
_SEPARATORS = (
    re.compile(r"\n[ \t]*\n\s*"),
    re.compile(r"[ \t]*\n\s*"),
    # Western sentence ends need a space after them; CJK full stops (U+3002, U+FF01,
    # U+FF1F, U+FF1B) end a sentence with no space.
    re.compile("(?<=[.!?;\u2026])\\s+|(?<=[\u3002\uff01\uff1f\uff1b])"),
    re.compile(r"\s+"),
)
_LINE_LEVEL = 1
#: Text of more than this many characters per token of budget is cut at its separators
#: without being counted whole first: prose runs about 4 characters per token, so it
#: would rarely fit, and its parts are counted anyway. (Parts that do fit together are
#: packed back into one chunk.)
_COUNT_WHOLE_CHARS_PER_TOKEN = 4
_CHAR_LEVEL = len(_SEPARATORS)
_HEADING_JOINER = " > "


class ChunkingSpec(BaseModel):
    """How a knowledge base cuts documents into chunks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Literal["recursive", "parent_child"] = Field(
        default="recursive",
        description=(
            "'recursive': each chunk is both matched and returned. 'parent_child': small "
            "chunks are matched, and the larger parent passage around them is returned."
        ),
    )
    chunk_tokens: int = Field(
        default=200,
        ge=16,
        le=2048,
        description="Most tokens in a chunk, counted by the embedder's tokenizer.",
    )
    overlap_tokens: int = Field(
        default=32,
        ge=0,
        description="Tokens from the end of a chunk repeated at the start of the next.",
    )
    parent_tokens: int = Field(
        default=800,
        ge=16,
        le=8192,
        description="Most tokens in a parent passage (parent_child only).",
    )
    heading_aware: bool = Field(
        default=True,
        description=(
            "Keep chunks within one section and start each with its heading path; "
            "otherwise consecutive prose sections are chunked as one stream."
        ),
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if self.overlap_tokens >= self.chunk_tokens:
            raise ValueError(
                f"overlap_tokens ({self.overlap_tokens}) must be less than "
                f"chunk_tokens ({self.chunk_tokens})"
            )
        if self.strategy == "parent_child" and self.parent_tokens <= self.chunk_tokens:
            raise ValueError(
                f"parent_tokens ({self.parent_tokens}) must be greater than "
                f"chunk_tokens ({self.chunk_tokens}) for the parent_child strategy"
            )
        return self


def chunk_document(
    doc: ParsedDocument, spec: ChunkingSpec, count_tokens: Callable[[str], int]
) -> list[Chunk]:
    """Cut a parsed document into chunks of at most ``spec.chunk_tokens`` tokens.

    ``count_tokens`` must count what the embedder sees, special tokens included, and must
    not truncate. Chunks are numbered from 0 in reading order; none is empty, and every
    word of every section is in at least one chunk. The document title is not added
    (the indexer does that).
    """
    return _Chunker(spec, count_tokens).chunk(doc)


@dataclass(frozen=True, slots=True)
class _Piece:
    """A cut of a section's text that fits the budget: the unit chunks are packed from."""

    text: str
    #: Tokens of ``text`` without the tokenizer's fixed overhead (special tokens).
    tokens: int
    #: What stood between this piece and the one before it in the section's text.
    sep: str
    #: The first separator level that may cut this piece further.
    level: int
    origin: Section


@dataclass(frozen=True, slots=True)
class _Run:
    """Pieces chunked as one stream; every chunk of it starts with ``prefix``."""

    prefix: str
    pieces: list[_Piece]
    overlap: bool


@dataclass(frozen=True, slots=True)
class _Packed:
    """One chunk's pieces (the first ``carried`` repeated from the chunk before)."""

    pieces: list[_Piece]
    carried: int
    text: str
    tokens: int

    @property
    def origin(self) -> Section:
        return self.pieces[self.carried].origin


def _split_keep(text: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """``(separator before, part)`` pairs; blank parts are dropped, their separators kept."""
    parts: list[tuple[str, str]] = []
    position, sep = 0, ""
    for match in pattern.finditer(text):
        part = text[position : match.start()]
        if part.strip():
            parts.append((sep, part))
            sep = match.group()
        elif parts:
            sep += part + match.group()
        position = match.end()
    if text[position:].strip():
        parts.append((sep, text[position:]))
    return parts


def _render(prefix: str, pieces: list[_Piece]) -> str:
    body = pieces[0].text + "".join(piece.sep + piece.text for piece in pieces[1:])
    return f"{prefix}\n{body}" if prefix else body


class _Chunker:
    """Chunks documents for one spec and tokenizer."""

    def __init__(self, spec: ChunkingSpec, count_tokens: Callable[[str], int]) -> None:
        self._spec = spec
        self._count_tokens = count_tokens
        self._overhead = count_tokens("")

    def chunk(self, doc: ParsedDocument) -> list[Chunk]:
        chunks: list[Chunk] = []
        for run in self._runs(doc):
            for text, context, origin, tokens in self._chunk_run(run):
                chunks.append(
                    Chunk(
                        ordinal=len(chunks),
                        text=text,
                        context=context,
                        section=origin.heading,
                        page=origin.page,
                        token_count=tokens,
                    )
                )
        return chunks

    def _chunk_run(self, run: _Run) -> Iterator[tuple[str, str, Section, int]]:
        spec = self._spec
        overlap = spec.overlap_tokens if run.overlap else 0
        if spec.strategy == "recursive":
            for packed in self._pack(run.pieces, run.prefix, spec.chunk_tokens, overlap):
                yield packed.text, packed.text, packed.origin, packed.tokens
            return
        for parent in self._pack(run.pieces, run.prefix, spec.parent_tokens, 0):
            for child in self._pack(parent.pieces, run.prefix, spec.chunk_tokens, overlap):
                yield child.text, parent.text, child.origin, child.tokens

    # -- tokens --------------------------------------------------------------------------

    def _count(self, text: str) -> int:
        """Tokens of ``text`` as part of a longer text: without the fixed overhead."""
        return max(self._count_tokens(text) - self._overhead, 0)

    def _budget(self, limit: int, prefix: str) -> int:
        """Tokens left for pieces in a chunk of ``limit`` tokens that starts with ``prefix``."""
        prefix_tokens = self._count(prefix) if prefix else 0
        return max(limit - self._overhead - prefix_tokens, 1)

    # -- runs ----------------------------------------------------------------------------

    def _runs(self, doc: ParsedDocument) -> Iterator[_Run]:
        stream: list[_Piece] = []
        previous_heading: list[str] = []
        for section in doc.sections:
            text = section.text.strip()
            if not text:
                continue
            if section.kind == "table":
                yield from self._flush_stream(stream)
                yield self._table_run(section, text)
            elif self._spec.heading_aware:
                prefix = self._heading_prefix(section.heading)
                budget = self._budget(self._spec.chunk_tokens, prefix)
                yield _Run(prefix, self._split(text, budget, section), overlap=True)
            else:
                heading = section.heading.split(_HEADING_JOINER) if section.heading else []
                stream.extend(self._stream_pieces(section, text, heading, previous_heading))
                previous_heading = heading
        yield from self._flush_stream(stream)

    def _flush_stream(self, stream: list[_Piece]) -> Iterator[_Run]:
        if stream:
            yield _Run("", list(stream), overlap=True)
            stream.clear()

    def _stream_pieces(
        self, section: Section, text: str, heading: list[str], previous: list[str]
    ) -> list[_Piece]:
        """A section's pieces in a heading-unaware stream, after its new heading lines."""
        budget = self._budget(self._spec.chunk_tokens, "")
        common = 0
        while common < min(len(heading), len(previous)) and heading[common] == previous[common]:
            common += 1
        pieces: list[_Piece] = []
        for title in heading[common:]:
            pieces += self._split(title, budget, section, sep="\n" if pieces else "\n\n")
        return pieces + self._split(text, budget, section, sep="\n" if pieces else "\n\n")

    def _heading_prefix(self, heading: str | None) -> str:
        """The heading path to start chunks with: in full, the last part, or nothing."""
        if not (self._spec.heading_aware and heading):
            return ""
        most = self._spec.chunk_tokens // 4
        leaf = heading.rsplit(_HEADING_JOINER, 1)[-1]
        for candidate in (heading, leaf):
            if self._count(candidate) <= most:
                return candidate
        return ""

    def _table_run(self, section: Section, text: str) -> _Run:
        """Rows as pieces; the header row starts every chunk unless it is too long."""
        header, _, rows = text.partition("\n")
        heading = self._heading_prefix(section.heading)
        if not rows.strip() or self._count(header) > self._spec.chunk_tokens // 2:
            header, rows = "", text
        prefix = "\n".join(part for part in (heading, header) if part)
        budget = self._budget(self._spec.chunk_tokens, prefix)
        pieces = self._split(rows.strip(), budget, section, level=_LINE_LEVEL)
        return _Run(prefix, pieces, overlap=False)

    # -- splitting -----------------------------------------------------------------------

    def _split(
        self,
        text: str,
        budget: int,
        origin: Section,
        *,
        level: int = 0,
        sep: str = "",
        tokens: int | None = None,
    ) -> list[_Piece]:
        """Cut ``text`` at the strongest separators that make every piece fit ``budget``."""
        short = len(text) <= budget * _COUNT_WHOLE_CHARS_PER_TOKEN
        if tokens is None and (short or level >= _CHAR_LEVEL):
            tokens = self._count(text)
        if tokens is not None:
            if tokens <= budget:
                return [_Piece(text, tokens, sep, level, origin)]
            if level >= _CHAR_LEVEL:
                return self._split_chars(text, tokens, budget, origin, sep)
        parts = _split_keep(text, _SEPARATORS[level])
        if len(parts) == 1:
            known = tokens if parts[0][1] == text else None
            return self._split(parts[0][1], budget, origin, level=level + 1, sep=sep, tokens=known)
        pieces: list[_Piece] = []
        for index, (part_sep, part) in enumerate(parts):
            first_sep = sep if index == 0 else part_sep
            pieces += self._split(part, budget, origin, level=level + 1, sep=first_sep)
        return pieces

    def _split_chars(
        self, text: str, tokens: int, budget: int, origin: Section, sep: str
    ) -> list[_Piece]:
        """A single token-heavy word: slices sized by its characters per token."""
        size = max(1, len(text) * budget // tokens)
        pieces: list[_Piece] = []
        start = 0
        while start < len(text):
            length = size
            part = text[start : start + length]
            count = self._count(part)
            while count > budget and length > 1:
                length = max(1, min(length - 1, length * budget // count))
                part = text[start : start + length]
                count = self._count(part)
            pieces.append(_Piece(part, count, sep if start == 0 else "", _CHAR_LEVEL, origin))
            start += length
        return pieces

    # -- packing -------------------------------------------------------------------------

    def _pack(self, pieces: list[_Piece], prefix: str, limit: int, overlap: int) -> list[_Packed]:
        """Pack pieces greedily into chunks of at most ``limit`` tokens, with overlap."""
        budget = self._budget(limit, prefix)
        pieces = list(pieces)  # pieces too long once rendered are cut in place
        packed: list[_Packed] = []
        carry: list[_Piece] = []
        index = 0
        while index < len(pieces):
            group = list(carry)
            total = sum(piece.tokens for piece in group)
            while group and total + pieces[index].tokens > budget:
                total -= group.pop(0).tokens
            carried = len(group)
            while index < len(pieces) and (
                len(group) == carried or total + pieces[index].tokens <= budget
            ):
                group.append(pieces[index])
                total += pieces[index].tokens
                index += 1
            chunk = self._fit(group, carried, prefix, limit)
            if chunk is None:
                # The only new piece is too long once rendered: cut it finer and retry.
                index -= 1
                pieces[index : index + 1] = self._cut_finer(pieces[index], budget)
                carry = []
                continue
            index -= (len(group) - carried) - (len(chunk.pieces) - chunk.carried)
            packed.append(chunk)
            carry = self._tail(chunk.pieces, overlap) if overlap else []
        return packed

    def _fit(self, group: list[_Piece], carried: int, prefix: str, limit: int) -> _Packed | None:
        """Count the rendered chunk; give back trailing, then carried pieces until it fits."""
        text = _render(prefix, group)
        if len(group) == 1 and not prefix:
            tokens = group[0].tokens + self._overhead  # counted already, exactly this text
        else:
            tokens = self._count_tokens(text)
        while tokens > limit and (len(group) > carried + 1 or carried):
            if len(group) > carried + 1:
                group = group[:-1]
            else:
                group, carried = group[carried:], 0
            text = _render(prefix, group)
            tokens = self._count_tokens(text)
        if tokens <= limit:
            return _Packed(group, carried, text, tokens)
        piece = group[-1]
        if len(piece.text) == 1 or piece.level > _CHAR_LEVEL:
            # Nothing left to cut: the prefix is what does not fit, so leave it out.
            return _Packed(group, carried, piece.text, self._count_tokens(piece.text))
        return None

    def _cut_finer(self, piece: _Piece, budget: int) -> list[_Piece]:
        smaller = max(1, min(piece.tokens - 1, budget - 1))
        pieces = self._split(
            piece.text, smaller, piece.origin, level=piece.level, sep=piece.sep, tokens=piece.tokens
        )
        if len(pieces) == 1:  # a piece of one token that cannot be cut: mark it final
            return [_Piece(piece.text, piece.tokens, piece.sep, _CHAR_LEVEL + 1, piece.origin)]
        return pieces

    def _tail(self, pieces: list[_Piece], overlap: int) -> list[_Piece]:
        """The whole pieces at the end of a chunk within ``overlap`` tokens, or part of one."""
        tail: list[_Piece] = []
        total = 0
        for piece in reversed(pieces):
            if total + piece.tokens > overlap:
                return tail or self._tail_of(piece, overlap)
            tail.insert(0, piece)
            total += piece.tokens
        return tail

    def _tail_of(self, piece: _Piece, overlap: int) -> list[_Piece]:
        """The end of one piece within ``overlap`` tokens: its last sentences, else words.

        How many parts to take is estimated from the piece's tokens per character and then
        counted, so a chunk boundary costs a count or two of about ``overlap`` tokens.
        """
        for level in range(piece.level, _CHAR_LEVEL):
            parts = _split_keep(piece.text, _SEPARATORS[level])
            if len(parts) > 1:
                break
        else:
            return []
        per_char = piece.tokens / len(piece.text)
        take, length = 0, 0
        while take < len(parts):
            added = len(parts[-take - 1][1]) + (len(parts[-take][0]) if take else 0)
            if (length + added) * per_char > overlap:
                break
            take, length = take + 1, length + added
        while take > 0:
            chosen = parts[-take:]
            text = chosen[0][1] + "".join(sep + part for sep, part in chosen[1:])
            count = self._count(text)
            if count <= overlap:
                return [_Piece(text, count, chosen[0][0], level, piece.origin)]
            take = min(take - 1, take * overlap // count)
        sep, last = parts[-1]  # even the last part is too long: take the end of it
        estimate = round(len(last) * per_char) + 1
        return self._tail_of(_Piece(last, estimate, sep, level + 1, piece.origin), overlap)
