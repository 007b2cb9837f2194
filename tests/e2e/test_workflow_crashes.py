"""Crashes mid-run: SIGKILL the process running a workflow, and the run still finishes.

Each block is a real HTTP call to a ledger server in this test. The ledger records every
request and, keyed by the ``Idempotency-Key`` the HTTP block sends (``<run>:<node>``,
the same on every replay), applies each side effect once. After the crash:

- the run ends ``succeeded`` with the right outputs (a block matched to another block's
  recorded result would change them);
- every completed block's output is reused: no key is requested again, except blocks in
  flight when the process died (one block of a chain; the blocks of one superstep of
  parallel branches): their request may be repeated once, and the ledger drops the repeat
  by its key;
- every side effect happened exactly once.

Two ways to crash: the single embedded process (SQLite) killed and restarted on the same
data directory, and one of two workers sharing PostgreSQL killed while the other takes
its run over.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import pytest

from tests.e2e.conftest import RemoteAtriumServer, poll_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DELAY_S = 0.25
PG = "postgresql://postgres@127.0.0.1:5432"


class Ledger(ThreadingHTTPServer):
    """Records requests; applies each idempotency key's effect once."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _LedgerHandler)
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.effects: dict[str, dict[str, Any]] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def effect_count(self) -> int:
        with self.lock:
            return len(self.effects)


class _LedgerHandler(BaseHTTPRequestHandler):
    server: Ledger
    protocol_version: ClassVar[str] = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        key = self.headers["idempotency-key"]
        amount = int(self.path.rsplit("/", 1)[1])
        with self.server.lock:
            self.server.requests.append(key)
        time.sleep(DELAY_S)
        with self.server.lock:
            answer = self.server.effects.setdefault(key, {"x": body["x"] + amount})
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    server = Ledger()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _call(node_id: str, url: str) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "http_request",
        "config": {
            "method": "POST",
            "url": url,
            "headers": {"content-type": "application/json"},
            "body": '{"x": {{ data.x }}}',
            "expect_json": True,
        },
    }


def chain_workflow(ledger: Ledger, length: int) -> dict[str, Any]:
    nodes = [{"id": "start", "type": "start"}]
    edges = []
    previous, port = "start", "seed"
    for i in range(length):
        nodes.append(_call(f"h{i}", f"{ledger.url}/add/1"))
        edges.append(
            {"source": previous, "source_handle": port, "target": f"h{i}", "target_handle": "data"}
        )
        previous, port = f"h{i}", "json"
    return {
        "name": "crash-chain",
        "inputs": {"seed": {"type": "object"}},
        "nodes": nodes,
        "edges": edges,
        "outputs": {"result": {"source": f"{previous}.json"}},
    }


def fanout_workflow(ledger: Ledger, branches: int, depth: int) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "start"}]
    edges = []
    outputs = {}
    for b in range(branches):
        previous, port = "start", "seed"
        for d in range(depth):
            node_id = f"b{b}_{d}"
            nodes.append(_call(node_id, f"{ledger.url}/add/{b + 1}"))
            edges.append(
                {
                    "source": previous,
                    "source_handle": port,
                    "target": node_id,
                    "target_handle": "data",
                }
            )
            previous, port = node_id, "json"
        outputs[f"r{b}"] = {"source": f"{previous}.json"}
    return {
        "name": "crash-fanout",
        "inputs": {"seed": {"type": "object"}},
        "nodes": nodes,
        "edges": edges,
        "outputs": outputs,
    }


