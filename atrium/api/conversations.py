"""``/v1/conversations``: the signed-in user's chat conversations (the UI's Chat page)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atrium.core.http import json_response, parse_body, parse_data
from atrium.gateway.auth import KeyAuthenticator
from atrium.users.conversations import (
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    MAX_TITLE,
    Conversations,
    Message,
    MessageRole,
)
from atrium.users.service import UserService

_MAX_META_KEYS: Final = 20
_MAX_CITATIONS: Final = 50
_Scalar = str | int | float | bool | None


class StoredCitation(BaseModel):
    """A passage a knowledge-base answer cited, kept with the answer (the query API's
    citation, plus the passage's text so it can be opened later)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    number: int = Field(ge=0)
    document_id: str = Field(max_length=200)
    chunk_id: str = Field(max_length=200)
    title: str | None = Field(None, max_length=1000)
    section: str | None = Field(None, max_length=1000)
    page: int | None = None
    score: float
    snippet: str = Field(max_length=4000)
    link: str | None = Field(None, max_length=4000)
    uri: str | None = Field(None, max_length=4000)
    text: str | None = Field(None, max_length=20_000)


class MessageMeta(BaseModel):
    """A message's metadata: flat values the UI keeps (model, stopped, error, ids), and
    the citations of a knowledge-base answer."""

    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, _Scalar]

    citations: list[StoredCitation] | None = Field(None, max_length=_MAX_CITATIONS)

    @model_validator(mode="after")
    def _few_keys(self) -> MessageMeta:
        if len(self.__pydantic_extra__) + (self.citations is not None) > _MAX_META_KEYS:
            raise ValueError(f"meta has more than {_MAX_META_KEYS} keys")
        return self


class MessageBody(BaseModel):
    """One message as the API takes it."""

    model_config = ConfigDict(strict=True, extra="forbid")

    role: MessageRole
    content: str = Field(max_length=MAX_MESSAGE_CHARS)
    meta: MessageMeta | None = None

    def to_message(self) -> Message:
        """The stored form."""
        meta = None if self.meta is None else self.meta.model_dump(mode="json", exclude_unset=True)
        return Message(self.role, self.content, meta)


class ConversationCreate(BaseModel):
    """Body of ``POST /v1/conversations``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    title: str = Field("New conversation", min_length=1, max_length=MAX_TITLE)
    model: str = Field(min_length=1, max_length=200)
    messages: list[MessageBody] = Field(default_factory=list, max_length=MAX_MESSAGES)


class ConversationUpdate(BaseModel):
    """Body of ``PATCH /v1/conversations/{id}``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=MAX_TITLE)
    model: str | None = Field(None, min_length=1, max_length=200)


class MessagesReplace(BaseModel):
    """Body of ``PUT /v1/conversations/{id}/messages``."""

    model_config = ConfigDict(strict=True, extra="forbid")

    messages: list[MessageBody] = Field(max_length=MAX_MESSAGES)


class ListQuery(BaseModel):
    """Query of ``GET /v1/conversations``."""

    model_config = ConfigDict(extra="forbid")

    q: str | None = Field(None, max_length=200)
    limit: int = Field(50, ge=1, le=200)


def conversations_router(
    conversations: Conversations, users: UserService, auth: KeyAuthenticator
) -> APIRouter:
    """List (and search with ``?q=``), create, read, rename, replace messages, delete."""
    router = APIRouter(prefix="/v1/conversations", tags=["conversations"])

    async def owner(request: Request) -> str:
        principal = await auth.authenticate(request.headers.get("authorization"))
        return (await users.user_of(principal)).id

    @router.get("")
    async def list_conversations(request: Request) -> Response:
        user_id = await owner(request)
        query = parse_data(ListQuery, dict(request.query_params))
        found = await conversations.list(user_id, query=query.q, limit=query.limit)
        return json_response({"object": "list", "data": [c.to_public() for c in found]})

    @router.post("")
    async def create_conversation(request: Request) -> Response:
        user_id = await owner(request)
        body = parse_body(ConversationCreate, await request.body())
        messages = [m.to_message() for m in body.messages]
        created = await conversations.create(
            user_id, title=body.title.strip() or "New conversation", model=body.model,
            messages=messages,
        )  # fmt: skip
        return json_response(created.to_public(), status=201)

    @router.get("/{conversation_id}")
    async def get_conversation(conversation_id: str, request: Request) -> Response:
        user_id = await owner(request)
        return json_response((await conversations.get(user_id, conversation_id)).to_public())

    @router.patch("/{conversation_id}")
    async def update_conversation(conversation_id: str, request: Request) -> Response:
        user_id = await owner(request)
        body = parse_body(ConversationUpdate, await request.body())
        title = None if body.title is None else body.title.strip() or None
        updated = await conversations.update(
            user_id, conversation_id, title=title, model=body.model
        )
        return json_response(updated.to_public())

    @router.put("/{conversation_id}/messages")
    async def replace_messages(conversation_id: str, request: Request) -> Response:
        user_id = await owner(request)
        body = parse_body(MessagesReplace, await request.body())
        messages = [m.to_message() for m in body.messages]
        return json_response(
            (await conversations.replace_messages(user_id, conversation_id, messages)).to_public()
        )

    @router.delete("/{conversation_id}")
    async def delete_conversation(conversation_id: str, request: Request) -> Response:
        user_id = await owner(request)
        await conversations.delete(user_id, conversation_id)
        return json_response({"object": "conversation.deleted", "id": conversation_id})

    return router
