"""Document parsers: bytes of a PDF, DOCX, HTML, Markdown, text, CSV or JSON file -> sections.

:func:`parse_document` detects the type from the file name and media type, checks the
bytes really are that type (a renamed binary is refused, not indexed as gibberish) and
returns a :class:`~atrium.rag.types.ParsedDocument`: prose split by headings (and by page
for PDFs), tables as ``kind="table"`` sections rendered one row per line with the header
first and cells separated by ``" | "``, so a chunker can repeat the header in every chunk.

Every failure is a :class:`ParseError` naming the file and the problem; no exception of
a parsing library escapes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import PurePath
from typing import ClassVar, Literal

import docx
import docx.opc.exceptions
import docx.table
import pypdf
import pypdf.errors
from bs4 import BeautifulSoup
from bs4.dammit import EncodingDetector
from bs4.element import NavigableString, PreformattedString, Tag
from bs4.exceptions import ParserRejectedMarkup

from atrium.rag.types import ParsedDocument, Section

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "BinaryContentError",
    "CorruptDocumentError",
    "DocType",
    "EmptyDocumentError",
    "EncryptedDocumentError",
    "ParseError",
    "UnsupportedTypeError",
    "detect_type",
    "is_supported",
    "parse_document",
]

DocType = Literal["pdf", "docx", "html", "markdown", "text", "csv", "json"]

_EXTENSIONS: dict[str, DocType] = {
    ".pdf": "pdf", ".docx": "docx", ".html": "html", ".htm": "html", ".xhtml": "html",
    ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text", ".log": "text",
    ".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json",
}  # fmt: skip

#: File name extensions :func:`parse_document` reads (lower case, with the dot).
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_EXTENSIONS)

_MEDIA_TYPES: dict[str, DocType] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/json": "json",
    "application/x-ndjson": "json",
    "application/jsonl": "json",
}

#: Media types that say nothing about the content: the bytes decide.
_GENERIC_MEDIA_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})

#: A DOCX whose main part unpacks to more than this is refused (a zip bomb, not a memo).
_MAX_DOCX_XML_BYTES = 256 * 1024 * 1024

#: Text with more than this share of control characters is binary data, not text.
_MAX_CONTROL_SHARE = 0.05

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

# pypdf logs a warning for every flaw it works around in a damaged file; a file it cannot
# read is reported as a CorruptDocumentError instead, so only its errors are worth logging.
logging.getLogger("pypdf").setLevel(logging.ERROR)


class ParseError(Exception):
    """A document could not be parsed; ``str(error)`` is ``"<filename>: <reason>"``."""

    #: A stable machine-readable name of the problem, for APIs and sync reports.
    code: ClassVar[str] = "parse_error"

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        #: What is wrong, in words a user can act on.
        self.reason = reason


class UnsupportedTypeError(ParseError):
    """The file is of a type no parser reads."""

    code = "unsupported_type"


class EmptyDocumentError(ParseError):
    """The file has no extractable text (an empty file, a scanned PDF)."""

    code = "empty_document"


class CorruptDocumentError(ParseError):
    """The file claims a type but its bytes are damaged or of another format."""

    code = "corrupt_document"


class EncryptedDocumentError(ParseError):
    """The file is encrypted and cannot be read without a password."""

    code = "encrypted_document"


class BinaryContentError(ParseError):
    """A text file (by name or media type) holds binary data."""

    code = "binary_content"


def is_supported(filename: str, media_type: str | None = None) -> bool:
    """Whether a file of this name (or, failing a known extension, media type) is parsed."""
    return _declared_type(filename, media_type) is not None


def detect_type(data: bytes, filename: str, media_type: str | None = None) -> DocType:
    """The document type of ``data``: the declared type, checked against the content.

    The extension decides, then the media type. PDF and DOCX are recognised by their
    bytes whatever the name says; a name without an extension and a generic media type
    are read as text. Raises :class:`UnsupportedTypeError` or
    :class:`CorruptDocumentError` (a ``.pdf`` that is not a PDF).
    """
    if _looks_like_pdf(data):
        return "pdf"
    if _looks_like_docx(data):
        return "docx"
    declared = _declared_type(filename, media_type)
    if declared == "pdf":
        raise CorruptDocumentError(filename, "the file is not a PDF (it has no %PDF header)")
    if declared == "docx":
        if data.startswith(_OLE_MAGIC):
            raise UnsupportedTypeError(
                filename, "legacy Word .doc files are not supported; save it as .docx"
            )
        raise CorruptDocumentError(
            filename, "the file is not a Word .docx document (no word/document.xml inside)"
        )
    if declared is not None:
        return declared
    if not PurePath(filename).suffix and _media_type(media_type)[0] in _GENERIC_MEDIA_TYPES:
        return "text"
    supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
    raise UnsupportedTypeError(
        filename, f"this file type is not supported (supported extensions: {supported})"
    )


def parse_document(data: bytes, filename: str, media_type: str | None = None) -> ParsedDocument:
    """Parse a document's bytes into sections; raises a :class:`ParseError` subclass."""
    if not data.strip():
        raise EmptyDocumentError(filename, "the file is empty")
    doc_type = detect_type(data, filename, media_type)
    charset = _media_type(media_type)[1]
    if doc_type == "pdf":
        return _parse_pdf(data, filename)
    if doc_type == "docx":
        return _parse_docx(data, filename)
    if doc_type == "html":
        charset = charset or EncodingDetector.find_declared_encoding(data, is_html=True)
    return _TEXT_PARSERS[doc_type](_decode(data, filename, charset), filename)


