"""Rows of a SQL query as documents (PostgreSQL through asyncpg, SQLite through aiosqlite).

Reading is read-only three times over: the spec accepts one SELECT or WITH statement
only; PostgreSQL runs it in a ``READ ONLY`` transaction of a session whose default is
read-only, SQLite opens the file with ``mode=ro`` and ``query_only``. Still, give the
connector a database role that may only read what it should index. Rows are streamed
(a server-side cursor on PostgreSQL), so a table of millions is never held at once.
"""

from __future__ import annotations

import re
import socket
import sqlite3
from typing import Any, Final, Literal
from urllib.parse import quote

import asyncpg  # type: ignore[import-untyped]
from pydantic import Field, field_validator, model_validator
from sqlalchemy import URL, NullPool, RowMapping, make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncMappingResult,
    create_async_engine,
)

from atrium.core.netguard import BlockedDestinationError, resolve_and_vet
from atrium.rag.connectors._patterns import Template, validate_template
from atrium.rag.connectors.base import (
    ConnectorContext,
    ConnectorError,
    DocumentFailure,
    Documents,
    SourceSpecBase,
    as_text,
    make_document,
    parse_timestamp,
    read_secret,
    resolve_local,
    safe_filename,
    scrub,
    to_scalar,
)
from atrium.rag.types import Scalar, SourceDocument

_ROWS_PER_FETCH: Final = 500
_DOLLAR_QUOTE: Final = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_FIRST_WORD: Final = re.compile(r"[\s(]*([A-Za-z]+)")
_DRIVER_CLASS: Final = re.compile(r"^<class '[^']+'>:\s*")
# SQLAlchemy wraps most driver errors, but not all of those raised while a server-side
# cursor fetches, so the drivers' own base classes are caught as well.
_DATABASE_ERRORS: Final = (
    SQLAlchemyError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
    OSError,
)


class SqlSource(SourceSpecBase):
    """The rows a query returns, one document per row, its text from a template."""

    kind: Literal["sql"] = Field("sql", description="Source kind: rows of a SQL query.")
    url: str | None = Field(
        None,
        description=(
            "Database URL without a password, e.g. postgresql://reader@db.internal/app or "
            "sqlite:///relative/to/data_dir.db. Exactly one of url and url_secret is set."
        ),
    )
    url_secret: str | None = Field(
        None, description="Name of the secret holding the database URL (with its password)."
    )
    query: str = Field(
        min_length=1, description="One SELECT (or WITH ... SELECT) statement; nothing else."
    )
    id_column: str = Field(description="Column whose value identifies a row across syncs.")
    template: str = Field(
        description=(
            "The document's text, with {column} placeholders, e.g. '{title}\\n\\n{body}'. "
            "Only plain column names; write {{ and }} for literal braces."
        )
    )
    title_column: str | None = Field(None, description="Column holding the document title.")
    updated_column: str | None = Field(
        None, description="Column holding when the row last changed (timestamp or ISO text)."
    )
    metadata_columns: tuple[str, ...] = Field(
        (), description="Columns copied into the document's metadata, by column name."
    )
    connect_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="How long connecting to the database may take."
    )

    @field_validator("query")
    @classmethod
    def _read_only(cls, query: str) -> str:
        return check_read_only(query)

    @field_validator("template")
    @classmethod
    def _template_parses(cls, template: str) -> str:
        return validate_template(template)

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url is not None and _parse(url).password:
            msg = "keep a URL with a password in a secret and name it in url_secret"
            raise ValueError(msg)
        return url

    @model_validator(mode="after")
    def _one_url(self) -> SqlSource:
        if (self.url is None) == (self.url_secret is None):
            msg = "set exactly one of url and url_secret"
            raise ValueError(msg)
        return self

    def build(self, context: ConnectorContext) -> SqlConnector:
        """A connector running this query (the URL is read and checked on each sync)."""
        return SqlConnector(self, context)


def check_read_only(query: str) -> str:
    """``query`` if it is a single SELECT or WITH statement; otherwise a ``ValueError``."""
    code = _code_only(query).strip().rstrip(";").strip()
    if ";" in code:
        msg = "the query must be a single statement"
        raise ValueError(msg)
    first = _FIRST_WORD.match(code)
    if first is None or first.group(1).lower() not in {"select", "with"}:
        msg = "the query must be a SELECT (or WITH ... SELECT) statement"
        raise ValueError(msg)
    return query


