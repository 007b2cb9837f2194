"""Text templates for rows and API items, and glob patterns for file paths.

Templates are deliberately not :meth:`str.format`: a user template such as
``"{row.__class__.__init__.__globals__}"`` must not reach Python objects. Only plain
``{name}`` placeholders exist, and ``{{`` / ``}}`` for literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from atrium.rag.connectors.base import as_text

_PLACEHOLDER: Final = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and ``{name}`` placeholders, in order."""

    #: Literal text and field names alternating: ``(text, field, text, field, ..., text)``.
    parts: tuple[str, ...]

    @classmethod
    def parse(cls, template: str) -> Template:
        """Parse ``template``; a ``ValueError`` for any brace that is not a placeholder."""
        parts: list[str] = []
        literal: list[str] = []
        position = 0
        for match in _PLACEHOLDER.finditer(template):
            literal.append(template[position : match.start()])
            token, name = match.group(0), match.group(1)
            if name is not None:
                parts.extend(("".join(literal), name))
                literal = []
            elif token in ("{{", "}}"):
                literal.append(token[0])
            else:
                msg = (
                    f"the template has a stray {token!r} at position {match.start()}: "
                    "placeholders are {name} (letters, digits, _), and {{ or }} "
                    "write a brace"
                )
                raise ValueError(msg)
            position = match.end()
        literal.append(template[position:])
        parts.append("".join(literal))
        return cls(tuple(parts))

    @property
    def fields(self) -> tuple[str, ...]:
        """The names the template refers to, in order of first use."""
        return tuple(dict.fromkeys(self.parts[1::2]))

    def render(self, values: Mapping[Any, object]) -> str:
        """The template with each placeholder replaced (absent or None values: empty)."""
        pieces = [
            part if index % 2 == 0 else as_text(values.get(part))
            for index, part in enumerate(self.parts)
        ]
        return "".join(pieces)


def validate_template(template: str) -> str:
    """``template`` if it parses (for pydantic validators)."""
    Template.parse(template)
    return template


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob over POSIX paths: ``*``, ``?``, ``[abc]`` stay in one segment;
    ``**`` crosses segments (``**/`` also matches no folder at all)."""
    if not pattern or pattern.startswith("/") or "\x00" in pattern:
        msg = f"{pattern!r} is not a relative glob pattern"
        raise ValueError(msg)
    out: list[str] = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        else:
            piece, index = _glob_piece(pattern, index)
            out.append(piece)
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _glob_piece(pattern: str, index: int) -> tuple[str, int]:
    char = pattern[index]
    if char == "*":
        return "[^/]*", index + 1
    if char == "?":
        return "[^/]", index + 1
    if char == "[":
        end = pattern.find("]", index + 2)
        if end != -1:
            body = pattern[index + 1 : end]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace("\\-", "-")
            return f"[{'^/' if negate else ''}{body}]", end + 1
    return re.escape(char), index + 1


def validate_globs(patterns: Iterable[str]) -> tuple[str, ...]:
    """``patterns`` if every one compiles (for pydantic validators)."""
    patterns = tuple(patterns)
    for pattern in patterns:
        glob_regex(pattern)
    return patterns


class PathMatcher:
    """Decides which relative POSIX paths a source takes.

    A pattern with a ``/`` matches the whole relative path. One without matches at any
    depth, as in ``.gitignore``: an include pattern the file name (``*.md`` takes every
    Markdown file), an exclude pattern any part of the path (``node_modules`` leaves out
    everything below such a folder). A path is taken when an include pattern matches it
    and no exclude pattern does.
    """

    def __init__(self, include: Iterable[str], exclude: Iterable[str] = ()) -> None:
        self._include = [self._compile(p, any_part=False) for p in include]
        self._exclude = [self._compile(p, any_part=True) for p in exclude]
        self._pruned = [self._folder_rule(p) for p in exclude]

    def __call__(self, relative: str) -> bool:
        """Whether ``relative`` (a POSIX path below the source's root) is taken."""
        return any(m(relative) for m in self._include) and not any(
            m(relative) for m in self._exclude
        )

    def excludes_folder(self, relative: str) -> bool:
        """Whether everything below the folder ``relative`` is excluded (so not listed)."""
        return any(rule is not None and rule(relative) for rule in self._pruned)

    @staticmethod
    def _compile(pattern: str, *, any_part: bool) -> Callable[[str], bool]:
        regex = glob_regex(pattern)
        if "/" in pattern:
            return lambda path: regex.match(path) is not None
        if any_part:
            return lambda path: any(regex.match(part) for part in path.split("/") if part)
        return lambda path: regex.match(path.rpartition("/")[2]) is not None

    @staticmethod
    def _folder_rule(pattern: str) -> Callable[[str], bool] | None:
        # Only rules that provably exclude every path below a folder prune it: a name
        # pattern matching the folder's name, or "<prefix>/**" matching its path.
        if "/" not in pattern:
            regex = glob_regex(pattern)
            return lambda folder: regex.match(folder.rpartition("/")[2]) is not None
        if pattern.endswith("/**") and len(pattern) > 3:
            prefix = glob_regex(pattern[:-3])
            return lambda folder: prefix.match(folder) is not None
        return None