# -- type detection and decoding ---------------------------------------------------------


def _media_type(media_type: str | None) -> tuple[str, str | None]:
    """``("text/html", "utf-8")`` from ``"text/html; charset=UTF-8"``."""
    if not media_type:
        return "", None
    essence, _, params = media_type.partition(";")
    match = re.search(r"charset\s*=\s*\"?([\w.:-]+)", params, re.IGNORECASE)
    return essence.strip().lower(), match.group(1) if match else None


def _declared_type(filename: str, media_type: str | None) -> DocType | None:
    by_extension = _EXTENSIONS.get(PurePath(filename).suffix.lower())
    return by_extension or _MEDIA_TYPES.get(_media_type(media_type)[0])


def _looks_like_pdf(data: bytes) -> bool:
    # The PDF spec tolerates junk before the header; readers look in the first KiB.
    return b"%PDF-" in data[:1024]


def _looks_like_docx(data: bytes) -> bool:
    if not data.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return "word/document.xml" in archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        return False


_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_HEADING_JOINER = " > "
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")


def _decode(data: bytes, filename: str, charset: str | None) -> str:
    """Text of a text file; raises :class:`BinaryContentError` when it is not text."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked_text(data.decode(encoding), filename)
            except UnicodeDecodeError:
                raise BinaryContentError(
                    filename, f"the file starts with a {encoding} mark but is not {encoding} text"
                ) from None
    candidates = [charset] if charset else []
    if b"\x00" not in data:
        # UTF-8 first: it rejects almost every non-UTF-8 input; cp1252 is the usual
        # encoding of older text files that are not UTF-8.
        candidates += ["utf-8", "cp1252"]
    for encoding in candidates:
        try:
            return _checked_text(data.decode(encoding), filename)
        except (UnicodeDecodeError, LookupError):
            continue
    raise BinaryContentError(filename, "the file holds binary data, not text")


def _checked_text(text: str, filename: str) -> str:
    controls = len(text) - len(_CONTROL.sub("", text))
    if controls > _MAX_CONTROL_SHARE * len(text):
        raise BinaryContentError(filename, "the file holds binary data, not text")
    return text


# -- whitespace ------------------------------------------------------------------------

_DROPPED = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b\u200c\u200d\u2060\ufeff\xad]")
_SPACES = re.compile(r"[ \t\xa0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
_LINE_BREAKS = re.compile(r"\r\n?|[\v\f\u2028\u2029\x85]")
_BLANK_RUNS = re.compile(r"\n{3,}")


def _normalise(text: str) -> str:
    """Collapse runs of spaces, strip lines, keep paragraph breaks (at most one blank line)."""
    text = _DROPPED.sub("", _LINE_BREAKS.sub("\n", text))
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _normalise_preformatted(text: str) -> str:
    """Code and preformatted text: indentation kept, trailing spaces and blank edges dropped."""
    text = _DROPPED.sub("", _LINE_BREAKS.sub("\n", text))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def _inline(text: str) -> str:
    """A heading or a table cell: everything on one line."""
    return " ".join(_DROPPED.sub("", text).split())


# -- sections --------------------------------------------------------------------------


def _render_table(rows: Sequence[Sequence[str]]) -> str:
    """Header row first, then one line per row, cells separated by ``" | "``."""
    lines = []
    for row in rows:
        cells = [_inline(cell) for cell in row]
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


class _SectionBuilder:
    """Collects blocks under the current heading path; a new heading starts a section."""

    def __init__(self) -> None:
        self._sections: list[Section] = []
        self._path: list[tuple[int, str]] = []
        self._blocks: list[str] = []
        self._headings: list[str] = []

    @property
    def heading(self) -> str | None:
        return _HEADING_JOINER.join(text for _, text in self._path) or None

    def enter_heading(self, level: int, text: str) -> None:
        text = _inline(text)
        if not text:
            return
        self._flush()
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        self._path.append((level, text))
        self._headings.append(text)

    def text(self, text: str, *, preformatted: bool = False) -> _SectionBuilder:
        block = _normalise_preformatted(text) if preformatted else _normalise(text)
        if block:
            self._blocks.append(block)
        return self

    def table(self, rows: Sequence[Sequence[str]], caption: str = "") -> None:
        """A table section; its caption, if any, ends its heading path."""
        rendered = _render_table(rows)
        if rendered:
            self._flush()
            heading = _HEADING_JOINER.join(filter(None, (self.heading, _inline(caption))))
            self._sections.append(Section(rendered, heading or None, kind="table"))

    def finish(self) -> list[Section]:
        self._flush()
        if not self._sections and self._headings:  # an outline with no body: keep it
            return [Section("\n".join(self._headings))]
        return self._sections

    def _flush(self) -> None:
        if self._blocks:
            self._sections.append(Section("\n\n".join(self._blocks), self.heading))
            self._blocks = []


def _finish(
    sections: list[Section], doc_type: DocType, title: str | None, filename: str
) -> ParsedDocument:
    if not sections:
        raise EmptyDocumentError(filename, "the document has no text")
    title = _inline(title) if title else None
    return ParsedDocument(sections=sections, doc_type=doc_type, title=title or None)


def _why(exc: BaseException) -> str:
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


# -- PDF -------------------------------------------------------------------------------

# What pypdf raises on damaged files beyond its own errors (found by feeding it truncated
# and garbled PDFs): a broken object graph surfaces as lookups and arithmetic on bad data.
_PDF_ERRORS = (
    pypdf.errors.PyPdfError, pypdf.errors.DependencyError, ValueError, KeyError, IndexError,
    TypeError, AttributeError, AssertionError, RecursionError, ZeroDivisionError,
    OverflowError, struct.error, zlib.error, OSError, EOFError,
)  # fmt: skip


def _parse_pdf(data: bytes, filename: str) -> ParsedDocument:
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        _unlock(reader, filename)
        title = reader.metadata.title if reader.metadata else None
        sections = []
        for number, page in enumerate(reader.pages, start=1):
            text = _normalise(page.extract_text())
            if text:
                sections.append(Section(text, page=number))
    except _PDF_ERRORS as exc:
        raise CorruptDocumentError(
            filename, f"the PDF is damaged and cannot be read ({_why(exc)})"
        ) from exc
    if not sections:
        raise EmptyDocumentError(
            filename,
            "the PDF has no extractable text (it may be scanned images; OCR is not supported)",
        )
    return _finish(sections, "pdf", title if isinstance(title, str) else None, filename)


def _unlock(reader: pypdf.PdfReader, filename: str) -> None:
    """Decrypt with the empty password, which opens most "protected" PDFs; else refuse."""
    if not reader.is_encrypted:
        return
    try:
        result = reader.decrypt("")
    except pypdf.errors.DependencyError as exc:
        raise EncryptedDocumentError(
            filename, f"the PDF is encrypted with a cipher that cannot be decrypted ({exc})"
        ) from exc
    if result == pypdf.PasswordType.NOT_DECRYPTED:
        raise EncryptedDocumentError(
            filename, "the PDF is encrypted and cannot be read without a password"
        )


# -- DOCX ------------------------------------------------------------------------------

# SyntaxError is the base of lxml's XMLSyntaxError.
_DOCX_ERRORS = (
    docx.opc.exceptions.OpcError, zipfile.BadZipFile, zipfile.LargeZipFile, KeyError,
    ValueError, SyntaxError, AttributeError, TypeError, IndexError, NotImplementedError,
    OSError, EOFError, zlib.error,
)  # fmt: skip
_HEADING_STYLE = re.compile(r"heading\s*([1-9])", re.IGNORECASE)


def _parse_docx(data: bytes, filename: str) -> ParsedDocument:
    try:
        _check_unpacked_size(data, filename)
        document = docx.Document(io.BytesIO(data))
        title: str | None = document.core_properties.title or None
        builder = _SectionBuilder()
        for block in document.iter_inner_content():
            if isinstance(block, docx.table.Table):
                builder.table(_docx_rows(block))
                continue
            style = block.style.name if block.style is not None else None
            heading = _HEADING_STYLE.fullmatch(style or "")
            if heading:
                builder.enter_heading(int(heading.group(1)), block.text)
            elif style == "Title" and title is None:
                title = block.text
            else:
                builder.text(block.text)
        sections = builder.finish()
    except _DOCX_ERRORS as exc:
        raise CorruptDocumentError(
            filename, f"the Word document is damaged and cannot be read ({_why(exc)})"
        ) from exc
    return _finish(sections, "docx", title, filename)


def _check_unpacked_size(data: bytes, filename: str) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        if archive.getinfo("word/document.xml").file_size > _MAX_DOCX_XML_BYTES:
            raise CorruptDocumentError(
                filename, "the Word document unpacks to more than 256 MiB of XML"
            )


def _docx_rows(table: docx.table.Table) -> list[list[str]]:
    # A merged cell is repeated in every grid column it spans, keeping columns aligned.
    return [[cell.text for cell in row.cells] for row in table.rows]


# -- HTML ------------------------------------------------------------------------------

_DROPPED_TAGS = (
    "script", "style", "nav", "noscript", "template", "svg", "canvas", "iframe", "object",
    "embed", "head",
)  # fmt: skip
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog",
    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hr",
    "li", "main", "ol", "p", "section", "summary", "td", "th", "tr", "ul",
})  # fmt: skip
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_WHITESPACE = re.compile(r"\s+")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


class _HtmlWalker:
    """Walks an HTML tree in document order, feeding blocks, headings and tables."""

    def __init__(self) -> None:
        self.builder = _SectionBuilder()
        self._inline: list[str] = []
        self._bullet = False

    def walk(self, root: Tag) -> None:
        # An explicit stack, not recursion: hostile pages nest deeper than Python recurses.
        stack: list[object] = [root]
        while stack:
            node = stack.pop()
            if node is _BLOCK_END:
                self._flush()
            elif isinstance(node, NavigableString):
                if not isinstance(node, PreformattedString):  # comments, doctypes, CDATA
                    self._inline.append(_WHITESPACE.sub(" ", node))
            elif isinstance(node, Tag):
                stack.extend(self._enter(node))
        self._flush()

    def _enter(self, tag: Tag) -> list[object]:
        """Handle a tag; returns what to push on the stack (children reversed)."""
        name = tag.name
        if name in _HEADINGS or name == "pre" or (name == "table" and not _layout_table(tag)):
            self._flush()
            if name == "pre":
                self.builder.text(tag.get_text(), preformatted=True)
            elif name == "table":
                caption = tag.find("caption")
                self.builder.table(_html_rows(tag), caption.get_text(" ") if caption else "")
            else:
                self.builder.enter_heading(_HEADINGS[name], tag.get_text(" "))
            return []
        if name == "br":
            self._inline.append("\n")
            return []
        children: list[object] = list(reversed(tag.contents))
        if name in _BLOCK_TAGS:
            self._flush()
            self._bullet = self._bullet or name == "li"
            return [_BLOCK_END, *children]
        return children

    def _flush(self) -> None:
        text = _normalise("".join(self._inline))
        if text:
            self.builder.text(f"- {text}" if self._bullet else text)
            self._bullet = False
        self._inline = []


_BLOCK_END = object()


def _layout_table(table: Tag) -> bool:
    """A table used for page layout (headings or tables inside) is walked, not tabulated."""
    if table.get("role") == "presentation":
        return True
    return table.find(["table", *_HEADINGS]) is not None


def _html_rows(table: Tag) -> list[list[str]]:
    rows = []
    for row in table.find_all("tr"):
        cells = row.find_all(["th", "td"], recursive=False)
        rows.append([cell.get_text(" ") for cell in cells])
    return rows


def _parse_html(text: str, filename: str) -> ParsedDocument:
    if "<" not in text:  # no markup at all: a text file with an .html name
        return _finish(_SectionBuilder().text(text).finish(), "html", None, filename)
    # An XML declaration makes bs4 warn that XML is being parsed as HTML; XHTML is HTML.
    try:
        soup = BeautifulSoup(_XML_DECLARATION.sub("", text, count=1), "lxml")
    except ParserRejectedMarkup as exc:
        raise CorruptDocumentError(filename, f"the HTML cannot be parsed ({exc})") from exc
    title_tag = soup.find("title")
    title = title_tag.get_text(" ") if title_tag else None
    if not (title and title.strip()):
        first_h1 = soup.find("h1")
        title = first_h1.get_text(" ") if first_h1 else None
    for tag in soup.find_all(_DROPPED_TAGS):
        tag.decompose()
    walker = _HtmlWalker()
    walker.walk(soup.body or soup)
    return _finish(walker.builder.finish(), "html", title, filename)


# -- Markdown --------------------------------------------------------------------------

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_TABLE_DELIMITER = re.compile(r"[ \t]*\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*")
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
_FRONT_MATTER_TITLE = re.compile(r"title\s*:\s*['\"]?(.*?)['\"]?\s*")


def _parse_markdown(text: str, filename: str) -> ParsedDocument:
    lines = _LINE_BREAKS.sub("\n", text).split("\n")
    title, start = _front_matter(lines)
    parser = _MarkdownParser(lines, start)
    parser.run()
    return _finish(parser.builder.finish(), "markdown", title or parser.first_h1, filename)


def _front_matter(lines: list[str]) -> tuple[str | None, int]:
    """The ``title:`` of a YAML front matter block, and the first line after it."""
    if not lines or lines[0].strip() != "---":
        return None, 0
    for index in range(1, len(lines)):
        if lines[index].strip() in ("---", "..."):
            titles = (_FRONT_MATTER_TITLE.fullmatch(line) for line in lines[1:index])
            title = next((match.group(1) for match in titles if match), None)
            return title, index + 1
    return None, 0


class _MarkdownParser:
    """A line scanner for the block structure that matters to retrieval."""

    def __init__(self, lines: list[str], start: int) -> None:
        self.builder = _SectionBuilder()
        self._lines = lines
        self._index = start
        self._paragraph: list[str] = []
        self.first_h1: str | None = None

    def run(self) -> None:
        while self._index < len(self._lines):
            line = self._lines[self._index]
            self._index += 1
            if fence := _FENCE.match(line):
                self._fenced_code(line, fence.group(1))
            elif atx := _ATX.fullmatch(line):
                self._flush()
                self._heading(len(atx.group(1)), atx.group(2) or "")
            elif self._paragraph and (setext := _SETEXT.fullmatch(line)):
                heading = " ".join(self._paragraph)
                self._paragraph = []
                self._heading(1 if setext.group(1)[0] == "=" else 2, heading)
            elif "|" in line and self._at_table_delimiter():
                self._table(line)
            elif not line.strip():
                self._flush()
            else:
                self._paragraph.append(line)
        self._flush()

    def _heading(self, level: int, text: str) -> None:
        if level == 1 and self.first_h1 is None:
            self.first_h1 = text
        self.builder.enter_heading(level, text)

    def _fenced_code(self, opening: str, marker: str) -> None:
        self._flush()
        block = [opening]
        while self._index < len(self._lines):
            line = self._lines[self._index]
            self._index += 1
            block.append(line)
            closing = _FENCE.match(line)
            if (
                closing
                and closing.group(1)[0] == marker[0]
                and len(closing.group(1)) >= len(marker)
            ):
                break
        self.builder.text("\n".join(block), preformatted=True)

    def _at_table_delimiter(self) -> bool:
        following = self._lines[self._index] if self._index < len(self._lines) else ""
        return _TABLE_DELIMITER.fullmatch(following) is not None and "-" in following

    def _table(self, header: str) -> None:
        self._flush()
        rows = [_markdown_cells(header)]
        self._index += 1  # the delimiter row
        while self._index < len(self._lines):
            line = self._lines[self._index]
            if "|" not in line or not line.strip():
                break
            rows.append(_markdown_cells(line))
            self._index += 1
        self.builder.table(rows)

    def _flush(self) -> None:
        if self._paragraph:
            self.builder.text("\n".join(self._paragraph))
            self._paragraph = []


def _markdown_cells(line: str) -> list[str]:
    line = line.strip()
    line = line.removeprefix("|")
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return [cell.strip().replace("\\|", "|") for cell in _UNESCAPED_PIPE.split(line)]


# -- CSV -------------------------------------------------------------------------------


def _parse_csv(text: str, filename: str) -> ParsedDocument:
    dialect: type[csv.Dialect]
    if filename.lower().endswith(".tsv"):
        dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel  # one column, or too irregular to tell: plain CSV
    try:
        rows = list(csv.reader(io.StringIO(text.replace("\x00", "")), dialect))
    except csv.Error as exc:
        raise CorruptDocumentError(filename, f"the CSV file cannot be read ({exc})") from exc
    builder = _SectionBuilder()
    builder.table(rows)
    return _finish(builder.finish(), "csv", None, filename)


# -- JSON ------------------------------------------------------------------------------


def _parse_json(text: str, filename: str) -> ParsedDocument:
    """An array becomes one line per element; an object one ``key.path: value`` per leaf."""
    try:
        value = _load_json(text, filename)
        if isinstance(value, list):
            lines = [line for line in map(_json_record, value) if line]
        else:
            lines = list(_json_lines(value, ""))
    except RecursionError as exc:
        raise CorruptDocumentError(filename, "the JSON is nested too deeply") from exc
    return _finish(_SectionBuilder().text("\n".join(lines)).finish(), "json", None, filename)


def _load_json(text: str, filename: str) -> object:
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise CorruptDocumentError(filename, f"the JSON is invalid ({exc})") from exc
    # JSON Lines: one value per line.
    values = []
    for number, line in enumerate(stripped.split("\n"), start=1):
        if line.strip():
            try:
                values.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise CorruptDocumentError(
                    filename, f"the JSON Lines file is invalid on line {number} ({exc.msg})"
                ) from exc
    return values


def _json_scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _inline(str(value))


def _json_record(value: object) -> str:
    """One element of an array on one line: ``name: Ada | age: 36``."""
    if isinstance(value, dict | list):
        return " | ".join(_json_lines(value, ""))
    return _json_scalar(value)


def _json_lines(value: object, path: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_lines(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            if value:
                yield f"{path}: {', '.join(_json_scalar(item) for item in value)}"
            return
        for index, item in enumerate(value):
            if isinstance(item, dict):
                yield f"{path}[{index}]: {_json_record(item)}"
            else:
                yield from _json_lines(item, f"{path}[{index}]")
    else:
        yield f"{path}: {_json_scalar(value)}" if path else _json_scalar(value)


def _parse_text(text: str, filename: str) -> ParsedDocument:
    return _finish(_SectionBuilder().text(text).finish(), "text", None, filename)


_TEXT_PARSERS: dict[DocType, Callable[[str, str], ParsedDocument]] = {
    "html": _parse_html,
    "markdown": _parse_markdown,
    "text": _parse_text,
    "csv": _parse_csv,
    "json": _parse_json,
}
