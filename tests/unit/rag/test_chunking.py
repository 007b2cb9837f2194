"""chunk_document: limits, coverage, overlap, headings, tables and parent-child, checked as
properties over generated documents with several tokenizers, the real MiniLM one included."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

from atrium.rag.chunking import ChunkingSpec, chunk_document
from atrium.rag.types import Chunk, ParsedDocument, Section
from atrium.runtime.embedders.minilm import MiniLMEmbedder, bundled_model_paths

Counter = Callable[[str], int]
WORD = re.compile(r"\bw\d+\b")


def whitespace_tokens(text: str) -> int:
    return len(text.split())


def tokens_with_specials(text: str) -> int:
    """Like a BERT tokenizer: two special tokens around every text."""
    return len(text.split()) + 2


def tokens_counting_newlines(text: str) -> int:
    """Not additive: the separators that join pieces cost tokens of their own."""
    return len(text.split()) + text.count("\n")


@pytest.fixture(scope="module")
def minilm_tokens() -> Counter:
    """The bundled embedder's own counter: special tokens included, no truncation."""
    return MiniLMEmbedder(*bundled_model_paths()).count_tokens


def words(text: str) -> list[str]:
    return WORD.findall(text)


def generated_doc(seed: int) -> ParsedDocument:
    """Sections of prose and tables whose words (w0, w1, ...) are numbered in reading order."""
    rng = random.Random(seed)
    numbers = itertools.count()

    def sentence(length: int) -> str:
        return " ".join(f"w{next(numbers)}" for _ in range(length)) + rng.choice(".!?")

    sections = []
    headings = [None, "Intro", "Intro > Scope", "Results", "Results > Table 2 > Notes"]
    for index in range(rng.randint(2, 6)):
        heading, page = rng.choice(headings), rng.choice([None, index + 1])
        if rng.random() < 0.25:
            header = " | ".join(f"h{column}" for column in range(3))
            rows = [
                " | ".join(
                    " ".join(f"w{next(numbers)}" for _ in range(rng.randint(1, 4)))
                    for _ in range(3)
                )
                for _ in range(rng.randint(1, 30))
            ]
            sections.append(Section("\n".join([header, *rows]), heading, page, kind="table"))
            continue
        paragraphs = []
        for _ in range(rng.randint(1, 8)):
            lengths = [rng.choice([3, 8, 15, 25, 40, 150]) for _ in range(rng.randint(1, 6))]
            joiner = rng.choice([" ", "\n"])
            paragraphs.append(joiner.join(sentence(length) for length in lengths))
        sections.append(Section("\n\n".join(paragraphs), heading, page))
    return ParsedDocument(sections=sections, doc_type="text", title="Not In Chunks")


def section_of_words(doc: ParsedDocument) -> dict[str, int]:
    return {
        word: index for index, section in enumerate(doc.sections) for word in words(section.text)
    }


def check_chunks(
    doc: ParsedDocument, spec: ChunkingSpec, count: Counter, chunks: list[Chunk]
) -> None:
    """The properties every chunking must have."""
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert chunk.text.strip()
        assert chunk.token_count == count(chunk.text) <= spec.chunk_tokens
        assert "Not In Chunks" not in chunk.text
        if spec.strategy == "recursive":
            assert chunk.context == chunk.text
        else:
            assert count(chunk.context) <= spec.parent_tokens
            assert set(words(chunk.text)) <= set(words(chunk.context))
    seen = [word for chunk in chunks for word in words(chunk.text)]
    # Nothing lost, nothing invented, and in reading order.
    assert set(seen) == set(words(doc.text))
    first_seen = [int(word[1:]) for word in dict.fromkeys(seen)]
    assert first_seen == sorted(first_seen)
    if spec.heading_aware:
        check_sections(doc, chunks)


def check_sections(doc: ParsedDocument, chunks: list[Chunk]) -> None:
    """No chunk straddles sections; each carries its section's heading, page and prefix."""
    owner = section_of_words(doc)
    for chunk in chunks:
        (index,) = {owner[word] for word in words(chunk.text)}
        section = doc.sections[index]
        assert (chunk.section, chunk.page) == (section.heading, section.page)
        body = chunk.text
        if section.heading:
            # The heading path, or its last part where the path is long for the chunk.
            prefix, body = chunk.text.split("\n", 1)
            assert prefix in (section.heading, section.heading.split(" > ")[-1])
        if section.kind == "table":
            header, *lines = body.split("\n")
            assert header == "h0 | h1 | h2"
            # Whole rows, or where a row is longer than the budget, runs of its words.
            rows = section.text.split("\n")[1:]
            assert all(any(line in row for row in rows) for line in lines)


