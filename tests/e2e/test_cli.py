"""The ``atrium`` command line as a user runs it, against a running server and its store."""

from __future__ import annotations

import socket
import subprocess
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import RemoteAtriumServer, WaitUntil

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server_env() -> dict[str, str]:
    """No key cache in the server.

    ``atrium keys revoke`` writes to the store directly, so it cannot drop the key
    from the server's in-process cache the way the admin API does; with the default
    5 s TTL a revoked key would keep working for up to 5 s. TTL 0 makes the server
    read the store on every request, so the test sees the revocation at once
    without sleeping.
    """
    return {"ATRIUM_AUTH__CACHE_TTL_SECONDS": "0"}


def atrium(
    server: RemoteAtriumServer, *args: str, api_key: str | None = None, url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``atrium ARGS`` against ``server`` and its store."""
    return server.cli(*args, api_key=api_key, url=url)


def unused_url() -> str:
    """A loopback URL where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def assert_readable_failure(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 1 with an ``error:`` line on stderr that says what went wrong; no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def created_secret(result: subprocess.CompletedProcess[str]) -> str:
    """The secret ``atrium keys create`` printed (its last line)."""
    assert result.returncode == 0, result.stderr
    secret = result.stdout.strip().splitlines()[-1]
    assert secret.startswith("atr-")
    return secret


def key_record(server: RemoteAtriumServer, name: str) -> dict[str, object]:
    """The admin API's record of the key named ``name``."""
    matches = [k for k in server.list_keys() if k["name"] == name]
    assert len(matches) == 1, matches
    return matches[0]


def embed_status(server: RemoteAtriumServer, secret: str) -> int:
    """The status of one small embeddings request with ``secret``."""
    with server.http(secret) as http:
        body = {"model": "default-embedding", "input": "hi"}
        return http.post("/v1/embeddings", json=body).status_code


# -- chat and models ------------------------------------------------------------------------


def test_chat_prints_the_answer(server: RemoteAtriumServer) -> None:
    result = atrium(server, "chat", "Say hi", "--max-tokens", "8", api_key=server.api_key)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "Traceback" not in result.stderr


def test_chat_with_a_wrong_key_fails_readably(server: RemoteAtriumServer) -> None:
    result = atrium(
        server, "chat", "Say hi", "--max-tokens", "8", api_key="atr-wrong-key-000000000000"
    )

    assert_readable_failure(result, "401", "Incorrect API key")
    assert not result.stdout.strip()


def test_chat_without_a_key_fails_readably(server: RemoteAtriumServer) -> None:
    result = atrium(server, "chat", "Say hi", "--max-tokens", "8")

    assert_readable_failure(result, "API key")


def test_chat_with_an_unknown_model_fails_readably(server: RemoteAtriumServer) -> None:
    result = atrium(
        server, "chat", "Say hi", "--model", "nope", "--max-tokens", "8", api_key=server.api_key
    )

    assert_readable_failure(result, "404", "nope")


def test_chat_with_no_server_fails_readably(server: RemoteAtriumServer) -> None:
    nobody = unused_url()

    result = atrium(server, "chat", "Say hi", "--max-tokens", "8", api_key="x", url=nobody)

    assert_readable_failure(result, "cannot reach Atrium")


def test_models_list(server: RemoteAtriumServer) -> None:
    result = atrium(server, "models", "list", api_key=server.api_key)

    assert result.returncode == 0, result.stderr
    for name in ("smollm2-135m", "default", "all-minilm-l6-v2", "default-embedding"):
        assert name in result.stdout


def test_models_list_with_a_wrong_key_fails_readably(server: RemoteAtriumServer) -> None:
    result = atrium(server, "models", "list", api_key="atr-wrong-key-000000000000")

    assert_readable_failure(result, "401")


# -- keys, on the server's own store --------------------------------------------------------


def test_key_created_by_the_cli_works_until_revoked(server: RemoteAtriumServer) -> None:
    secret = created_secret(atrium(server, "keys", "create", "k1", "--rpm", "5"))
    record = key_record(server, "k1")

    assert record["rpm"] == 5
    assert record["scopes"] == ["inference"]
    assert embed_status(server, secret) == 200

    revoked = atrium(server, "keys", "revoke", str(record["id"]))

    assert revoked.returncode == 0, revoked.stderr
    assert str(record["id"]) in revoked.stdout
    assert embed_status(server, secret) == 401
    listing = atrium(server, "keys", "list")
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if " k1 " in line)
    assert "revoked" in row


def test_rpm_set_by_the_cli_is_enforced(server: RemoteAtriumServer) -> None:
    secret = created_secret(atrium(server, "keys", "create", "k2", "--rpm", "5"))

    statuses = [embed_status(server, secret) for _ in range(6)]

    assert statuses == [200] * 5 + [429]


def test_keys_list_never_shows_secrets(server: RemoteAtriumServer) -> None:
    secret = created_secret(atrium(server, "keys", "create", "k3"))

    listing = atrium(server, "keys", "list")

    assert listing.returncode == 0, listing.stderr
    assert secret not in listing.stdout
    assert server.api_key not in listing.stdout
    assert " k3 " in listing.stdout


def test_keys_list_shows_ids_that_keys_revoke_accepts(server: RemoteAtriumServer) -> None:
    # `atrium keys revoke` takes "the key's id (from `atrium keys list`)": the list
    # must show each id whole, even in an 80-column terminal or a pipe.
    created_secret(atrium(server, "keys", "create", "k4"))
    record = key_record(server, "k4")

    listing = atrium(server, "keys", "list")

    assert listing.returncode == 0, listing.stderr
    assert str(record["id"]) in listing.stdout, listing.stdout


def test_revoking_an_unknown_key_fails_readably(server: RemoteAtriumServer) -> None:
    result = atrium(server, "keys", "revoke", "nonexistent")

    assert_readable_failure(result, "nonexistent")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["keys", "create", ""], "name must not be empty"),
        (["keys", "create", "k5", "--expires", "2020-01-01T00:00:00"], "in the future"),
    ],
    ids=["empty-name", "expired"],
)
def test_bad_key_values_fail_readably(
    server: RemoteAtriumServer, args: list[str], fragment: str
) -> None:
    before = server.list_keys()

    result = atrium(server, *args)

    assert_readable_failure(result, fragment)
    assert server.list_keys() == before


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["keys", "create", "k6", "--rpm", "0"], "--rpm"),
        (["keys", "create", "k6", "--scope", "superuser"], "--scope"),
        (["chat", "Say hi", "--max-tokens", "0"], "--max-tokens"),
    ],
    ids=["rpm-0", "unknown-scope", "max-tokens-0"],
)
def test_bad_options_are_usage_errors(
    server: RemoteAtriumServer, args: list[str], option: str
) -> None:
    before = server.list_keys()

    result = atrium(server, *args, api_key=server.api_key)

    assert result.returncode == 2, (result.stdout, result.stderr)  # click's usage-error code
    assert "Traceback" not in result.stderr
    assert option in result.stderr
    assert server.list_keys() == before


