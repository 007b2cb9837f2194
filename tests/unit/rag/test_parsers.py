"""parse_document on real files of every supported type, generated here with the same
libraries that write them in the wild (pypdf, python-docx), and on damaged ones."""

from __future__ import annotations

import io
import json
import random
import zipfile

import docx
import pytest
from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, StreamObject

from atrium.rag.parsers import (
    SUPPORTED_EXTENSIONS,
    BinaryContentError,
    CorruptDocumentError,
    EmptyDocumentError,
    EncryptedDocumentError,
    ParseError,
    UnsupportedTypeError,
    detect_type,
    is_supported,
    parse_document,
)
from atrium.rag.types import Section


def make_pdf(
    pages: list[list[str]],
    *,
    title: str | None = None,
    user_password: str | None = None,
    owner_password: str | None = None,
    algorithm: str = "AES-128",
) -> bytes:
    """A PDF with one text line per string, in Helvetica, one page per list."""
    writer = PdfWriter()
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    font_ref = writer._add_object(font)
    for lines in pages:
        page = writer.add_blank_page(612, 792)
        operators = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            operators.append(f"({escaped}) Tj T*")
        operators.append("ET")
        stream = StreamObject()
        stream.set_data("\n".join(operators).encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        fonts = DictionaryObject({NameObject("/F1"): font_ref})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    if title:
        writer.add_metadata({"/Title": title})
    if user_password is not None:
        writer.encrypt(user_password, owner_password, algorithm=algorithm)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Staff Handbook"
    document.add_heading("Intro", level=1)
    document.add_paragraph("Welcome   to the\thandbook.")
    document.add_heading("Scope", level=2)
    document.add_paragraph("It covers leave and expenses.")
    table = document.add_table(rows=3, cols=3)
    cells = [["Name", "Role", "Team"], ["Ada", "Engineer", "Core"], ["Bob", "PM", "Apps"]]
    for r, row in enumerate(cells):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_heading("Leave", level=1)
    document.add_paragraph("Ask your manager.")
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# -- PDF -------------------------------------------------------------------------------


def test_pdf_one_section_per_page_numbered_from_one_with_the_metadata_title() -> None:
    data = make_pdf([["Hello   world", "second line"], [], ["Page three"]], title="Q3 Report")
    doc = parse_document(data, "report.pdf")
    assert doc.doc_type == "pdf"
    assert doc.title == "Q3 Report"
    # The blank second page has no section; the third keeps its own number.
    assert doc.sections == [
        Section("Hello world\nsecond line", page=1),
        Section("Page three", page=3),
    ]


def test_encrypted_pdf_needing_a_password_is_refused_by_name() -> None:
    data = make_pdf([["secret plans"]], user_password="hunter2", owner_password="owner")
    with pytest.raises(EncryptedDocumentError) as caught:
        parse_document(data, "report.pdf")
    assert str(caught.value) == (
        "report.pdf: the PDF is encrypted and cannot be read without a password"
    )
    assert caught.value.reason == "the PDF is encrypted and cannot be read without a password"
    assert caught.value.code == "encrypted_document"


@pytest.mark.parametrize("algorithm", ["RC4-128", "AES-128", "AES-256"])
def test_pdf_encrypted_with_an_empty_user_password_opens(algorithm: str) -> None:
    data = make_pdf([["open to all"]], user_password="", owner_password="own", algorithm=algorithm)
    assert parse_document(data, "open.pdf").sections == [Section("open to all", page=1)]


def test_pdf_without_text_is_empty_and_says_why() -> None:
    with pytest.raises(EmptyDocumentError, match=r"scan\.pdf: .*no extractable text.*OCR"):
        parse_document(make_pdf([[], []]), "scan.pdf")


def test_file_named_pdf_that_is_not_a_pdf_is_corrupt() -> None:
    with pytest.raises(CorruptDocumentError, match=r"notes\.pdf: .*not a PDF"):
        parse_document(b"just some text", "notes.pdf")


def test_truncated_pdfs_fail_only_with_parse_errors() -> None:
    data = make_pdf([["alpha beta"], ["gamma delta"]], title="T")
    outcomes = set()
    for cut in range(8, len(data), 17):
        try:
            parse_document(data[:cut], "cut.pdf")
            outcomes.add("parsed")
        except ParseError as error:
            outcomes.add(f"{type(error).__name__} for {error.filename}")
    assert "CorruptDocumentError for cut.pdf" in outcomes


def test_garbled_pdfs_fail_only_with_parse_errors() -> None:
    data = make_pdf([["alpha beta"], ["gamma delta"]], title="T")
    rng = random.Random(1234)
    outcomes = set()
    for _ in range(200):
        garbled = bytearray(data)
        for _ in range(rng.randint(1, 30)):
            garbled[rng.randrange(9, len(garbled))] = rng.randrange(256)
        try:
            parse_document(bytes(garbled), "garbled.pdf")
            outcomes.add("parsed")
        except ParseError as error:
            outcomes.add(type(error).__name__)
    assert {"parsed", "CorruptDocumentError"} <= outcomes


# -- DOCX ------------------------------------------------------------------------------


def test_docx_headings_make_the_path_and_tables_are_table_sections() -> None:
    doc = parse_document(make_docx(), "handbook.docx")
    assert doc.doc_type == "docx"
    assert doc.title == "Staff Handbook"
    assert doc.sections == [
        Section("Welcome to the handbook.", heading="Intro"),
        Section("It covers leave and expenses.", heading="Intro > Scope"),
        Section(
            "Name | Role | Team\nAda | Engineer | Core\nBob | PM | Apps",
            heading="Intro > Scope",
            kind="table",
        ),
        Section("Ask your manager.", heading="Leave"),
    ]


def test_docx_title_style_is_the_title_when_the_properties_have_none() -> None:
    document = docx.Document()
    document.add_paragraph("Travel Policy", style="Title")
    document.add_paragraph("Book economy.")
    buffer = io.BytesIO()
    document.save(buffer)
    doc = parse_document(buffer.getvalue(), "travel.docx")
    assert doc.title == "Travel Policy"
    assert doc.sections == [Section("Book economy.")]


def test_damaged_docx_files_are_corrupt() -> None:
    data = make_docx()
    for cut in range(100, len(data), len(data) // 25):
        with pytest.raises(ParseError):
            parse_document(data[:cut], "cut.docx")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("word/document.xml", "<w:document><unclosed>")
        zipped.writestr("[Content_Types].xml", "<Types/>")
    with pytest.raises(CorruptDocumentError, match=r"bad\.docx: the Word document is damaged"):
        parse_document(archive.getvalue(), "bad.docx")


def test_a_zip_that_is_not_a_docx_and_a_legacy_doc_are_refused() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(CorruptDocumentError, match=r"no word/document\.xml"):
        parse_document(archive.getvalue(), "sheet.docx")
    legacy = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)
    with pytest.raises(UnsupportedTypeError, match=r"old\.docx: legacy Word \.doc"):
        parse_document(legacy, "old.docx")


# -- HTML ------------------------------------------------------------------------------

PAGE = b"""<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>The   Guide</title>
<style>p { color: red }</style><script>var token = "leak";</script></head>
<body><nav><a href="/">Home</a><a href="/menu">Menu</a></nav>
<h1>Intro</h1><p>Hello <b>bold</b>
   world &amp; more.<br>Next line</p><!-- a comment -->
<h2>Scope</h2><div>Before<p>Inner paragraph</p>after</div>
<ul><li>one</li><li><p>two</p></li></ul>
<table><caption>People</caption><thead><tr><th>Name</th><th>Age</th></tr></thead>
<tbody><tr><td>Ada</td><td>36</td></tr><tr><td>Bob</td><td>41</td></tr></tbody></table>
<pre>def f():
    return 1</pre>
<h2>Other</h2><p>Other text</p>
<table><tr><td><h3>Layout</h3><p>cell text</p></td></tr></table>
<script>alert(1)</script><noscript>enable js</noscript>
</body></html>"""


def test_html_is_split_by_headings_with_tables_and_without_scripts_or_navigation() -> None:
    doc = parse_document(PAGE, "guide.xhtml")
    assert doc.doc_type == "html"
    assert doc.title == "The Guide"
    assert doc.sections == [
        Section("Hello bold world & more.\nNext line", heading="Intro"),
        Section("Before\n\nInner paragraph\n\nafter\n\n- one\n\n- two", heading="Intro > Scope"),
        Section("Name | Age\nAda | 36\nBob | 41", heading="Intro > Scope > People", kind="table"),
        Section("def f():\n    return 1", heading="Intro > Scope"),
        Section("Other text", heading="Intro > Other"),
        # A table holding headings lays out a page; it is walked, not tabulated.
        Section("cell text", heading="Intro > Other > Layout"),
    ]
    for leaked in ("leak", "alert", "Menu", "color", "comment", "enable js"):
        assert leaked not in doc.text


def test_html_title_falls_back_to_the_first_h1_and_charsets_are_honoured() -> None:
    latin = b'<html><head><meta charset="iso-8859-1"></head><body><h1>Caf\xe9</h1><p>cr\xe8me</p>'
    doc = parse_document(latin, "menu.html")
    assert doc.title == "Café"
    assert doc.sections == [Section("crème", heading="Café")]
    by_header = parse_document(
        "<p>\u00fcber</p>".encode("utf-16-le"), "x.html", "text/html; charset=UTF-16LE"
    )
    assert by_header.text == "über"


def test_html_without_markup_is_read_as_text() -> None:
    doc = parse_document(b"https://example.com/page", "link.html")
    assert doc.sections == [Section("https://example.com/page")]


# -- Markdown --------------------------------------------------------------------------

MARKDOWN = b"""---
title: "Deploy Guide"
tags: [ops]
---
Setext Title
============

First   paragraph
continues here.

Install
-------

```bash
# a comment, not a heading
  indented   command
```

| Flag | Meaning \\| note |
|:-----|--------:|
| -v | verbose \\| loud |
| -q | quiet |

## Closed heading ##
Last words.
"""


def test_markdown_headings_code_and_tables() -> None:
    doc = parse_document(MARKDOWN, "deploy.md")
    assert doc.doc_type == "markdown"
    assert doc.title == "Deploy Guide"
    assert doc.sections == [
        Section("First paragraph\ncontinues here.", heading="Setext Title"),
        Section(
            "```bash\n# a comment, not a heading\n  indented   command\n```",
            heading="Setext Title > Install",
        ),
        Section(
            "Flag | Meaning | note\n-v | verbose | loud\n-q | quiet",
            heading="Setext Title > Install",
            kind="table",
        ),
        Section("Last words.", heading="Setext Title > Closed heading"),
    ]


def test_a_document_of_headings_only_keeps_them_as_text() -> None:
    doc = parse_document(b"# Roadmap\n\n## Later\n", "todo.md")
    assert doc.sections == [Section("Roadmap\nLater")]


def test_markdown_title_is_the_first_h1_without_front_matter() -> None:
    doc = parse_document(b"Intro text.\n\n# Real Title\n\nBody.\n", "notes.markdown")
    assert doc.title == "Real Title"
    assert doc.sections == [Section("Intro text."), Section("Body.", heading="Real Title")]


# -- text, CSV, JSON -------------------------------------------------------------------


def test_text_whitespace_is_normalised_and_paragraph_breaks_kept() -> None:
    raw = (
        b"Hello    world\t again  \r\n  next line\r\n\r\n\r\n\r\nNew\xc2\xa0paragraph\xe2\x80\x8b."
    )
    assert parse_document(raw, "notes.txt").sections == [
        Section("Hello world again\nnext line\n\nNew paragraph.")
    ]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("café crème".encode("cp1252"), "café crème"),
        ("naïve".encode("utf-16"), "naïve"),
        ("\ufeffbom text".encode(), "bom text"),
    ],
)
def test_text_encodings(data: bytes, expected: str) -> None:
    assert parse_document(data, "a.txt").text == expected