def _config(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    workflows = {"allowed_hosts": ["127.0.0.1"], **(extra or {})}
    return {"workflows": workflows}


def _publish_and_start(server: RemoteAtriumServer, definition: dict[str, Any]) -> str:
    with server.http() as http:
        assert http.post("/v1/workflows", json=definition).status_code == 201
        assert http.post(f"/v1/workflows/{definition['name']}/publish", json={}).status_code == 201
        started = http.post(
            f"/v1/workflows/{definition['name']}/runs",
            json={"inputs": {"seed": {"x": 0}}, "mode": "async"},
        )
    assert started.status_code == 202, started.text
    run_id: str = started.json()["id"]
    return run_id


def _finished_run(server: RemoteAtriumServer, run_id: str, within: float) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def ended() -> bool:
        with server.http() as http:
            found.update(http.get(f"/v1/workflows/runs/{run_id}").json())
        return found.get("status") in ("succeeded", "failed", "cancelled")

    poll_until(ended, timeout=within, what=f"run {run_id} to end on {server.url_root}")
    return found


def _check_ledger(ledger: Ledger, run_id: str, blocks: int, superstep: Any) -> None:
    """``superstep(node)`` names the superstep a node runs in: blocks of one superstep run
    at once, so all of them may be in flight at the crash, and no others."""
    requests = Counter(key for key in ledger.requests if key.startswith(run_id + ":"))
    assert len(ledger.effects) == blocks, "every block's side effect happened exactly once"
    assert set(requests) == set(ledger.effects)
    repeated = [key.split(":", 1)[1] for key, count in requests.items() if count > 1]
    # Only blocks in flight at the crash are asked again (once, with their idempotency
    # key): blocks that had finished are never run again.
    assert all(count <= 2 for count in requests.values()), requests
    assert len({superstep(node) for node in repeated}) <= 1, repeated


def test_the_embedded_process_restarted_mid_run_finishes_it(tmp_path: Path, ledger: Ledger) -> None:
    config = _config()
    first = RemoteAtriumServer(tmp_path, config=config)
    with first:
        run_id = _publish_and_start(first, chain_workflow(ledger, 10))
        poll_until(lambda: ledger.effect_count() >= 4, timeout=60, what="four blocks done")
        first.process.kill()
        first.process.wait(10)
    done_at_crash = ledger.effect_count()
    assert done_at_crash < 10
    with RemoteAtriumServer(tmp_path, config=config) as second:
        run = _finished_run(second, run_id, within=90)
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"result": {"x": 10}}
    _check_ledger(ledger, run_id, blocks=10, superstep=lambda node: node)


@pytest.fixture
def shared_postgres() -> Iterator[str]:
    name = f"atrium_crash_{secrets.token_hex(5)}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(f"{PG}/postgres")
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_a_killed_worker_run_finishes_on_the_other_one(
    tmp_path: Path, ledger: Ledger, shared_postgres: str
) -> None:
    # Parallel branches: a step matched to the wrong branch's result would change r0..r4.
    config = {
        "store": {"url": shared_postgres},
        **_config({"heartbeat_seconds": 0.5, "takeover_after_seconds": 3}),
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    worker_a = RemoteAtriumServer(tmp_path / "a", config=config)
    with worker_a, RemoteAtriumServer(tmp_path / "b", config=config) as worker_b:
        run_id = _publish_and_start(worker_a, fanout_workflow(ledger, branches=5, depth=3))
        poll_until(lambda: ledger.effect_count() >= 6, timeout=60, what="six blocks done")
        worker_a.process.kill()
        worker_a.process.wait(10)
        assert ledger.effect_count() < 15
        run = _finished_run(worker_b, run_id, within=90)
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {f"r{b}": {"x": 3 * (b + 1)} for b in range(5)}
    _check_ledger(ledger, run_id, blocks=15, superstep=lambda node: node.rsplit("_", 1)[1])


def test_an_approval_waits_across_a_restart(tmp_path: Path, ledger: Ledger) -> None:
    definition = {
        "name": "approve-then-call",
        "inputs": {"seed": {"type": "object"}},
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "gate", "type": "approval", "config": {"message": "Call the ledger?"}},
            _call("call", f"{ledger.url}/add/5"),
        ],
        "edges": [
            {"source": "start", "source_handle": "done", "target": "gate"},
            {"source": "gate", "source_handle": "approved", "target": "call"},
            {"source": "start", "source_handle": "seed", "target": "call", "target_handle": "data"},
        ],
        "outputs": {"result": {"source": "call.json"}},
    }
    config = _config()
    first = RemoteAtriumServer(tmp_path, config=config)
    with first:
        run_id = _publish_and_start(first, definition)

        def waiting() -> bool:
            with first.http() as http:
                return bool(http.get(f"/v1/workflows/runs/{run_id}").json()["status"] == "waiting")

        poll_until(waiting, timeout=30, what="the run to wait for approval")
        first.process.kill()
        first.process.wait(10)
    with RemoteAtriumServer(tmp_path, config=config) as second:
        poll_until(
            lambda: _status(second, run_id) == "waiting", timeout=60, what="the run to wait again"
        )
        with second.http() as http:
            decided = http.post(
                f"/v1/workflows/runs/{run_id}/approvals/gate", json={"approved": True}
            )
        assert decided.status_code == 202, decided.text
        run = _finished_run(second, run_id, within=60)
    assert run["status"] == "succeeded", run
    assert run["outputs"] == {"result": {"x": 5}}
    assert len(ledger.effects) == 1


def _status(server: RemoteAtriumServer, run_id: str) -> str:
    with server.http() as http:
        return str(http.get(f"/v1/workflows/runs/{run_id}").json()["status"])
