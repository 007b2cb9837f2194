"""Attachments: a document put into a chat comes back as its text; size and type checked."""

from __future__ import annotations

import io
import zipfile

import pytest

from atrium.api.attachments import attachments_router
from atrium.gateway.auth import KeyAuthenticator
from tests.integration.users.conftest import ADMIN_PASSWORD, WebApp, sign_in

pytestmark = pytest.mark.integration

LIMIT = 4096


def _mounted(webapp: WebApp) -> WebApp:
    webapp.app.include_router(
        attachments_router(KeyAuthenticator(webapp.keys, ttl=0), max_bytes=LIMIT)
    )
    # The UI catch-all is the router's default: included routes still answer first.
    return webapp


async def test_a_document_is_read_into_text(webapp: WebApp) -> None:
    _mounted(webapp)
    async with webapp.client() as client:
        headers = {"x-csrf-token": await sign_in(client, "admin", ADMIN_PASSWORD)}
        limits = (await client.get("/v1/attachments")).json()
        assert limits["max_bytes"] == LIMIT
        assert ".pdf" in limits["extensions"]
        assert ".md" in limits["extensions"]
        doc = b"# Leave policy\n\nStaff get 30 days of paid leave a year.\n"
        read = await client.post(
            "/v1/attachments",
            files={"file": ("policy.md", doc, "text/markdown")},
            headers=headers,
        )
        assert read.status_code == 201, read.text
        body = read.json()
        assert body["doc_type"] == "markdown"
        assert "30 days of paid leave" in body["text"]
        assert body["truncated"] is False
        assert body["bytes"] == len(doc)


async def test_wrong_type_size_or_form_is_a_4xx(webapp: WebApp) -> None:
    _mounted(webapp)
    async with webapp.client() as client:
        headers = {"x-csrf-token": await sign_in(client, "admin", ADMIN_PASSWORD)}
        big = await client.post(
            "/v1/attachments", files={"file": ("big.txt", b"a " * LIMIT)}, headers=headers
        )
        assert big.status_code == 413
        assert big.json()["error"]["param"] == "file"
        png = await client.post(
            "/v1/attachments",
            files={"file": ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)))},
            headers=headers,
        )
        assert png.status_code == 400
        assert png.json()["error"]["param"] == "file"
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w") as archive:
            archive.writestr("x.txt", "not a docx")
        fake_docx = await client.post(
            "/v1/attachments",
            files={"file": ("memo.docx", zipped.getvalue())},
            headers=headers,
        )
        assert fake_docx.status_code == 400
        empty = await client.post(
            "/v1/attachments", files={"file": ("empty.txt", b"  \n")}, headers=headers
        )
        assert empty.status_code == 400
        assert empty.json()["error"]["code"] == "empty_document"
        not_form = await client.post("/v1/attachments", json={"file": "x"}, headers=headers)
        assert not_form.status_code == 400


async def test_attachments_need_a_signed_in_user_or_key(webapp: WebApp) -> None:
    _mounted(webapp)
    async with webapp.client() as client:
        anonymous = await client.post("/v1/attachments", files={"file": ("a.txt", b"hello")})
        assert anonymous.status_code == 401