def test_csv_is_one_table_section_with_the_sniffed_delimiter() -> None:
    data = b'name;city\nAda;"London,\nUK"\n\n;\nBob;Paris\n'
    doc = parse_document(data, "people.csv")
    assert doc.doc_type == "csv"
    assert doc.sections == [Section("name | city\nAda | London, UK\nBob | Paris", kind="table")]
    tsv = parse_document(b"a\tb\n1\t2\n", "x.tsv")
    assert tsv.sections == [Section("a | b\n1 | 2", kind="table")]


def test_json_array_is_one_record_per_line_and_object_is_key_paths() -> None:
    records = [
        {"name": "Ada", "age": 36, "tags": ["x", "y"], "address": {"city": "London"}},
        {"name": "Bob", "active": True, "manager": None},
    ]
    doc = parse_document(json.dumps(records).encode(), "people.json")
    assert doc.doc_type == "json"
    assert doc.text == (
        "name: Ada | age: 36 | tags: x, y | address.city: London\n"
        "name: Bob | active: true | manager: null"
    )
    config = {"service": {"name": "api", "ports": [80, 443]}, "hosts": [{"ip": "1.2.3.4"}]}
    assert parse_document(json.dumps(config).encode(), "config.json").text == (
        "service.name: api\nservice.ports: 80, 443\nhosts[0]: ip: 1.2.3.4"
    )
    lines = parse_document(b'{"a": 1}\n\n{"a": 2}\n', "events.jsonl")
    assert lines.text == "a: 1\na: 2"
    # NUL characters are stripped from extracted text.
    assert parse_document(b'{"note": "x\\u0000y"}', "nul.json").text == "note: xy"


