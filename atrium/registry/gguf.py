"""A strict reader of GGUF headers: the metadata key/values and the tensor table.

Only the header is read; tensor data is never loaded. Every count and length read
from the file is checked against hard caps and against the bytes left in the file
before it is used, so a truncated or garbage file fails at once with a clear reason
instead of hanging or allocating without bound. Arrays (the tokenizer's vocabulary)
are skipped, keeping only their element type and length.

Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, Final

from atrium.core.errors import InvalidRequestError

__all__ = ["GGUF_MAGIC", "GGUFArray", "GGUFError", "GGUFInfo", "GGUFTensor", "read_gguf"]

GGUF_MAGIC: Final = b"GGUF"
_SUPPORTED_VERSIONS: Final = frozenset({2, 3})
# Caps far above any real model, far below what a garbage count would ask for.
MAX_KV_COUNT: Final = 65_536
MAX_TENSOR_COUNT: Final = 1 << 20
MAX_ARRAY_LENGTH: Final = 1 << 24
MAX_STRING_BYTES: Final = 1 << 24
MAX_DIMS: Final = 8
_DEFAULT_ALIGNMENT: Final = 32

_STRING: Final = 8
_ARRAY: Final = 9
# Value type -> struct format of a scalar (little-endian).
_SCALARS: Final[dict[int, str]] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}

# ggml tensor type -> (name, elements per block, bytes per block).
_GGML_TYPES: Final[dict[int, tuple[str, int, int]]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
}

# llama.cpp's ``general.file_type`` (LLAMA_FTYPE_*) -> quantization name.
_FILE_TYPES: Final[dict[int, str]] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
}

Scalar = int | float | bool | str


class GGUFError(InvalidRequestError):
    """The file is not a readable GGUF file; the message says where and why."""

    default_code = "invalid_model_file"


@dataclass(frozen=True, slots=True)
class GGUFArray:
    """An array value, skipped: its element type and length only."""

    element_type: int
    length: int


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    """One entry of the tensor table."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def elements(self) -> int:
        """How many values the tensor holds."""
        return math.prod(self.shape)

    @property
    def type_name(self) -> str:
        """The ggml type's name (``Q4_1``), or ``type_<n>`` for one this reader does not know."""
        known = _GGML_TYPES.get(self.ggml_type)
        return known[0] if known else f"type_{self.ggml_type}"

    def nbytes(self) -> int | None:
        """Bytes of tensor data, or None for a ggml type this reader does not know."""
        known = _GGML_TYPES.get(self.ggml_type)
        if known is None:
            return None
        _, block, size = known
        return -(-self.elements // block) * size


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """What a GGUF header says about a model."""

    version: int
    metadata: dict[str, Scalar | GGUFArray]
    tensors: tuple[GGUFTensor, ...]
    data_offset: int
    file_size: int

    def text(self, key: str) -> str | None:
        """A string value, or None when absent or of another type."""
        value = self.metadata.get(key)
        return value if isinstance(value, str) else None

    def integer(self, key: str) -> int | None:
        """An integer value, or None when absent or of another type."""
        value = self.metadata.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def architecture(self) -> str | None:
        """``general.architecture`` (``llama``, ``qwen2``, ``bert``...)."""
        return self.text("general.architecture")

    @property
    def context_length(self) -> int | None:
        """``<architecture>.context_length``: the context window it was trained for."""
        arch = self.architecture
        return self.integer(f"{arch}.context_length") if arch else None

    @property
    def parameter_count(self) -> int:
        """``general.parameter_count``, else the sum of the tensors' element counts."""
        stated = self.integer("general.parameter_count")
        return stated if stated is not None else sum(t.elements for t in self.tensors)

    @property
    def quantization(self) -> str | None:
        """The file type's name (``Q4_K_M``), else the most common tensor type."""
        file_type = self.integer("general.file_type")
        if file_type is not None and file_type in _FILE_TYPES:
            return _FILE_TYPES[file_type]
        counts = Counter(t.type_name for t in self.tensors)
        return counts.most_common(1)[0][0] if counts else None

    @property
    def data_end(self) -> int | None:
        """Where the last tensor's data ends, or None if a tensor's type is unknown."""
        end = self.data_offset
        for tensor in self.tensors:
            size = tensor.nbytes()
            if size is None:
                return None
            end = max(end, self.data_offset + tensor.offset + size)
        return end


class _Reader:
    """Bounded little-endian reads from a seekable binary file of known size."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self._handle = handle
        self._size = size
        self.pos = 0

    @property
    def left(self) -> int:
        return self._size - self.pos

    def read(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise GGUFError(f"GGUF file is truncated: {what} at byte {self.pos} runs past the end")
        data = self._handle.read(n)
        if len(data) != n:
            raise GGUFError(f"GGUF file is truncated: {what} at byte {self.pos}")
        self.pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        if n > self.left:
            raise GGUFError(f"GGUF file is truncated: {what} at byte {self.pos} runs past the end")
        self._handle.seek(n, 1)
        self.pos += n

    def unpack(self, fmt: str, what: str) -> int | float | bool:
        value: int | float | bool = struct.unpack(fmt, self.read(struct.calcsize(fmt), what))[0]
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack("<I", what))

    def u64(self, what: str) -> int:
        return int(self.unpack("<Q", what))

    def count(self, what: str, cap: int, min_item_bytes: int) -> int:
        """A u64 count, refused when over ``cap`` or when its items cannot fit in the file."""
        value = self.u64(what)
        if value > cap:
            raise GGUFError(f"GGUF file is corrupt: {what} of {value} is over the limit of {cap}")
        if value * min_item_bytes > self.left:
            msg = f"GGUF file is truncated or corrupt: {what} of {value} cannot fit in the file"
            raise GGUFError(msg)
        return value

    def string(self, what: str) -> str:
        length = self.count(f"length of {what}", MAX_STRING_BYTES, 1)
        raw = self.read(length, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"GGUF file is corrupt: {what} is not UTF-8") from None


def read_gguf(handle: BinaryIO, size: int) -> GGUFInfo:
    """Read the header of a GGUF file opened at its start; :class:`GGUFError` if it is bad.

    ``size`` is the file's length in bytes: every read is checked against it.
    """
    reader = _Reader(handle, size)
    if reader.read(4, "magic") != GGUF_MAGIC:
        raise GGUFError("not a GGUF file: the magic bytes are not 'GGUF'")
    version = reader.u32("version")
    if version not in _SUPPORTED_VERSIONS:
        raise GGUFError(f"unsupported GGUF version {version} (supported: 2, 3)")
    tensor_count = reader.count("tensor count", MAX_TENSOR_COUNT, 8 + 4 + 8 + 4 + 8)
    kv_count = reader.count("key/value count", MAX_KV_COUNT, 8 + 4)
    metadata: dict[str, Scalar | GGUFArray] = {}
    for index in range(kv_count):
        key = reader.string(f"key #{index}")
        metadata[key] = _value(reader, reader.u32(f"type of {key!r}"), key)
    tensors = tuple(_tensor(reader, i) for i in range(tensor_count))
    alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
        raise GGUFError("GGUF file is corrupt: general.alignment is not a positive integer")
    data_offset = -(-reader.pos // alignment) * alignment
    info = GGUFInfo(version, metadata, tensors, data_offset, size)
    _check_data(info)
    return info


def _value(reader: _Reader, value_type: int, key: str) -> Scalar | GGUFArray:
    if value_type in _SCALARS:
        return reader.unpack(_SCALARS[value_type], f"value of {key!r}")
    if value_type == _STRING:
        return reader.string(f"value of {key!r}")
    if value_type == _ARRAY:
        return _skip_array(reader, key)
    raise GGUFError(f"GGUF file is corrupt: {key!r} has unknown value type {value_type}")


def _skip_array(reader: _Reader, key: str) -> GGUFArray:
    element_type = reader.u32(f"element type of {key!r}")
    if element_type in _SCALARS:
        width = struct.calcsize(_SCALARS[element_type])
        length = reader.count(f"length of {key!r}", MAX_ARRAY_LENGTH, width)
        reader.skip(length * width, f"elements of {key!r}")
    elif element_type == _STRING:
        length = reader.count(f"length of {key!r}", MAX_ARRAY_LENGTH, 8)
        for _ in range(length):
            reader.skip(reader.count(f"string in {key!r}", MAX_STRING_BYTES, 1), key)
    else:
        # Nested arrays appear in no model llama.cpp writes; refusing them bounds the work.
        raise GGUFError(f"GGUF file is corrupt: {key!r} has element type {element_type}")
    return GGUFArray(element_type, length)


def _tensor(reader: _Reader, index: int) -> GGUFTensor:
    name = reader.string(f"name of tensor #{index}")
    n_dims = reader.u32(f"dimensions of {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFError(f"GGUF file is corrupt: tensor {name!r} has {n_dims} dimensions")
    shape = tuple(reader.u64(f"shape of {name!r}") for _ in range(n_dims))
    if any(dim == 0 or dim > 1 << 40 for dim in shape):
        raise GGUFError(f"GGUF file is corrupt: tensor {name!r} has shape {shape}")
    ggml_type = reader.u32(f"type of {name!r}")
    offset = reader.u64(f"offset of {name!r}")
    return GGUFTensor(name, shape, ggml_type, offset)


def _check_data(info: GGUFInfo) -> None:
    """The tensor data must fit in the file: a file cut short fails here."""
    if info.data_offset > info.file_size and info.tensors:
        raise GGUFError("GGUF file is truncated: it ends before its tensor data")
    end = info.data_end
    if end is not None and end > info.file_size:
        msg = f"GGUF file is truncated: its tensors need {end} bytes, the file has {info.file_size}"
        raise GGUFError(msg)