def overlaps(chunks: list[Chunk], owner: dict[str, int]) -> list[list[str]]:
    """Per boundary between chunks of one section: the words the second repeats."""
    result = []
    for before, after in itertools.pairwise(chunks):
        first, second = words(before.text), words(after.text)
        if not first or not second or owner[first[0]] != owner[second[0]]:
            continue
        shared = [word for word in second if word in set(first)]
        # The overlap is a contiguous run: the end of one chunk, the start of the next.
        assert shared == second[: len(shared)] == first[len(first) - len(shared) :]
        result.append(shared)
    return result


SPECS = [
    ChunkingSpec(),
    ChunkingSpec(chunk_tokens=16, overlap_tokens=0),
    ChunkingSpec(chunk_tokens=48, overlap_tokens=12),
    ChunkingSpec(chunk_tokens=100, overlap_tokens=99),
    ChunkingSpec(chunk_tokens=64, overlap_tokens=16, heading_aware=False),
    ChunkingSpec(strategy="parent_child", chunk_tokens=32, overlap_tokens=8, parent_tokens=128),
    ChunkingSpec(strategy="parent_child", chunk_tokens=64, parent_tokens=65, heading_aware=False),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.model_dump_json())
@pytest.mark.parametrize(
    "count", [whitespace_tokens, tokens_with_specials, tokens_counting_newlines]
)
def test_properties_over_generated_documents(spec: ChunkingSpec, count: Counter) -> None:
    for seed in range(12):
        doc = generated_doc(seed)
        check_chunks(doc, spec, count, chunk_document(doc, spec, count))


@pytest.mark.parametrize("spec", SPECS[:1] + SPECS[2:3] + SPECS[4:6], ids=str)
def test_properties_with_the_minilm_tokenizer(spec: ChunkingSpec, minilm_tokens: Counter) -> None:
    for seed in range(6):
        doc = generated_doc(seed)
        check_chunks(doc, spec, minilm_tokens, chunk_document(doc, spec, minilm_tokens))


def test_minilm_chunks_of_real_prose_fill_the_budget(minilm_tokens: Counter) -> None:
    prose = (
        "Retrieval-augmented generation grounds a model's answer in passages found at "
        "query time. The passages come from a knowledge base, cut into chunks small enough "
        "to embed well and large enough to stand alone! Is overlap useful? Usually, a little."
    )
    doc = ParsedDocument([Section("\n\n".join([prose] * 12), "Guide > Chunking")], "text")
    spec = ChunkingSpec(chunk_tokens=128, overlap_tokens=24)
    chunks = chunk_document(doc, spec, minilm_tokens)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text.startswith("Guide > Chunking\n")
        assert chunk.token_count == minilm_tokens(chunk.text) <= 128
    # Greedy packing: every chunk but the last is close to full.
    assert all(chunk.token_count > 128 - 60 for chunk in chunks[:-1])


# -- overlap ---------------------------------------------------------------------------


def test_overlap_is_whole_sentences_when_they_fit() -> None:
    sentences = [" ".join(f"w{n * 10 + k}" for k in range(10)) + "." for n in range(30)]
    doc = ParsedDocument([Section(" ".join(sentences))], "text")
    spec = ChunkingSpec(chunk_tokens=50, overlap_tokens=12)
    chunks = chunk_document(doc, spec, whitespace_tokens)
    assert len(chunks) > 5
    for before, after in itertools.pairwise(chunks):
        last_sentence = before.text.split(". ")[-1]
        assert after.text.startswith(last_sentence)
        assert len(last_sentence.split()) == 10
    check_chunks(doc, spec, whitespace_tokens, chunks)


def test_overlap_falls_back_to_words_within_a_long_sentence() -> None:
    doc = ParsedDocument([Section(" ".join(f"w{n}" for n in range(400)))], "text")
    spec = ChunkingSpec(chunk_tokens=40, overlap_tokens=8)
    chunks = chunk_document(doc, spec, whitespace_tokens)
    for before, after in itertools.pairwise(chunks):
        assert words(after.text)[:8] == words(before.text)[-8:]
        assert words(after.text)[8] not in before.text.split()
    check_chunks(doc, spec, whitespace_tokens, chunks)


