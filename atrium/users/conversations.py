"""Chat conversations kept per user: list, search, read, create, rename, replace the
messages, delete. Every method takes the owner's id; another user's conversation
does not exist as far as the caller can tell."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import orjson
from sqlalchemy import delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.core.errors import NotFoundError
from atrium.store.db import Database
from atrium.store.hot import HotState
from atrium.store.users import ConversationMessageRow, ConversationRow

MAX_MESSAGES: Final = 500
MAX_MESSAGE_CHARS: Final = 200_000
MAX_TITLE: Final = 200
MessageRole = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a conversation."""

    role: MessageRole
    content: str
    meta: dict[str, Any] | None = None

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view."""
        return {"role": self.role, "content": self.content, "meta": self.meta}


@dataclass(frozen=True, slots=True)
class Conversation:
    """A conversation's header (and, when read whole, its messages)."""

    id: str
    title: str
    model: str
    created_at: datetime
    updated_at: datetime
    messages: tuple[Message, ...] | None = None

    def to_public(self) -> dict[str, Any]:
        """A JSON-safe view; ``messages`` only when they were read."""
        body: dict[str, Any] = {
            "object": "conversation",
            "id": self.id,
            "title": self.title,
            "model": self.model,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }
        if self.messages is not None:
            body["messages"] = [m.to_public() for m in self.messages]
        return body


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class Conversations(Protocol):
    """What the conversations API needs: the repository, or its cached front."""

    async def list(
        self, user_id: str, *, query: str | None = None, limit: int = 50
    ) -> builtins.list[Conversation]: ...
    async def get(self, user_id: str, conversation_id: str) -> Conversation: ...
    async def create(
        self, user_id: str, *, title: str, model: str, messages: Sequence[Message] = ()
    ) -> Conversation: ...
    async def update(
        self, user_id: str, conversation_id: str, *, title: str | None, model: str | None
    ) -> Conversation: ...
    async def replace_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[Message]
    ) -> Conversation: ...
    async def delete(self, user_id: str, conversation_id: str) -> None: ...


class ConversationRepository:
    """Conversations and their messages in the relational store."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._db = db
        self._clock = clock

    async def list(
        self, user_id: str, *, query: str | None = None, limit: int = 50
    ) -> builtins.list[Conversation]:
        """The user's conversations, latest first; ``query`` matches titles and messages
        (case-insensitive substring)."""
        statement = select(ConversationRow).where(ConversationRow.user_id == user_id)
        if query:
            pattern = f"%{_escape_like(query.lower())}%"
            in_messages = exists().where(
                ConversationMessageRow.conversation_id == ConversationRow.id,
                func.lower(ConversationMessageRow.content).like(pattern, escape="\\"),
            )
            statement = statement.where(
                or_(func.lower(ConversationRow.title).like(pattern, escape="\\"), in_messages)
            )
        statement = statement.order_by(ConversationRow.updated_at.desc(), ConversationRow.id).limit(
            limit
        )
        async with self._db.session() as session:
            return [_header(row) for row in await session.scalars(statement)]

    async def get(self, user_id: str, conversation_id: str) -> Conversation:
        """One of the user's conversations with its messages; 404 otherwise."""
        async with self._db.session() as session:
            row = await self._owned(session, user_id, conversation_id)
            messages = await session.scalars(
                select(ConversationMessageRow)
                .where(ConversationMessageRow.conversation_id == conversation_id)
                .order_by(ConversationMessageRow.seq)
            )
            return _whole(row, [_message(m) for m in messages])

    async def create(
        self, user_id: str, *, title: str, model: str, messages: Sequence[Message] = ()
    ) -> Conversation:
        """A new conversation of the user, with its first messages."""
        now = self._clock()
        row = ConversationRow(
            id=uuid.uuid4().hex, user_id=user_id, title=title, model=model,
            created_at=now, updated_at=now,
        )  # fmt: skip
        async with self._db.session() as session:
            session.add(row)
            await session.flush()
            session.add_all(_rows(row.id, messages))
            await session.commit()
        return _whole(row, list(messages))

    async def update(
        self, user_id: str, conversation_id: str, *, title: str | None, model: str | None
    ) -> Conversation:
        """Rename a conversation or change its model."""
        values: dict[str, Any] = {"updated_at": self._clock()}
        if title is not None:
            values["title"] = title
        if model is not None:
            values["model"] = model
        async with self._db.session() as session:
            await self._owned(session, user_id, conversation_id)
            await session.execute(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .values(**values)
            )
            await session.commit()
        return await self.get(user_id, conversation_id)

    async def replace_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[Message]
    ) -> Conversation:
        """Set a conversation's messages (the UI sends the whole list after each turn;
        a regenerated answer replaces the last one), in one transaction."""
        async with self._db.session() as session:
            await self._owned(session, user_id, conversation_id)
            await session.execute(
                delete(ConversationMessageRow).where(
                    ConversationMessageRow.conversation_id == conversation_id
                )
            )
            session.add_all(_rows(conversation_id, messages))
            await session.execute(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id)
                .values(updated_at=self._clock())
            )
            await session.commit()
        return await self.get(user_id, conversation_id)

    async def delete(self, user_id: str, conversation_id: str) -> None:
        """Delete a conversation and its messages."""
        async with self._db.session() as session:
            await self._owned(session, user_id, conversation_id)
            await session.execute(
                delete(ConversationMessageRow).where(
                    ConversationMessageRow.conversation_id == conversation_id
                )
            )
            await session.execute(
                delete(ConversationRow).where(ConversationRow.id == conversation_id)
            )
            await session.commit()

    @staticmethod
    async def _owned(session: AsyncSession, user_id: str, conversation_id: str) -> ConversationRow:
        row = await session.get(ConversationRow, conversation_id)
        if row is None or row.user_id != user_id:
            msg = f"no conversation {conversation_id!r}"
            raise NotFoundError(msg, param="conversation_id")
        return row