class SqlConnector:
    """Streams the rows of a :class:`SqlSource` query as documents."""

    def __init__(self, spec: SqlSource, context: ConnectorContext) -> None:
        self._spec = spec
        self._context = context
        self._template = Template.parse(spec.template)

    async def documents(self) -> Documents:
        """One document per row, in the query's order."""
        name = self._spec.url_secret
        raw = self._spec.url if name is None else await read_secret(self._context.secrets, name)
        url = await self._checked_url(raw or "")
        engine = self._engine(url)
        try:
            conn = await self._connect(engine, url)
            try:
                rows = await self._start(conn, url)
                async for document in self._read(rows, url):
                    yield document
            finally:
                await conn.close()
        finally:
            await engine.dispose()

    async def _connect(self, engine: AsyncEngine, url: URL) -> AsyncConnection:
        try:
            return await engine.connect()
        except _DATABASE_ERRORS as exc:
            raise _failure(f"cannot connect to the database at {_shown(url)}", exc, url) from None

    async def _read(self, rows: AsyncMappingResult, url: URL) -> Documents:
        seen: set[str] = set()
        ordinal = 0
        while True:
            try:
                row = await anext(rows)
            except StopAsyncIteration:
                return
            except _DATABASE_ERRORS as exc:
                raise _failure(f"reading rows from {_shown(url)} failed", exc, url) from None
            ordinal += 1
            yield self._document(row, ordinal, seen)

    async def _checked_url(self, raw: str) -> URL:
        try:
            url = _parse(raw)
        except ValueError:
            msg = "the database URL is not valid (expected e.g. postgresql://user@host/db)"
            raise ConnectorError(msg) from None
        backend = url.get_backend_name()
        if backend == "postgresql":
            await self._vet_host(url)
            return url.set(drivername="postgresql+asyncpg")
        if backend == "sqlite" and url.database not in (None, "", ":memory:"):
            path = resolve_local(str(url.database), self._context)
            query = {"mode": "ro", "uri": "true"}
            # A URI filename: '?', '#' and '%' in the path must be escaped.
            database = f"file:{quote(str(path))}"
            return URL.create("sqlite+aiosqlite", database=database, query=query)
        msg = f"{url.render_as_string(hide_password=True)} is not a PostgreSQL or SQLite file URL"
        raise ConnectorError(msg)

    async def _vet_host(self, url: URL) -> None:
        shown = url.render_as_string(hide_password=True)
        if not url.host or {"host", "hostaddr", "port"} & set(url.query):
            # Hosts in the query string (several, or a Unix socket) would skip the check.
            msg = f"{shown} must name exactly one host, as user@host:port/database"
            raise ConnectorError(msg)
        try:
            await resolve_and_vet(url.host, url.port or 5432, self._context.policy)
        except BlockedDestinationError as exc:
            raise ConnectorError(f"cannot connect to the database at {shown}: {exc}") from None
        except socket.gaierror as exc:
            msg = f"cannot connect to the database at {shown}: cannot resolve {url.host}"
            raise ConnectorError(f"{msg} ({exc.strerror})") from None

    def _engine(self, url: URL) -> AsyncEngine:
        timeout = self._spec.connect_timeout_seconds
        connect_args: dict[str, Any] = {"timeout": timeout}
        if url.get_backend_name() == "postgresql":
            settings = {"application_name": "atrium-connector"}
            connect_args["server_settings"] = settings | {"default_transaction_read_only": "on"}
        return create_async_engine(url, poolclass=NullPool, connect_args=connect_args)

    async def _start(self, conn: AsyncConnection, url: URL) -> AsyncMappingResult:
        # Colons escaped: text() would take ':name' (even inside a string) for a parameter.
        statement = text(self._spec.query.replace(":", "\\:"))
        try:
            if conn.dialect.name == "postgresql":
                await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            else:
                await conn.exec_driver_sql("PRAGMA query_only = ON")
            result = await conn.stream(statement, execution_options={"yield_per": _ROWS_PER_FETCH})
        except _DATABASE_ERRORS as exc:
            raise _failure(f"the query failed on {_shown(url)}", exc, url) from None
        self._check_columns(list(result.keys()), _shown(url))
        return result.mappings()

    def _check_columns(self, columns: list[str], shown: str) -> None:
        spec = self._spec
        named = dict.fromkeys(self._template.fields, "template")
        named |= dict.fromkeys(spec.metadata_columns, "metadata_columns")
        named[spec.id_column] = "id_column"
        if spec.title_column is not None:
            named[spec.title_column] = "title_column"
        if spec.updated_column is not None:
            named[spec.updated_column] = "updated_column"
        missing = [f"{c!r} (in {field})" for c, field in named.items() if c not in columns]
        if missing:
            listed = ", ".join(missing)
            msg = f"the query on {shown} returns no column {listed}; it returns {columns}"
            raise ConnectorError(msg)

    def _document(
        self, row: RowMapping, ordinal: int, seen: set[str]
    ) -> SourceDocument | DocumentFailure:
        spec = self._spec
        raw_id = row[spec.id_column]
        if raw_id is None:
            return DocumentFailure(f"row {ordinal}", f"{spec.id_column} is NULL")
        key = as_text(raw_id)
        if key in seen:
            return DocumentFailure(key, f"another row has the same {spec.id_column}")
        seen.add(key)
        title = row[spec.title_column] if spec.title_column else None
        metadata: dict[str, Scalar] = {}
        for column in spec.metadata_columns:
            value = to_scalar(row[column])
            if value is not None:
                metadata[column] = value
        return make_document(
            key,
            self._template.render(row).encode(),
            safe_filename(key),
            media_type="text/plain",
            title=as_text(title) if title is not None else None,
            updated_at=parse_timestamp(row[spec.updated_column]) if spec.updated_column else None,
            metadata=metadata,
        )