@pytest.mark.parametrize(
    ("data", "filename", "error", "pattern"),
    [
        (b"[1, 2", "broken.json", CorruptDocumentError, r"broken\.json: the JSON is invalid"),
        (b'{"a": 1}\n{"a": \n', "bad.jsonl", CorruptDocumentError, "invalid on line 2"),
        (b"[" * 100_000 + b"]" * 100_000, "deep.json", CorruptDocumentError, "nested too deeply"),
        (b"{}", "nothing.json", EmptyDocumentError, r"nothing\.json: the document has no text"),
        (b"", "empty.txt", EmptyDocumentError, r"empty\.txt: the file is empty"),
        (b" \n\t\n", "blank.md", EmptyDocumentError, "the file is empty"),
        (b"MZ\x90\x00", "tool.exe", UnsupportedTypeError, r"tool\.exe: this file type"),
    ],
)
def test_errors_name_the_file_and_the_problem(
    data: bytes, filename: str, error: type[ParseError], pattern: str
) -> None:
    with pytest.raises(error, match=pattern):
        parse_document(data, filename)


# -- binary content --------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256))


@pytest.mark.parametrize("filename", ["a.txt", "a.md", "a.csv", "a.json", "a.html", "README"])
def test_binary_content_under_a_text_name_is_refused(filename: str) -> None:
    with pytest.raises(BinaryContentError, match="binary data"):
        parse_document(PNG, filename)
    rng = random.Random(filename)
    for _ in range(20):
        noise = bytes(rng.randrange(1, 256) for _ in range(400))  # no NUL bytes at all
        with pytest.raises(BinaryContentError):
            parse_document(noise, filename)
    with pytest.raises(BinaryContentError):
        parse_document(bytes(range(1, 32)) * 8 + b"some words", filename)


# -- type detection --------------------------------------------------------------------


def test_type_detection_by_extension_then_media_type_then_content() -> None:
    pdf = make_pdf([["x"]])
    assert detect_type(b"# Title", "README.MD") == "markdown"
    assert detect_type(b"a,b", "export", "text/csv; charset=utf-8") == "csv"
    assert detect_type(b"plain", "LICENSE") == "text"
    assert detect_type(b"plain", "blob", "application/octet-stream") == "text"
    # PDF and DOCX bytes are recognised whatever the name says.
    assert detect_type(pdf, "download") == "pdf"
    assert detect_type(pdf, "report.txt") == "pdf"
    assert detect_type(make_docx(), "memo.bin") == "docx"
    with pytest.raises(UnsupportedTypeError):
        detect_type(b"data", "sheet.xlsx")
    with pytest.raises(UnsupportedTypeError):
        detect_type(b"data", "blob", "image/png")


def test_supported_names_for_upload_checks() -> None:
    assert {".pdf", ".docx", ".html", ".md", ".txt", ".csv", ".json"} <= SUPPORTED_EXTENSIONS
    assert is_supported("Report.PDF")
    assert is_supported("data", "application/json")
    assert not is_supported("archive.zip")
    assert not is_supported("photo.png", "image/png")
