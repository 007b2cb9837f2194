"""Every command and example in the README runs, against a real server."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atrium.core.settings import OpenAICompatModel, load_settings
from atrium.runtime.backends import default_factories
from atrium.runtime.catalog import ModelCatalog
from tests.e2e.conftest import RemoteAtriumServer, poll_until

pytestmark = pytest.mark.e2e

README = Path(__file__).parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_starts_with_the_two_commands() -> None:
    first = _blocks("sh")[0]
    assert first.splitlines()[0].startswith("make run")
    assert first.splitlines()[1].startswith("make test")


def test_the_python_example_runs(server: RemoteAtriumServer, tmp_path: Path) -> None:
    example = _blocks("python")[0]
    example = example.replace('api_key="atr-..."', f'api_key="{server.api_key}"')
    example = example.replace("http://127.0.0.1:8080", server.url_root)
    script = tmp_path / "example.py"
    script.write_text(example)
    run = subprocess.run(  # noqa: PLW1510 - checked below
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    reply, dimensions = run.stdout.rstrip("\n").rsplit("\n", 1)
    assert reply.strip()
    assert dimensions == "384"


def _cli_lines() -> Iterator[list[str]]:
    block = next(b for b in _blocks("sh") if "atrium chat" in b)
    for line in block.splitlines():
        command = line.split("#", 1)[0].strip()
        if command.startswith(".venv/bin/atrium") and " serve" not in command:
            yield shlex.split(command)[1:]


def test_the_cli_examples_run(server: RemoteAtriumServer) -> None:
    created_id = None
    for line in _cli_lines():
        args = line
        if line[:2] == ["keys", "revoke"]:
            assert created_id is not None
            args = ["keys", "revoke", created_id]
        run = server.cli(*args, api_key=server.api_key)
        assert run.returncode == 0, f"{args}: {run.stderr}"
        assert run.stdout.strip(), args
        if args[:2] == ["keys", "create"]:
            created_id = next(k["id"] for k in server.list_keys() if k["name"] == args[2])
            created = next(k for k in server.list_keys() if k["id"] == created_id)
            assert (created["rpm"], created["tpm"], created["allowed_models"]) == (
                60,
                20000,
                ["default"],
            )
    assert created_id is not None
    revoked = next(k for k in server.list_keys() if k["id"] == created_id)
    assert revoked["revoked_at"] is not None


def test_the_settings_example_loads(tmp_path: Path) -> None:
    example = next(b for b in _blocks("yaml") if "openai_compat" in b)
    config = tmp_path / "atrium.yaml"
    config.write_text(example)
    settings = load_settings(config)
    assert set(settings.models) == {"smollm2-135m", "all-minilm-l6-v2", "qwen_7b"}
    remote = settings.models["qwen_7b"]
    assert isinstance(remote, OpenAICompatModel)
    assert remote.api_key is not None


def test_first_start_prints_an_admin_key_that_works(tmp_path: Path) -> None:
    remote = RemoteAtriumServer(tmp_path)
    del remote.env["ATRIUM_AUTH__BOOTSTRAP_KEY"]
    remote.api_key = ""
    remote._start()
    try:
        announced: list[str] = []

        def printed() -> bool:
            found = re.search(r"^\s+(atr-\S+)$", remote.stderr(), flags=re.MULTILINE)
            if found:
                announced.append(found.group(1))
            return bool(found)

        poll_until(printed, timeout=60, what="the first admin key to be printed")
        remote.api_key = announced[0]
        assert remote._wait_ready()
        with remote.get_client() as client:
            assert [m.id for m in client.models.list()][:2] == ["smollm2-135m", "all-minilm-l6-v2"]
    finally:
        remote.stop()
    assert announced[0] not in (tmp_path / "data" / "atrium.db").read_bytes().decode("latin-1")
    restarted = RemoteAtriumServer(tmp_path)
    del restarted.env["ATRIUM_AUTH__BOOTSTRAP_KEY"]
    restarted.api_key = announced[0]
    with restarted:
        assert restarted.stderr().count("Created the first admin API key") == 0


def test_the_routes_example_loads_and_builds(tmp_path: Path) -> None:
    example = next(b for b in _blocks("yaml") if "routes:" in b)
    config = tmp_path / "atrium.yaml"
    config.write_text(example)
    settings = load_settings(config)
    catalog = ModelCatalog.from_settings(settings.models, default_factories(), settings.routes)
    route = settings.routes["qwen"]
    assert [(t.model, t.weight) for t in route.targets] == [("qwen-v1", 80), ("qwen-v2", 20)]
    assert route.fallbacks == ["smollm2-135m"]
    assert catalog.resolve("qwen").name == "qwen"
    replicas = settings.models["qwen-v1"]
    assert isinstance(replicas, OpenAICompatModel)
    assert len(replicas.base_urls) == 2


def test_the_cache_guardrails_and_prices_example_loads(tmp_path: Path) -> None:
    example = next(b for b in _blocks("yaml") if "guardrails:" in b)
    config = tmp_path / "atrium.yaml"
    config.write_text(example)
    settings = load_settings(config)
    assert settings.cache.backend == "redis"
    assert settings.cache.semantic.enabled
    assert settings.guardrails.blocked_terms == ["project falcon"]
    assert settings.prices["qwen-v1"].cost(1_000_000, 1_000_000) == 0.8
    assert settings.limits.models["qwen-v1"].max_parallel == 32


def test_the_workflow_example_runs(server: RemoteAtriumServer) -> None:
    definition = next(b for b in _blocks("yaml") if "nodes:" in b)
    (server.workdir / "large-trade-check.yaml").write_text(definition)
    block = next(b for b in _blocks("sh") if "atrium workflows" in b)
    outputs = []
    for line in block.splitlines():
        args = shlex.split(line)[1:]
        run = server.cli(*args, api_key=server.api_key)
        assert run.returncode == 0, f"{args}: {run.stdout}{run.stderr}"
        outputs.append(run.stdout)
    ran = outputs[2]
    assert "succeeded" in ran
    assert '"large": true' in ran
    assert "name: large-trade-check" in outputs[4]


def test_the_releases_example_loads(tmp_path: Path) -> None:
    from atrium.releases.system import gate_runner, parse_policies, parse_watchers

    example = next(b for b in _blocks("yaml") if "releases:" in b)
    config = tmp_path / "atrium.yaml"
    config.write_text(example)
    settings = load_settings(config)
    policy = parse_policies(settings.releases.policies)["smollm2"]
    assert policy.public_name == "smol"
    assert policy.canary.weights() == [5, 25, 50, 100]
    assert [w.name for w in parse_watchers(settings.releases)] == ["drops"]
    assert gate_runner(settings.releases) is not None  # the suite's datasets load