def _shown(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _parse(raw: str) -> URL:
    # SQLAlchemy dropped the 'postgres' alias; Heroku-style URLs still use it.
    if raw.startswith("postgres://"):
        raw = "postgresql://" + raw.removeprefix("postgres://")
    try:
        return make_url(raw)
    except ArgumentError as exc:
        raise ValueError(str(exc)) from None


def _reason(exc: BaseException, password: str | None) -> str:
    original = getattr(exc, "orig", None) or exc
    message = _DRIVER_CLASS.sub("", str(original)).split("\n[SQL:", 1)[0].strip()
    return scrub(message or type(original).__name__, [password])


def _failure(prefix: str, exc: BaseException, url: URL) -> ConnectorError:
    if isinstance(exc, TimeoutError):
        return ConnectorError(f"{prefix}: timed out")
    return ConnectorError(f"{prefix}: {_reason(exc, url.password)}")


def _code_only(sql: str) -> str:
    """``sql`` with comments and quoted text blanked out, so ';' and keywords show."""
    out: list[str] = []
    index = 0
    while index < len(sql):
        end = _skip_quoted(sql, index)
        if end == index:
            out.append(sql[index])
            index += 1
        else:
            out.append(" ")
            index = end
    return "".join(out)


def _skip_quoted(sql: str, index: int) -> int:
    """Where the comment or quoted text starting at ``index`` ends (``index``: none)."""
    if sql.startswith("--", index):
        end = sql.find("\n", index)
        return len(sql) if end == -1 else end
    if sql.startswith("/*", index):
        return _skip_block_comment(sql, index)
    char = sql[index]
    if char in "'\"":
        escapes = char == "'" and index > 0 and sql[index - 1] in "eE"
        return _skip_string(sql, index, char, backslash_escapes=escapes)
    if char == "$" and (index == 0 or not (sql[index - 1].isalnum() or sql[index - 1] in "_$")):
        tag = _DOLLAR_QUOTE.match(sql, index)
        if tag is not None:
            end = sql.find(tag.group(0), tag.end())
            if end == -1:
                raise ValueError("the query has an unterminated dollar-quoted string")
            return end + len(tag.group(0))
    return index


def _skip_block_comment(sql: str, index: int) -> int:
    depth, position = 0, index
    while position < len(sql):
        if sql.startswith("/*", position):
            depth, position = depth + 1, position + 2
        elif sql.startswith("*/", position):
            depth, position = depth - 1, position + 2
            if depth == 0:
                return position
        else:
            position += 1
    raise ValueError("the query has an unterminated /* comment")


def _skip_string(sql: str, index: int, quote: str, *, backslash_escapes: bool) -> int:
    position = index + 1
    while position < len(sql):
        char = sql[position]
        if (backslash_escapes and char == "\\") or sql.startswith(quote * 2, position):
            position += 2
        elif char == quote:
            return position + 1
        else:
            position += 1
    raise ValueError("the query has an unterminated quoted string")
