"""``atrium events ...``: the event bus's streams, dead letters and replay from the shell.

Every command talks to a running server (``--url`` / ``ATRIUM_URL``) with an admin API
key (``--api-key`` / ``ATRIUM_API_KEY``). Failures print one ``error:`` line on stderr
and exit with code 1.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from atrium._cli import ApiKeyOption, ConfigOption, UrlOption, connected, out, print_table
from atrium.api_client import ApiClient

__all__ = ["events_app"]

events_app = typer.Typer(
    help="Event bus: streams, consumer groups, dead letters, replay.", no_args_is_help=True
)

LetterArgument = Annotated[str, typer.Argument(help="The dead letter's id.")]


class EventsClient(ApiClient):
    """``/v1/admin/events``."""

    prefix = "/v1/admin/events"


@events_app.command("streams")
def streams(
    api_key: ApiKeyOption = None, url: UrlOption = None, config: ConfigOption = None
) -> None:
    """Every stream with its length, and each consumer group's pending count and lag."""
    with connected(EventsClient, api_key, url, config) as client:
        data = client.call("GET", "streams")["data"]
    table = Table("topic", "length", "group", "consumers", "pending", "lag")
    for stream in data:
        groups = stream["groups"] or [None]
        for group in groups:
            table.add_row(
                escape(stream["topic"]),
                str(stream["length"]),
                *(_group_cells(group) if group else ["-", "-", "-", "-"]),
            )
    print_table(table)


def _group_cells(group: dict[str, Any]) -> list[str]:
    lag = "?" if group["lag"] is None else str(group["lag"])
    return [escape(group["name"]), str(group["consumers"]), str(group["pending"]), lag]


@events_app.command("dead-letters")
def dead_letters(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Events a consumer group gave up on, with why."""
    with connected(EventsClient, api_key, url, config) as client:
        data = client.call("GET", "dead-letters", params={"limit": limit})["data"]
    if as_json:
        for letter in data:
            out.print(json.dumps(letter), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table("id", "topic", "group", "attempts", "failed at", "reason")
    for letter in data:
        when = datetime.fromisoformat(letter["failed_at"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            letter["id"], escape(letter["topic"]), escape(letter["group"]),
            str(letter["attempts"]), when, escape(letter["reason"]),
        )  # fmt: skip
    print_table(table)


@events_app.command("retry")
def retry(
    letter_id: LetterArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Deliver a dead letter again to the group that gave up on it."""
    with connected(EventsClient, api_key, url, config) as client:
        answer = client.call("POST", "dead-letters", letter_id, "retry")
    out.print(f"retried {letter_id} as entry {answer['entry_id']}", markup=False)


@events_app.command("delete")
def delete(
    letter_id: LetterArgument,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Drop a dead letter."""
    with connected(EventsClient, api_key, url, config) as client:
        client.call("DELETE", "dead-letters", letter_id)
    out.print(f"deleted {letter_id}", markup=False)


@events_app.command("replay")
def replay(
    topic: Annotated[str, typer.Argument(help="The event type, e.g. request.completed.")],
    group: Annotated[str, typer.Argument(help="The consumer group (created when new).")],
    from_id: Annotated[
        str | None, typer.Option("--from", help="Entry id to replay after (0: all retained).")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Replay what was published from this time on.")
    ] = None,
    api_key: ApiKeyOption = None,
    url: UrlOption = None,
    config: ConfigOption = None,
) -> None:
    """Deliver a stream's retained events to a group again, from an offset or a time."""
    body: dict[str, Any] = {"topic": topic, "group": group, "from_id": from_id}
    body["since"] = None if since is None else since.isoformat()
    with connected(EventsClient, api_key, url, config) as client:
        answer = client.call("POST", "replay", json=body)
    out.print(f"group {group} of {topic} replays after {answer['from_id']}", markup=False)
