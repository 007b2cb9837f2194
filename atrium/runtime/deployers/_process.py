"""Replica processes: started in their own process group, probed, stopped for good."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import httpx


def free_port(taken: set[int]) -> int:
    """A loopback port nothing listens on now (and none of ``taken``)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port


async def launch(command: list[str], log_path: Path) -> asyncio.subprocess.Process:
    """Start ``command`` in a new session (its own process group), output to a file.

    A file, not a pipe: nobody reads a pipe while the server runs, and a full
    one would block the model's load log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )


def signal_group(process: asyncio.subprocess.Process, signum: signal.Signals) -> None:
    """Signal the process's whole group (it leads it); gone already is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


async def terminate(process: asyncio.subprocess.Process, grace_seconds: float) -> int:
    """SIGTERM the group, SIGKILL it after the grace period; the exit code."""
    if process.returncode is None:
        signal_group(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace_seconds)
        except TimeoutError:
            signal_group(process, signal.SIGKILL)
    code = await process.wait()
    signal_group(process, signal.SIGKILL)  # anything the server left in its group
    return code


async def answers(client: httpx.AsyncClient, url: str, seconds: float) -> bool:
    """Whether ``GET url`` answers 200 in time."""
    try:
        response = await client.get(url, timeout=seconds)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def exited_within(process: asyncio.subprocess.Process, seconds: float) -> bool:
    """Wait up to ``seconds`` for the process to exit; whether it did."""
    try:
        await asyncio.wait_for(process.wait(), seconds)
    except TimeoutError:
        return False
    return True


def log_tail(path: Path, chars: int = 1500) -> str:
    """The end of a replica's log, for error messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
