"""Local folders as sources (uploads included), and safe paths for uploaded files.

A folder source reads files below one folder inside the allowed roots. Links are
followed only where they stay inside the folder; a file that links out of it, is over
the size limit or cannot be read is reported as a :class:`DocumentFailure` and the
rest of the folder is still read. Keys are POSIX paths relative to the folder.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import stat
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Final, Literal

from pydantic import Field, field_validator

from atrium.core.errors import InvalidRequestError
from atrium.rag.connectors._patterns import PathMatcher, validate_globs
from atrium.rag.connectors.base import (
    ConnectorContext,
    ConnectorError,
    DocumentFailure,
    Documents,
    SourceSpecBase,
    is_protected,
    is_within,
    make_document,
    resolve_local,
    too_large,
)
from atrium.rag.types import SourceDocument

_WINDOWS_RESERVED: Final = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)
# Control characters and what Windows forbids; replaced so a name is portable.
_UNPORTABLE: Final = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')
_MAX_NAME_BYTES: Final = 255
# O_NONBLOCK: opening a FIFO swapped in after the scan must not hang the sync.
_OPEN_FLAGS: Final = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


class UnsafeFilenameError(InvalidRequestError):
    """An uploaded file's name cannot be stored safely."""

    default_code = "invalid_filename"


class FolderSource(SourceSpecBase):
    """Files in a folder on the server (uploads live in one under the data directory)."""

    kind: Literal["folder"] = Field("folder", description="Source kind: a local folder.")
    path: str = Field(
        min_length=1,
        description=(
            "The folder: absolute, or relative to the data directory. It must lie inside "
            "a folder the server allows sources to read (by default the data directory)."
        ),
    )
    include: tuple[str, ...] = Field(
        ("**/*",),
        min_length=1,
        description=(
            "Glob patterns of files to read. With a '/' a pattern matches the path below "
            "the folder ('docs/**/*.md'); without one, the file name at any depth ('*.pdf')."
        ),
    )
    exclude: tuple[str, ...] = Field(
        (),
        description=(
            "Glob patterns of files to leave out; without a '/' a pattern matches any "
            "part of the path, so 'node_modules' leaves out everything below such folders."
        ),
    )
    recursive: bool = Field(True, description="Also read the folder's subfolders.")

    @field_validator("include", "exclude")
    @classmethod
    def _globs_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        return validate_globs(patterns)

    def build(self, context: ConnectorContext) -> FolderConnector:
        """A connector over this folder; :class:`InvalidSourceError` if it is not allowed."""
        return FolderConnector(
            resolve_local(self.path, context),
            PathMatcher(self.include, self.exclude),
            recursive=self.recursive,
            max_document_bytes=context.max_document_bytes,
            protected_paths=context.protected_paths,
        )


@dataclass(frozen=True, slots=True)
class _Entry:
    key: str
    path: Path  # resolved: no links left in it