def test_the_server_still_serves_after_the_cli(server: RemoteAtriumServer) -> None:
    with httpx.Client(timeout=30) as http:
        assert http.get(server.url_for("readyz")).status_code == 200


def test_teams_and_usage_from_the_command_line(
    server: RemoteAtriumServer, wait_until: WaitUntil
) -> None:
    made = atrium(server, "teams", "create", "desk", "--rpm", "50", "--parallel", "3")
    assert made.returncode == 0, made.stderr
    assert "created team desk" in made.stdout
    again = atrium(server, "teams", "create", "desk")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert "Traceback" not in again.stderr
    listing = atrium(server, "teams", "list")
    assert " desk " in listing.stdout
    secret = created_secret(atrium(server, "keys", "create", "trader", "--team", "desk"))
    missing = atrium(server, "keys", "create", "ghost", "--team", "nowhere")
    assert missing.returncode == 1
    assert "no team 'nowhere'" in missing.stderr
    assert embed_status(server, secret) == 200

    def counted() -> bool:
        report = atrium(server, "usage", "--by", "team")
        return report.returncode == 0 and " desk " in report.stdout

    wait_until(counted, timeout=15, what="the usage report to count the request")
    by_model = atrium(server, "usage", "--by", "model")
    assert "all-minilm-l6-v2" in by_model.stdout