def _rows(conversation_id: str, messages: Sequence[Message]) -> builtins.list[Any]:
    return [
        ConversationMessageRow(
            conversation_id=conversation_id, seq=seq, role=m.role, content=m.content, meta=m.meta
        )
        for seq, m in enumerate(messages)
    ]


def _message(row: ConversationMessageRow) -> Message:
    role: MessageRole = row.role  # type: ignore[assignment]  # written only from MessageRole
    return Message(role=role, content=row.content, meta=row.meta)


def _header(row: ConversationRow) -> Conversation:
    return Conversation(row.id, row.title, row.model, row.created_at, row.updated_at)


def _whole(row: ConversationRow, messages: builtins.list[Message]) -> Conversation:
    return Conversation(
        row.id, row.title, row.model, row.created_at, row.updated_at, tuple(messages)
    )


class CachedConversations:
    """Conversations read through hot state (Redis when configured), so any replica
    serves a user's chat from one shared copy; every write drops the copy after the
    store has it. The store stays the source of truth; lists and searches go to it."""

    def __init__(self, repo: ConversationRepository, hot: HotState, *, ttl_seconds: float) -> None:
        self._repo = repo
        self._hot = hot
        self._ttl = ttl_seconds

    @staticmethod
    def _key(user_id: str, conversation_id: str) -> str:
        return f"conversation:{user_id}:{conversation_id}"

    async def list(
        self, user_id: str, *, query: str | None = None, limit: int = 50
    ) -> builtins.list[Conversation]:
        """The user's conversations, latest first (from the store)."""
        return await self._repo.list(user_id, query=query, limit=limit)

    async def get(self, user_id: str, conversation_id: str) -> Conversation:
        """One of the user's conversations with its messages: the hot copy, or the store's."""
        key = self._key(user_id, conversation_id)
        cached = await self._hot.get(key)
        if cached is not None:
            return _loads(cached)
        conversation = await self._repo.get(user_id, conversation_id)
        await self._hot.set(key, _dumps(conversation), self._ttl)
        return conversation

    async def create(
        self, user_id: str, *, title: str, model: str, messages: Sequence[Message] = ()
    ) -> Conversation:
        """A new conversation (nothing cached until it is read)."""
        return await self._repo.create(user_id, title=title, model=model, messages=messages)

    async def update(
        self, user_id: str, conversation_id: str, *, title: str | None, model: str | None
    ) -> Conversation:
        """Rename or change the model, then drop the hot copy."""
        write = self._repo.update(user_id, conversation_id, title=title, model=model)
        await self._drop_after(write, user_id, conversation_id)
        return await self.get(user_id, conversation_id)

    async def replace_messages(
        self, user_id: str, conversation_id: str, messages: Sequence[Message]
    ) -> Conversation:
        """Set the messages, then drop the hot copy."""
        write = self._repo.replace_messages(user_id, conversation_id, messages)
        await self._drop_after(write, user_id, conversation_id)
        return await self.get(user_id, conversation_id)

    async def delete(self, user_id: str, conversation_id: str) -> None:
        """Delete, then drop the hot copy."""
        write = self._repo.delete(user_id, conversation_id)
        await self._drop_after(write, user_id, conversation_id)

    async def _drop_after(
        self, write: Awaitable[object], user_id: str, conversation_id: str
    ) -> None:
        try:
            await write
        finally:
            # Also after a failed write: it may have committed before failing.
            await self._hot.delete(self._key(user_id, conversation_id))


def _dumps(conversation: Conversation) -> bytes:
    return orjson.dumps(conversation.to_public())


def _loads(raw: bytes) -> Conversation:
    body = orjson.loads(raw)
    return Conversation(
        id=body["id"], title=body["title"], model=body["model"],
        created_at=datetime.fromisoformat(body["created_at"]),
        updated_at=datetime.fromisoformat(body["updated_at"]),
        messages=tuple(Message(m["role"], m["content"], m["meta"]) for m in body["messages"]),
    )  # fmt: skip