class FolderConnector:
    """Reads every matching file below ``root`` (an already resolved, allowed folder)."""

    def __init__(
        self,
        root: Path,
        matcher: PathMatcher,
        *,
        recursive: bool = True,
        max_document_bytes: int,
        protected_paths: tuple[Path, ...] = (),
    ) -> None:
        self._root = root
        self._matcher = matcher
        self._recursive = recursive
        self._limit = max_document_bytes
        self._protected = protected_paths

    async def documents(self) -> Documents:
        """Each matching file, in path order; listing happens in a worker thread."""
        if not await asyncio.to_thread(self._root.is_dir):
            msg = f"the folder {self._root} does not exist or is not a folder"
            raise ConnectorError(msg)
        for entry in await asyncio.to_thread(self._scan):
            if isinstance(entry, DocumentFailure):
                yield entry
            else:
                yield await asyncio.to_thread(self._load, entry)

    def _scan(self) -> list[_Entry | DocumentFailure]:
        found: list[_Entry | DocumentFailure] = []
        errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(self._root, onerror=errors.append):
            here = Path(dirpath)
            kept = [d for d in sorted(dirnames) if self._descend(here / d, found)]
            dirnames[:] = kept if self._recursive else []
            for name in sorted(filenames):
                entry = self._entry(here / name)
                if entry is not None:
                    found.append(entry)
        for error in errors:
            where = self._key(Path(error.filename)) if error.filename else "."
            found.append(DocumentFailure(where, f"cannot be listed: {error.strerror}"))
        found.sort(key=lambda entry: entry.key)
        return found

    def _descend(self, folder: Path, found: list[_Entry | DocumentFailure]) -> bool:
        key = self._key(folder)
        if self._matcher.excludes_folder(key):
            return False
        if folder.is_symlink():
            # Never followed (no loops); one that leaves the source is worth reporting.
            if not is_within(folder.resolve(), self._root):
                found.append(DocumentFailure(key, "links to a folder outside the source"))
            return False
        return True

    def _entry(self, path: Path) -> _Entry | DocumentFailure | None:
        key = self._key(path)
        if not self._matcher(key):
            return None
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return DocumentFailure(key, "is a broken link")
        if not is_within(resolved, self._root):
            return DocumentFailure(key, "links to a file outside the source")
        if is_protected(resolved, self._protected):
            return DocumentFailure(key, "is Atrium's own data and is not read")
        if not resolved.is_file():
            return DocumentFailure(key, "is not a regular file")
        return _Entry(key, resolved)

    def _load(self, entry: _Entry) -> SourceDocument | DocumentFailure:
        name = PurePosixPath(entry.key).name
        try:
            with open(os.open(entry.path, _OPEN_FLAGS), "rb") as file:
                info = os.fstat(file.fileno())
                if not stat.S_ISREG(info.st_mode):
                    return DocumentFailure(entry.key, "is not a regular file")
                if info.st_size > self._limit:
                    return DocumentFailure(entry.key, too_large(name, info.st_size, self._limit))
                data = file.read(self._limit + 1)
        except OSError as exc:
            return DocumentFailure(entry.key, f"cannot be read: {exc.strerror or exc}")
        if len(data) > self._limit:  # it grew after the size check
            return DocumentFailure(entry.key, too_large(name, len(data), self._limit))
        modified = datetime.fromtimestamp(info.st_mtime, UTC)
        birth = getattr(info, "st_birthtime", None)
        parent = PurePosixPath(entry.key).parent.as_posix()
        return make_document(
            entry.key,
            data,
            name,
            media_type=mimetypes.guess_type(name)[0],
            created_at=datetime.fromtimestamp(birth, UTC) if birth else modified,
            updated_at=modified,
            metadata={"path": entry.key, "folder": "" if parent == "." else parent},
        )

    def _key(self, path: Path) -> str:
        return path.relative_to(self._root).as_posix()


def safe_upload_path(root: Path, filename: str) -> Path:
    """Where to store an uploaded file called ``filename``: always directly in ``root``.

    Directories in the name are dropped (``C:\\Users\\me\\a.pdf`` -> ``a.pdf``); a name
    that is empty, absolute, contains ``..`` or NUL, or is reserved on Windows is refused
    with :class:`UnsafeFilenameError`. Unportable characters become ``_`` and leading
    dots and spaces are removed (no hidden files); the name is cut to 255 bytes, keeping
    its extension.
    """
    if "\x00" in filename:
        raise UnsafeFilenameError("the file name contains a NUL character", param="filename")
    name = unicodedata.normalize("NFC", filename).strip()
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:[\\/]", name):
        raise UnsafeFilenameError("the file name is an absolute path", param="filename")
    parts = re.split(r"[\\/]", name)
    if any(part.strip() == ".." for part in parts):
        raise UnsafeFilenameError("the file name contains '..'", param="filename")
    base = _UNPORTABLE.sub("_", parts[-1]).strip(" .")
    if not base:
        raise UnsafeFilenameError("the file name is empty", param="filename")
    if base.split(".", 1)[0].strip().lower() in _WINDOWS_RESERVED:
        raise UnsafeFilenameError(f"{base!r} is a reserved file name", param="filename")
    folder = root.resolve()
    path = folder / _truncate(base)
    if path.resolve().parent != folder:
        raise UnsafeFilenameError("the file name leads outside the upload folder")
    return path


def _truncate(name: str) -> str:
    if len(name.encode()) <= _MAX_NAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    suffix = f".{extension}" if dot and stem and len(extension) <= 16 else ""
    stem = name[: len(name) - len(suffix)]
    budget = _MAX_NAME_BYTES - len(suffix.encode())
    return stem.encode()[:budget].decode(errors="ignore") + suffix