def test_overlap_is_present_and_bounded_in_generated_documents() -> None:
    spec = ChunkingSpec(chunk_tokens=60, overlap_tokens=15)
    boundaries = []
    for seed in range(12):
        doc = generated_doc(seed)
        doc = ParsedDocument([s for s in doc.sections if s.kind == "text"], "text")
        chunks = chunk_document(doc, spec, whitespace_tokens)
        boundaries += overlaps(chunks, section_of_words(doc))
    assert all(len(shared) <= 15 for shared in boundaries)
    # Overlap is dropped only where the next piece would not fit beside it.
    assert sum(1 for shared in boundaries if shared) > 0.8 * len(boundaries)


def test_no_overlap_when_it_is_zero_and_never_between_table_chunks() -> None:
    prose = ParsedDocument([Section(" ".join(f"w{n}." for n in range(200)))], "text")
    spec = ChunkingSpec(chunk_tokens=40, overlap_tokens=0)
    chunks = chunk_document(prose, spec, whitespace_tokens)
    seen = [word for chunk in chunks for word in words(chunk.text)]
    assert len(chunks) == 5
    assert seen == [f"w{n}" for n in range(200)]
    rows = "\n".join(f"w{n} | x" for n in range(100))
    table = ParsedDocument([Section(f"id | value\n{rows}", kind="table")], "csv")
    chunks = chunk_document(
        table, ChunkingSpec(chunk_tokens=40, overlap_tokens=20), whitespace_tokens
    )
    seen = [word for chunk in chunks for word in words(chunk.text)]
    assert len(chunks) > 5
    assert seen == [f"w{n}" for n in range(100)]


# -- sections, headings, tables --------------------------------------------------------


def test_long_headings_are_shortened_to_their_last_part_or_left_out() -> None:
    long_path = " > ".join(["Part"] * 10) + " > Leaf"
    huge = " ".join(["Heading"] * 40)
    doc = ParsedDocument([Section("w1 w2 w3.", long_path, page=7), Section("w4 w5.", huge)], "text")
    chunks = chunk_document(doc, ChunkingSpec(chunk_tokens=32, overlap_tokens=0), whitespace_tokens)
    assert [chunk.text for chunk in chunks] == ["Leaf\nw1 w2 w3.", "w4 w5."]
    assert [(chunk.section, chunk.page) for chunk in chunks] == [(long_path, 7), (huge, None)]


def test_heading_unaware_chunks_flow_across_sections_with_heading_lines() -> None:
    doc = ParsedDocument(
        [
            Section("w1 w2.", "Intro", page=1),
            Section("w3 w4.", "Intro > Scope", page=1),
            Section("w5 w6.", "Usage", page=2),
        ],
        "text",
    )
    spec = ChunkingSpec(chunk_tokens=200, heading_aware=False)
    (chunk,) = chunk_document(doc, spec, whitespace_tokens)
    assert chunk.text == "Intro\nw1 w2.\n\nScope\nw3 w4.\n\nUsage\nw5 w6."
    assert (chunk.section, chunk.page) == ("Intro", 1)


def test_table_rows_are_never_split_and_every_chunk_starts_with_the_header() -> None:
    rows = [f"r{n} | w{n} | {'x ' * (n % 5)}end" for n in range(60)]
    doc = ParsedDocument(
        [Section("\n".join(["id | name | notes", *rows]), "Staff", kind="table")], "csv"
    )
    chunks = chunk_document(doc, ChunkingSpec(chunk_tokens=40), whitespace_tokens)
    assert len(chunks) > 5
    got = []
    for chunk in chunks:
        heading, header, *body = chunk.text.split("\n")
        assert (heading, header) == ("Staff", "id | name | notes")
        assert chunk.token_count <= 40
        got += body
    assert got == rows


def test_a_row_longer_than_the_budget_is_split_by_words() -> None:
    long_row = "r1 | " + " ".join(f"w{n}" for n in range(100))
    doc = ParsedDocument([Section(f"id | text\n{long_row}\nr2 | short", kind="table")], "csv")
    chunks = chunk_document(doc, ChunkingSpec(chunk_tokens=30, overlap_tokens=0), whitespace_tokens)
    assert all(chunk.text.startswith("id | text\n") for chunk in chunks)
    assert all(chunk.token_count <= 30 for chunk in chunks)
    bodies = " ".join(chunk.text.split("\n", 1)[1] for chunk in chunks)
    assert len(chunks) > 3
    assert bodies.replace("\n", " ") == f"{long_row} r2 | short"


