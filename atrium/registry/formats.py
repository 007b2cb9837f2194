"""Recognise a model file's format and read what its header says about the model.

GGUF files start with the magic ``GGUF``; safetensors files with an 8-byte header
length and a JSON header. Anything else is an unknown format. Each inspector reads
only the header and checks it against the file's size, so a corrupt file fails
before anything is copied.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Final, Literal

from atrium.core.errors import InvalidRequestError
from atrium.registry.gguf import GGUF_MAGIC, GGUFError, GGUFInfo, read_gguf

__all__ = [
    "ArtifactError",
    "ArtifactFormat",
    "ArtifactTooLargeError",
    "Inspection",
    "UnknownFormatError",
    "inspect_artifact",
]

ArtifactFormat = Literal["gguf", "safetensors", "remote"]

#: Largest safetensors JSON header read (the format's own reference sets 100 MB).
MAX_SAFETENSORS_HEADER: Final = 100 * 1024 * 1024
# Architectures whose GGUF files are embedding models, not chat models.
_EMBEDDING_ARCHS: Final = frozenset({"bert", "nomic-bert", "jina-bert-v2", "t5encoder"})


class ArtifactError(InvalidRequestError):
    """A model file cannot be registered; the message says why."""

    default_code = "invalid_model_file"


class UnknownFormatError(ArtifactError):
    """The file is neither GGUF nor safetensors."""

    default_code = "unknown_model_format"


class ArtifactTooLargeError(ArtifactError):
    """The file is over the model store's size limit."""

    default_code = "model_file_too_large"


@dataclass(frozen=True, slots=True)
class Inspection:
    """A model file's format and the metadata its header gives."""

    format: ArtifactFormat
    metadata: dict[str, Any] = field(default_factory=dict)


def inspect_artifact(handle: BinaryIO, size: int) -> Inspection:
    """The format and header metadata of a file opened at its start.

    :class:`UnknownFormatError` when the format is not recognised, :class:`ArtifactError`
    when the header is corrupt or cut short.
    """
    head = handle.read(9)
    handle.seek(0)
    if head[:4] == GGUF_MAGIC:
        return Inspection("gguf", _gguf_metadata(handle, size))
    if len(head) == 9 and head[8:9] == b"{":
        return Inspection("safetensors", _safetensors_metadata(handle, size))
    msg = "unknown model format: the file is neither GGUF nor safetensors"
    raise UnknownFormatError(msg)


def _gguf_metadata(handle: BinaryIO, size: int) -> dict[str, Any]:
    try:
        info = read_gguf(handle, size)
    except GGUFError as exc:
        raise ArtifactError(exc.message) from None
    found: dict[str, Any] = {
        "architecture": info.architecture,
        "name": info.text("general.name"),
        "parameter_count": info.parameter_count,
        "quantization": info.quantization,
        "context_length": info.context_length,
        "licence": info.text("general.license"),
        "capabilities": _gguf_capabilities(info),
        "gguf_version": info.version,
        "tensor_count": len(info.tensors),
    }
    return {key: value for key, value in found.items() if value is not None}


def _gguf_capabilities(info: GGUFInfo) -> list[str]:
    arch = info.architecture or ""
    if arch in _EMBEDDING_ARCHS or info.integer(f"{arch}.pooling_type") is not None:
        return ["embeddings"]
    template = info.text("tokenizer.chat_template")
    if template is None:
        return ["completions"]
    # Templates that render a tools list are the ones trained for tool calls.
    return ["chat", "completions", "tools"] if "tools" in template else ["chat", "completions"]


def _safetensors_metadata(handle: BinaryIO, size: int) -> dict[str, Any]:
    header = _safetensors_header(handle, size)
    extra = header.pop("__metadata__", None)
    params, dtypes, end = 0, Counter[str](), 0
    for name, entry in header.items():
        count, dtype, stop = _safetensors_tensor(name, entry)
        params, end = params + count, max(end, stop)
        dtypes[dtype] += 1
    body = size - 8 - _header_length(handle)
    if end != body:
        msg = f"safetensors file is corrupt: its tensors cover {end} bytes of a {body}-byte body"
        raise ArtifactError(msg)
    found: dict[str, Any] = {"parameter_count": params, "tensor_count": len(header)}
    if dtypes:
        found["quantization"] = dtypes.most_common(1)[0][0]
    if isinstance(extra, dict):
        found["header_metadata"] = {str(k): str(v) for k, v in extra.items()}
    return found


def _header_length(handle: BinaryIO) -> int:
    handle.seek(0)
    length: int = struct.unpack("<Q", handle.read(8))[0]
    return length


def _safetensors_header(handle: BinaryIO, size: int) -> dict[str, Any]:
    length = _header_length(handle)
    if length > MAX_SAFETENSORS_HEADER or length > size - 8:
        raise ArtifactError(f"safetensors file is corrupt: a header of {length} bytes")
    raw = handle.read(length)
    if len(raw) != length:
        raise ArtifactError("safetensors file is truncated inside its header")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError("safetensors file is corrupt: its header is not JSON") from None
    if not isinstance(header, dict):
        raise ArtifactError("safetensors file is corrupt: its header is not a JSON object")
    return header


def _safetensors_tensor(name: str, entry: object) -> tuple[int, str, int]:
    """(elements, dtype, end offset) of one header entry."""
    if not isinstance(entry, dict):
        raise ArtifactError(f"safetensors file is corrupt: entry {name!r} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if (
        not isinstance(dtype, str)
        or not isinstance(shape, list)
        or not all(isinstance(d, int) and d >= 0 for d in shape)
        or not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ArtifactError(f"safetensors file is corrupt: entry {name!r} is malformed")
    return math.prod(shape), dtype, offsets[1]
