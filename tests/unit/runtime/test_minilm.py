"""MiniLMEmbedder against the real bundled all-MiniLM-L6-v2 (int8 ONNX) model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from atrium.runtime.embedders import EmbeddingBatch, MiniLMEmbedder, bundled_model_paths

EATING = "A man is eating food."
BREAD = "A man is eating a piece of bread."
STOCKS = "The stock market fell sharply today."


@pytest.fixture(scope="module")
def paths() -> tuple[Path, Path]:
    return bundled_model_paths()


@pytest.fixture(scope="module")
def embedder(paths: tuple[Path, Path]) -> MiniLMEmbedder:
    return MiniLMEmbedder(*paths, max_tokens=256, batch_size=32)


def _cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _reference_embedding(paths: tuple[Path, Path], text: str) -> npt.NDArray[np.float32]:
    """The embedding of ``text`` computed by hand: one unpadded sequence, no batching."""
    model_path, tokenizer_path = paths
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    encoding = tokenizer.encode(text)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    ids = np.array([encoding.ids], dtype=np.int64)
    available = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }
    feeds = {node.name: available[node.name] for node in session.get_inputs()}
    hidden = session.run(None, feeds)[0][0]
    mean = hidden.mean(axis=0)
    return np.asarray(mean / np.linalg.norm(mean), dtype=np.float32)


def test_bundled_paths_point_at_the_model_and_tokenizer(paths: tuple[Path, Path]) -> None:
    model_path, tokenizer_path = paths
    assert model_path.name == "model.onnx"
    assert model_path.is_file()
    assert tokenizer_path.name == "tokenizer.json"
    assert tokenizer_path.is_file()


def test_vectors_are_float32_unit_rows_of_the_model_width(embedder: MiniLMEmbedder) -> None:
    batch = embedder.embed([EATING, BREAD, STOCKS])
    assert isinstance(batch, EmbeddingBatch)
    assert embedder.dimensions == 384
    assert batch.vectors.shape == (3, 384)
    assert batch.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.model_id == "all-MiniLM-L6-v2"


def test_order_survives_sorting_by_length(embedder: MiniLMEmbedder) -> None:
    long = " ".join([BREAD] * 12)
    short = "Hi."
    together = embedder.embed([long, short]).vectors
    np.testing.assert_allclose(together[0], embedder.embed([long]).vectors[0], atol=1e-5)
    np.testing.assert_allclose(together[1], embedder.embed([short]).vectors[0], atol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(embedder: MiniLMEmbedder) -> None:
    eating, bread, stocks = embedder.embed([EATING, BREAD, STOCKS]).vectors
    assert _cosine(eating, bread) > _cosine(eating, stocks) + 0.2


def test_long_text_is_truncated_to_max_tokens(embedder: MiniLMEmbedder) -> None:
    text = " ".join(["word"] * 2_000)
    batch = embedder.embed([text])
    assert batch.token_counts == [256]
    assert embedder.count_tokens(text) == 2_002
    np.testing.assert_allclose(np.linalg.norm(batch.vectors[0]), 1.0, atol=1e-5)


def test_empty_string_embeds_as_cls_sep(embedder: MiniLMEmbedder) -> None:
    batch = embedder.embed(["", EATING])
    assert batch.token_counts[0] == 2
    assert embedder.count_tokens("") == 2
    np.testing.assert_allclose(np.linalg.norm(batch.vectors[0]), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch.vectors[0], embedder.embed([""]).vectors[0], atol=1e-5)


def test_empty_list_gives_an_empty_batch(embedder: MiniLMEmbedder) -> None:
    batch = embedder.embed([])
    assert batch.vectors.shape == (0, 384)
    assert batch.token_counts == []


def test_token_counts_match_the_tokenizer(
    embedder: MiniLMEmbedder, paths: tuple[Path, Path]
) -> None:
    tokenizer = Tokenizer.from_file(str(paths[1]))
    tokenizer.no_padding()
    expected = len(tokenizer.encode(EATING).ids)
    assert expected == 8  # [CLS] a man is eating food . [SEP]
    assert embedder.embed([EATING]).token_counts == [expected]
    assert embedder.count_tokens(EATING) == expected


def test_batch_size_does_not_change_the_vectors(
    embedder: MiniLMEmbedder, paths: tuple[Path, Path]
) -> None:
    texts = [f"Sentence number {i} says {'more ' * (i % 7)}things." for i in range(40)]
    one_at_a_time = MiniLMEmbedder(*paths, batch_size=1, threads=1)
    np.testing.assert_allclose(
        one_at_a_time.embed(texts).vectors, embedder.embed(texts).vectors, atol=1e-5
    )


def test_matches_a_hand_run_of_the_onnx_graph(
    embedder: MiniLMEmbedder, paths: tuple[Path, Path]
) -> None:
    expected = _reference_embedding(paths, BREAD)
    # In a padded batch, so that masking is part of what is checked.
    vectors = embedder.embed([BREAD, " ".join([STOCKS] * 5)]).vectors
    np.testing.assert_allclose(vectors[0], expected, atol=1e-5)


def test_bad_arguments_are_refused(paths: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        MiniLMEmbedder(*paths, batch_size=0)
    with pytest.raises(ValueError, match="max_tokens"):
        MiniLMEmbedder(*paths, max_tokens=1)
    with pytest.raises(ValueError, match="threads"):
        MiniLMEmbedder(*paths, threads=0)


def test_importing_the_embedder_leaves_onnxruntime_unloaded() -> None:
    # ~20 MiB resident: loaded with the first session, not by every process at start.
    code = "import sys, atrium.runtime.embedders; sys.exit('onnxruntime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
