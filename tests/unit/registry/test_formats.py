"""The GGUF header reader and format detection: the bundled model and broken files."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest

from atrium.core.errors import InvalidRequestError
from atrium.registry import (
    ArtifactError,
    GGUFError,
    UnknownFormatError,
    inspect_artifact,
    read_gguf,
)
from atrium.registry.service import SourcePolicy
from atrium.runtime.backends.llamacpp import bundled_gguf


@pytest.fixture(scope="module")
def gguf_head() -> bytes:
    """The first 4 MiB of the bundled GGUF: its whole header and more."""
    with bundled_gguf().open("rb") as handle:
        return handle.read(4 * 1024 * 1024)


def _gguf(*parts: bytes) -> io.BytesIO:
    return io.BytesIO(b"".join(parts))


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def test_the_bundled_model_header_is_read() -> None:
    path = bundled_gguf()
    size = path.stat().st_size
    with path.open("rb") as handle:
        info = read_gguf(handle, size)
    assert info.version == 3
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.quantization == "Q4_1"
    assert info.text("general.license") == "apache-2.0"
    assert 130_000_000 < info.parameter_count < 140_000_000
    assert len(info.tensors) == 272
    # The tensor table accounts for every byte of the file.
    assert info.data_end == size


def test_bundled_model_metadata_for_the_registry() -> None:
    path = bundled_gguf()
    with path.open("rb") as handle:
        found = inspect_artifact(handle, path.stat().st_size)
    assert found.format == "gguf"
    meta = found.metadata
    assert meta["architecture"] == "llama"
    assert meta["context_length"] == 8192
    assert meta["quantization"] == "Q4_1"
    assert meta["licence"] == "apache-2.0"
    assert meta["capabilities"] == ["chat", "completions"]


def test_a_truncated_file_is_refused(gguf_head: bytes) -> None:
    # The header is complete, the tensor data is not: the size check catches it.
    with pytest.raises(GGUFError, match="truncated: its tensors need"):
        read_gguf(io.BytesIO(gguf_head), len(gguf_head))
    # Cut inside the metadata: the next read runs past the end.
    cut = gguf_head[:5000]
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf(io.BytesIO(cut), len(cut))


@pytest.mark.parametrize("size", [0, 3, 4, 7, 12, 23])
def test_a_header_cut_anywhere_early_is_refused(gguf_head: bytes, size: int) -> None:
    with pytest.raises(GGUFError):
        read_gguf(io.BytesIO(gguf_head[:size]), size)


def test_garbage_is_not_gguf() -> None:
    with pytest.raises(GGUFError, match="magic"):
        read_gguf(io.BytesIO(b"\x00" * 64), 64)
    with pytest.raises(UnknownFormatError, match="neither GGUF nor safetensors"):
        inspect_artifact(io.BytesIO(b"PK\x03\x04 a zip file" * 10), 150)


def test_an_unsupported_version_is_refused() -> None:
    data = _gguf(b"GGUF", struct.pack("<I", 7), struct.pack("<QQ", 0, 0))
    with pytest.raises(GGUFError, match="unsupported GGUF version 7"):
        read_gguf(data, len(data.getvalue()))


@pytest.mark.parametrize(
    ("tensors", "kvs", "what"),
    [(2**63, 0, "tensor count"), (0, 2**40, "key/value count"), (10**6, 0, "tensor count")],
)
def test_huge_counts_fail_at_once(tensors: int, kvs: int, what: str) -> None:
    data = _gguf(b"GGUF", struct.pack("<I", 3), struct.pack("<QQ", tensors, kvs), b"\0" * 64)
    with pytest.raises(GGUFError, match=what):
        read_gguf(data, len(data.getvalue()))


def test_a_huge_string_or_array_length_fails_at_once() -> None:
    head = b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", 0, 1)
    huge_key = _gguf(head, struct.pack("<Q", 2**62), b"x" * 32)
    with pytest.raises(GGUFError, match="length of key #0"):
        read_gguf(huge_key, len(huge_key.getvalue()))
    # An array of 2**40 uint32 values in a tiny file.
    array = _gguf(head, _string("a.b"), struct.pack("<I", 9), struct.pack("<IQ", 4, 2**40))
    with pytest.raises(GGUFError, match=r"length of 'a\.b'"):
        read_gguf(array, len(array.getvalue()))
    nested = _gguf(head, _string("a.b"), struct.pack("<I", 9), struct.pack("<IQ", 9, 1), b"\0" * 16)
    with pytest.raises(GGUFError, match="element type 9"):
        read_gguf(nested, len(nested.getvalue()))


def test_an_unknown_value_type_is_refused() -> None:
    data = _gguf(
        b"GGUF", struct.pack("<I", 3), struct.pack("<QQ", 0, 1), _string("k"), struct.pack("<I", 99)
    )
    with pytest.raises(GGUFError, match="unknown value type 99"):
        read_gguf(data, len(data.getvalue()))


def test_a_small_handmade_gguf_is_read() -> None:
    kvs = [
        _string("general.architecture") + struct.pack("<I", 8) + _string("bert"),
        _string("bert.context_length") + struct.pack("<I", 4) + struct.pack("<I", 512),
        _string("tokenizer.ggml.tokens")
        + struct.pack("<IIQ", 9, 8, 2)
        + _string("a")
        + _string("bc"),
    ]
    tensor = (
        _string("w") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 8) + struct.pack("<IQ", 0, 0)
    )
    header = b"GGUF" + struct.pack("<I", 3) + struct.pack("<QQ", 1, len(kvs)) + b"".join(kvs)
    header += tensor
    padded = header + b"\0" * (-len(header) % 32) + b"\0" * (4 * 8 * 4)
    found = inspect_artifact(io.BytesIO(padded), len(padded))
    assert found.metadata["architecture"] == "bert"
    assert found.metadata["context_length"] == 512
    assert found.metadata["parameter_count"] == 32
    assert found.metadata["quantization"] == "F32"
    assert found.metadata["capabilities"] == ["embeddings"]
    short = padded[:-1]
    with pytest.raises(ArtifactError, match="truncated"):
        inspect_artifact(io.BytesIO(short), len(short))


def _safetensors(header: dict[str, object], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def test_safetensors_header_is_read() -> None:
    header = {
        "__metadata__": {"format": "pt"},
        "a": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [0, 12]},
        "b": {"dtype": "BF16", "shape": [2], "data_offsets": [12, 16]},
    }
    data = _safetensors(header, b"\0" * 16)
    found = inspect_artifact(io.BytesIO(data), len(data))
    assert found.format == "safetensors"
    assert found.metadata["parameter_count"] == 8
    assert found.metadata["quantization"] == "BF16"
    assert found.metadata["header_metadata"] == {"format": "pt"}


def test_corrupt_safetensors_are_refused() -> None:
    good = {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    short = _safetensors(good, b"\0" * 10)
    with pytest.raises(ArtifactError, match="cover 16 bytes of a 10-byte body"):
        inspect_artifact(io.BytesIO(short), len(short))
    bad_json = struct.pack("<Q", 8) + b"{notjson"
    with pytest.raises(ArtifactError, match="not JSON"):
        inspect_artifact(io.BytesIO(bad_json), len(bad_json))
    huge = struct.pack("<Q", 2**40) + b"{" + b"\0" * 20
    with pytest.raises(ArtifactError, match="a header of"):
        inspect_artifact(io.BytesIO(huge), len(huge))
    malformed = _safetensors({"a": {"dtype": "F32", "shape": "4"}}, b"")
    with pytest.raises(ArtifactError, match="'a' is malformed"):
        inspect_artifact(io.BytesIO(malformed), len(malformed))


def test_sources_must_be_inside_allowed_folders(tmp_path: Path) -> None:
    data_dir, models = tmp_path / "data", tmp_path / "models"
    data_dir.mkdir()
    models.mkdir()
    policy = SourcePolicy(
        data_dir=data_dir, allowed_roots=(models,), protected_paths=(data_dir / "atrium.db",)
    )
    assert policy.check(str(models / "m.gguf")) == str((models / "m.gguf").resolve())
    assert policy.check("sub/m.gguf") == str((data_dir / "sub" / "m.gguf").resolve())
    assert policy.check(f"file://{models}/m.gguf") == str((models / "m.gguf").resolve())
    assert policy.check("gs://bucket/m.gguf") == "gs://bucket/m.gguf"
    refused = [
        "/etc/passwd",
        str(models / ".." / "elsewhere.gguf"),
        "file:///etc/passwd",
        str(data_dir / "atrium.db"),
        "http://169.254.169.254/latest",
        "simplecache::gs://bucket/m.gguf",
        "memory://m.gguf",
    ]
    for source in refused:
        with pytest.raises(InvalidRequestError):
            policy.check(source)
