"""A real S3 API on loopback for the object-store tests: moto's server, in its own venv.

moto is S3's standard fake (s3fs and obstore test against it). It cannot live in Atrium's
virtualenv: it needs botocore, which pins ``python-dateutil<3`` while the Kubernetes client
needs ``>=3``. So it gets a venv of its own, made once from PyPI with pinned versions
under ``$XDG_CACHE_HOME/atrium-test`` (``~/.cache``), and is started as a
subprocess on a free port. Authentication is on: every request after the setup
(:data:`_SETUP` makes an IAM user with an access key allowed ``s3:*``) must be signed
with that key, so a wrong secret is refused as S3 refuses it.

A venv that cannot be made (no network) fails the test loudly; it never skips.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import subprocess
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MOTO_REQUIREMENTS = ("moto[s3]==5.2.5", "flask==3.1.3", "flask-cors==6.0.5")
REGION = "us-east-1"
#: Requests moto serves without a signature: the three IAM calls of the setup.
_UNSIGNED_SETUP_CALLS = 3
_SETUP = """
import json, sys
import boto3
url, buckets = sys.argv[1], sys.argv[2:]
anonymous = dict(aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", **anonymous)
iam.create_user(UserName="atrium")
key = iam.create_access_key(UserName="atrium")["AccessKey"]
policy = {"Version": "2012-10-17",
          "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
iam.put_user_policy(UserName="atrium", PolicyName="s3", PolicyDocument=json.dumps(policy))
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id=key["AccessKeyId"],
                  aws_secret_access_key=key["SecretAccessKey"])
for bucket in buckets:
    s3.create_bucket(Bucket=bucket)
print(json.dumps({"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}))
"""


@dataclass(frozen=True)
class MotoS3:
    """A running moto S3 server and the credentials it accepts."""

    endpoint: str
    access_key_id: str
    secret_access_key: str

    def options(self, **overrides: object) -> dict[str, object]:
        """obstore S3 options for this server (``overrides`` replace or add keys)."""
        base: dict[str, object] = {
            "endpoint": self.endpoint,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "region": REGION,
        }
        return {**base, **overrides}


def moto_python() -> Path:
    """The Python of the moto venv, made on first use (locked against parallel sessions)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "atrium-test"
    home = cache / "moto-5.2.5"
    python = home / "bin" / "python"
    stamp = home / ".installed"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "moto.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            venv.create(home, with_pip=True, clear=True)
            done = subprocess.run(
                [python, "-m", "pip", "install", "--quiet", *MOTO_REQUIREMENTS],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                pytest.fail(
                    f"could not install {' '.join(MOTO_REQUIREMENTS)} into {home} (the S3 "
                    f"tests need PyPI once): {done.stderr[-2000:]}",
                    pytrace=False,
                )
            stamp.write_text(" ".join(MOTO_REQUIREMENTS))
    return python


@contextlib.contextmanager
def running_moto(buckets: tuple[str, ...], log: Path) -> Iterator[MotoS3]:
    """moto on a free loopback port with ``buckets`` made; stopped on exit."""
    python = moto_python()
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_UNSIGNED_SETUP_CALLS)}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [python, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            _wait_for(port, server, log)
            setup = subprocess.run(
                [python, "-c", _SETUP, endpoint, *buckets],
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            if setup.returncode != 0:
                pytest.fail(f"moto setup failed: {setup.stderr[-2000:]}", pytrace=False)
            key = json.loads(setup.stdout)
            yield MotoS3(endpoint, key["id"], key["secret"])
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"moto exited: {log.read_text(errors='replace')[-2000:]}", pytrace=False)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    pytest.fail(f"moto did not listen on {port} within 60 s", pytrace=False)


__all__ = ["MOTO_REQUIREMENTS", "REGION", "MotoS3", "moto_python", "running_moto"]
