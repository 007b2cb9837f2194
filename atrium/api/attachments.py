"""``/v1/attachments``: a document put into a chat ("analyze this"), read into text.

The server checks the size and the type (the RAG engine's parsers decide what a file
is from its bytes, not its name) and answers the document's text, cut to what one
conversation message holds. The UI keeps that text as a message of the conversation,
so every later question is asked with the document in front of the model. Nothing is
stored here: the conversation store keeps the message.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from starlette.datastructures import UploadFile

from atrium.core.errors import InvalidRequestError, PayloadTooLargeError
from atrium.core.http import json_response
from atrium.gateway.auth import KeyAuthenticator
from atrium.rag.parsers import SUPPORTED_EXTENSIONS, ParseError, parse_document
from atrium.users.conversations import MAX_MESSAGE_CHARS

#: The path, and its pattern for the body size limit (the attachment limit there).
ATTACHMENTS_PATH: Final = "/v1/attachments"
ATTACHMENTS_UPLOAD: Final = re.compile(re.escape(ATTACHMENTS_PATH))

#: Room left in a message for the line that names the document.
_HEADER_ROOM: Final = 1_000
MAX_ATTACHMENT_CHARS: Final = MAX_MESSAGE_CHARS - _HEADER_ROOM


def attachments_router(auth: KeyAuthenticator, *, max_bytes: int) -> APIRouter:
    """``GET`` the limits, ``POST`` a document (multipart ``file``) to read its text."""
    router = APIRouter(prefix=ATTACHMENTS_PATH, tags=["conversations"])
    limits = {
        "object": "attachment.limits",
        "max_bytes": max_bytes,
        "max_chars": MAX_ATTACHMENT_CHARS,
        "extensions": sorted(SUPPORTED_EXTENSIONS),
    }

    @router.get("")
    async def show_limits(request: Request) -> Response:
        await auth.authenticate(request.headers.get("authorization"))
        return json_response(limits)

    @router.post("")
    async def read(request: Request) -> Response:
        await auth.authenticate(request.headers.get("authorization"))
        filename, media_type, data = await _uploaded(request)
        if len(data) > max_bytes:
            raise PayloadTooLargeError(
                f"the document is {len(data)} bytes; at most {max_bytes} are accepted",
                param="file",
            )
        return json_response(await read_attachment(filename, media_type, data), status=201)

    return router


async def read_attachment(filename: str, media_type: str | None, data: bytes) -> dict[str, Any]:
    """The document's text (cut to :data:`MAX_ATTACHMENT_CHARS`); a 400 for what no
    parser reads, an empty, encrypted or damaged file."""
    try:
        parsed = await asyncio.to_thread(parse_document, data, filename, media_type)
    except ParseError as error:
        raise InvalidRequestError(error.reason, param="file", code=error.code) from None
    text = parsed.text
    truncated = len(text) > MAX_ATTACHMENT_CHARS
    return {
        "object": "attachment",
        "filename": filename,
        "doc_type": parsed.doc_type,
        "title": parsed.title,
        "bytes": len(data),
        "chars": len(text),
        "truncated": truncated,
        "text": text[:MAX_ATTACHMENT_CHARS] if truncated else text,
    }


async def _uploaded(request: Request) -> tuple[str, str | None, bytes]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        msg = "send the document as multipart/form-data with a 'file' field"
        raise InvalidRequestError(msg, param="file")
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidRequestError("the form has no 'file' field with a file", param="file")
        return upload.filename, upload.content_type, await upload.read()