def test_a_table_of_only_a_header_or_with_a_huge_header_is_chunked_as_rows() -> None:
    header_only = ParsedDocument([Section("a | b | c", kind="table")], "csv")
    (chunk,) = chunk_document(header_only, ChunkingSpec(), whitespace_tokens)
    assert chunk.text == "a | b | c"
    wide = " | ".join(f"h{n}" for n in range(13))  # 25 tokens: too many to repeat in 40
    rows = [f"w{n} | x" for n in range(10)]
    doc = ParsedDocument([Section("\n".join([wide, *rows]), kind="table")], "csv")
    chunks = chunk_document(doc, ChunkingSpec(chunk_tokens=40), whitespace_tokens)
    assert [chunk.text for chunk in chunks] == ["\n".join([wide, *rows[:5]]), "\n".join(rows[5:])]


def test_a_token_heavy_word_is_cut_by_characters() -> None:
    def characters(text: str) -> int:
        return len(text)

    word = "".join(chr(ord("a") + n % 26) for n in range(500))
    doc = ParsedDocument([Section(f"short words then {word}")], "text")
    spec = ChunkingSpec(chunk_tokens=64, overlap_tokens=0)
    chunks = chunk_document(doc, spec, characters)
    assert all(0 < chunk.token_count <= 64 for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks).replace(" ", "") == f"shortwordsthen{word}"


def test_empty_sections_and_documents_give_no_chunks() -> None:
    doc = ParsedDocument([Section("  \n\n "), Section("w1.", "H"), Section("", "Empty")], "text")
    chunks = chunk_document(doc, ChunkingSpec(), whitespace_tokens)
    assert [(chunk.ordinal, chunk.text) for chunk in chunks] == [(0, "H\nw1.")]
    assert chunk_document(ParsedDocument([], "text"), ChunkingSpec(), whitespace_tokens) == []


# -- parent-child ----------------------------------------------------------------------


def test_parent_child_children_are_matched_and_the_parent_is_returned() -> None:
    sentences = [" ".join(f"w{n * 8 + k}" for k in range(8)) + "." for n in range(60)]
    doc = ParsedDocument([Section(" ".join(sentences), "Manual", page=3)], "text")
    spec = ChunkingSpec(
        strategy="parent_child", chunk_tokens=30, overlap_tokens=8, parent_tokens=100
    )
    chunks = chunk_document(doc, spec, whitespace_tokens)
    parents = list(dict.fromkeys(chunk.context for chunk in chunks))
    assert len(parents) > 3
    for parent in parents:
        assert parent.startswith("Manual\n")
        assert 60 < whitespace_tokens(parent) <= 100
        children = [chunk for chunk in chunks if chunk.context == parent]
        assert len(children) > 2
        for child in children:
            assert child.text.startswith("Manual\n")
            assert child.text.removeprefix("Manual\n") in parent
            assert (child.section, child.page) == ("Manual", 3)
    # Parents do not overlap each other; together they hold the whole text once.
    bodies = [parent.removeprefix("Manual\n") for parent in parents]
    assert " ".join(bodies) == " ".join(sentences)
    check_chunks(doc, spec, whitespace_tokens, chunks)


# -- the spec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"chunk_tokens": 100, "overlap_tokens": 100}, "overlap_tokens (100) must be less than"),
        ({"chunk_tokens": 8}, "greater than or equal to 16"),
        ({"chunk_tokens": 4096}, "less than or equal to 2048"),
        ({"overlap_tokens": -1}, "greater than or equal to 0"),
        (
            {"strategy": "parent_child", "chunk_tokens": 800, "parent_tokens": 800},
            "parent_tokens (800) must be greater than chunk_tokens (800)",
        ),
        ({"strategy": "semantic"}, "'recursive' or 'parent_child'"),
        ({"chunk_size": 100}, "Extra inputs are not permitted"),
    ],
)
def test_spec_validation_errors_say_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        ChunkingSpec(**fields)


def test_spec_is_frozen_documented_and_parent_size_matters_only_for_parent_child() -> None:
    spec = ChunkingSpec(chunk_tokens=1000, overlap_tokens=100)  # parent_tokens 800 unused
    assert spec.strategy == "recursive"
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        spec.chunk_tokens = 10  # type: ignore[misc]
    for name, field in ChunkingSpec.model_fields.items():
        assert field.description, name
