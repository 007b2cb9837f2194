"""The UI's files: SPA fallback, cache headers, JSON 404s for API paths, a page when unbuilt."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from atrium.api.ui import WebUiApp


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    root = tmp_path / "dist"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>Atrium</title>")
    (root / "assets" / "index-abc123.js").write_text("console.log(1)")
    (root / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("outside")
    return root


def _client(root: Path) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=WebUiApp(root)), base_url="http://t")


async def test_hashed_assets_are_cached_for_good(dist: Path) -> None:
    async with _client(dist) as client:
        resp = await client.get("/assets/index-abc123.js")
    assert resp.status_code == 200
    assert resp.text == "console.log(1)"
    assert resp.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_client_routes_get_index_html_revalidated(dist: Path) -> None:
    async with _client(dist) as client:
        for path in ("/", "/chat", "/chat/abc", "/login"):
            resp = await client.get(path)
            assert resp.status_code == 200, path
            assert "<title>Atrium</title>" in resp.text
            assert resp.headers["cache-control"] == "no-cache"
            assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]


async def test_missing_files_and_api_paths_are_json_404s(dist: Path) -> None:
    async with _client(dist) as client:
        for path in ("/assets/gone-1.js", "/v1/nope", "/v1"):
            resp = await client.get(path)
            assert resp.status_code == 404, path
            assert resp.json()["error"]["code"] == "unknown_route"
        post = await client.post("/chat")
        assert post.status_code == 404


async def test_no_escape_from_the_folder(dist: Path) -> None:
    async with _client(dist) as client:
        resp = await client.get("/../secret.txt")
        encoded = await client.get("/%2e%2e/secret.txt")
    for answer in (resp, encoded):
        assert "outside" not in answer.text


async def test_an_unbuilt_ui_says_how_to_build_it(tmp_path: Path) -> None:
    async with _client(tmp_path / "missing") as client:
        resp = await client.get("/")
    assert resp.status_code == 503
    assert "make ui" in resp.text
    assert resp.headers["content-type"].startswith("text/html")
