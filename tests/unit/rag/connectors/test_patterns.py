"""Safe templates, glob matching and the small helpers every connector uses."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from atrium.rag.connectors._patterns import PathMatcher, Template, glob_regex
from atrium.rag.connectors.base import (
    format_size,
    mask_url,
    parse_timestamp,
    safe_filename,
    scrub,
    to_scalar,
    too_large,
)


def test_a_template_renders_plain_names_and_escaped_braces() -> None:
    template = Template.parse("{title}\n\n{body} {{literal}} {missing}|{n}")
    assert template.fields == ("title", "body", "missing", "n")
    rendered = template.render({"title": "T", "body": None, "n": 3})
    assert rendered == "T\n\n {literal} |3"


@pytest.mark.parametrize(
    "template",
    [
        "{row.__class__}",
        "{items[0]}",
        "{0}",
        "{}",
        "{name!r}",
        "{name:>10}",
        "{ name }",
        "unclosed {",
        "stray } brace",
    ],
)
def test_templates_with_anything_but_plain_names_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="stray"):
        Template.parse(template)


def test_rendering_never_reaches_attributes() -> None:
    class Row(dict[str, object]):
        secret = "do not show"

    assert Template.parse("{title}").render(Row(title="x")) == "x"
    with pytest.raises(ValueError, match="stray"):
        Template.parse("{title.secret}")


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("**/*", "a.txt", True),
        ("**/*", "a/b/c.txt", True),
        ("docs/**/*.md", "docs/a.md", True),
        ("docs/**/*.md", "docs/x/y/a.md", True),
        ("docs/**/*.md", "other/a.md", False),
        ("docs/*.md", "docs/x/a.md", False),
        ("?.txt", "a.txt", True),
        ("?.txt", "ab.txt", False),
        ("[ab].txt", "b.txt", True),
        ("[!ab].txt", "c.txt", True),
        ("[!ab].txt", "a.txt", False),
        ("report(1).pdf", "report(1).pdf", True),
    ],
)
def test_glob_regex(pattern: str, path: str, matches: bool) -> None:
    assert (glob_regex(pattern).match(path) is not None) is matches


def test_name_patterns_match_at_any_depth_and_excludes_cut_folders() -> None:
    matcher = PathMatcher(["*.md", "docs/**/*.txt"], ["node_modules", "drafts/**", "*.tmp.md"])
    assert matcher("readme.md")
    assert matcher("a/b/notes.md")
    assert matcher("docs/x/a.txt")
    assert not matcher("a.txt")
    assert not matcher("web/node_modules/pkg/readme.md")
    assert not matcher("drafts/x/a.md")
    assert not matcher("a/b.tmp.md")
    assert matcher.excludes_folder("web/node_modules")
    assert matcher.excludes_folder("drafts")
    assert not matcher.excludes_folder("docs")


def test_a_path_exclude_without_trailing_globstar_does_not_cut_the_folder() -> None:
    matcher = PathMatcher(["**/*"], ["docs/*"])
    assert not matcher.excludes_folder("docs")
    assert not matcher("docs/a.md")
    assert matcher("docs/sub/a.md")


@pytest.mark.parametrize("pattern", ["", "/etc/*", "a\x00b"])
def test_invalid_globs_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="not a relative glob"):
        glob_regex(pattern)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db:5432/x", "postgresql://app:***@db:5432/x"),
        ("https://api.test/v1?api_key=abc&page=2", "https://api.test/v1?api_key=***&page=2"),
        ("https://api.test/v1?access_token=abc", "https://api.test/v1?access_token=***"),
        ("https://user@api.test/", "https://user@api.test/"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_scrub_removes_secret_values() -> None:
    assert scrub("token abcd1234 refused", ["abcd1234", None]) == "token *** refused"


def test_sizes_read_like_a_person_writes_them() -> None:
    assert format_size(512) == "512 bytes"
    assert format_size(2048) == "2 KB"
    assert format_size(int(12.3 * 1024 * 1024)) == "12.3 MB"
    assert too_large("a.pdf", int(12.3 * 1024 * 1024), 10 * 1024 * 1024) == (
        "a.pdf is 12.3 MB, over the 10 MB limit"
    )


def test_safe_filename() -> None:
    assert safe_filename("42") == "42.txt"
    assert safe_filename("../../etc/passwd", ".md") == "etc_passwd.md"
    assert safe_filename("...") == "document.txt"


def test_parse_timestamp() -> None:
    aware = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert parse_timestamp(aware) == aware
    assert parse_timestamp("2030-01-02T03:04:05Z") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_timestamp("2030-01-02 03:04:05") == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_timestamp(0) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_timestamp(date(2030, 1, 2)) == datetime(2030, 1, 2, tzinfo=UTC)
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp(True) is None
    assert parse_timestamp(10**20) is None


def test_to_scalar() -> None:
    assert to_scalar(3) == 3
    assert to_scalar({"a": [1]}) == '{"a": [1]}'
    assert to_scalar(date(2030, 1, 2)) == datetime(2030, 1, 2, tzinfo=UTC)
    assert to_scalar(None) is None
