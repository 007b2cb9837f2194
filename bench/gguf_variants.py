"""New GGUF releases of the bundled model, written with llama.cpp's ``gguf`` package.

- :func:`new_version`: the same weights with ``general.version`` set: a new file (its own
  sha256), as a re-published release of a model is.
- :func:`short_context_version`: a version whose header declares a small context window (a
  bad conversion): its replicas answer short prompts, such as the quality gates', and
  fail the longer prompts of real traffic.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf


def new_version(source: Path, target: Path, version: str) -> Path:
    """Copy ``source`` with ``general.version`` = ``version`` (written to a temporary name)."""
    reader = gguf.GGUFReader(source)
    arch = str(reader.get_field(gguf.Keys.General.ARCHITECTURE).contents())
    partial = target.with_name(f".{target.name}.part")
    writer = gguf.GGUFWriter(partial, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.VERSION):
            continue
        if field.name.startswith("GGUF."):
            continue  # the header's own fields, written by the writer
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_key_value(gguf.Keys.General.VERSION, version, gguf.GGUFValueType.STRING)
    for tensor in reader.tensors:
        writer.add_tensor_info(
            tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
            tensor.tensor_type,
        )  # fmt: skip
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    partial.replace(target)
    return target


def short_context_version(source: Path, target: Path, context: int) -> Path:
    """Copy ``source`` declaring a ``context``-token window (patched in place, same size)."""
    partial = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, partial)
    reader = gguf.GGUFReader(partial, "r+")
    arch = str(reader.get_field(gguf.Keys.General.ARCHITECTURE).contents())
    field = reader.get_field(gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch))
    if field is None:
        raise ValueError(f"{source} declares no context length")
    field.parts[field.data[0]][0] = context
    del reader  # flushes the memory map
    partial.replace(target)
    return target
