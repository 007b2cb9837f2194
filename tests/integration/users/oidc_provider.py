"""A small OpenID Connect provider on loopback that speaks the documented wire format:
discovery (OpenID Connect Discovery 1.0), a JWKS of RS256 keys, an authorization endpoint
that redirects back with ``code`` and ``state``, and a token endpoint (PKCE S256,
client_secret_basic or client_secret_post, single-use codes) returning an ID token
signed per OpenID Connect Core 1.0 section 2.

Knobs on :class:`FakeProvider` let a test make the next ID token wrong in one way.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


@dataclass
class Identity:
    """Who the provider says signs in next."""

    sub: str = "10769150350006150715"
    email: str = "alice@firm.example"
    email_verified: bool = True
    name: str = "Alice Example"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str
    identity: Identity


@dataclass
class FakeProvider:
    """The provider's state; ``url`` is its issuer once started."""

    client_id: str = "atrium-test"
    client_secret: str = "s3cret-of-the-client"
    auth_methods: tuple[str, ...] = ("client_secret_basic", "client_secret_post")
    identity: Identity = field(default_factory=Identity)
    url: str = ""
    keys: list[RSAKey] = field(default_factory=list)
    grants: dict[str, Grant] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    jwks_fetches: int = 0
    # What to get wrong in the next ID token (None: nothing).
    audience: str | None = None
    nonce: str | None = None
    lifetime: int = 300
    issued_offset: int = 0
    signing_key: RSAKey | None = None

    def __post_init__(self) -> None:
        self.keys.append(new_key())

    def rotate(self) -> None:
        """Publish a new key and sign with it from now on (the old one is dropped)."""
        self.keys = [new_key()]

    def id_token(self, grant: Grant) -> str:
        now = int(time.time()) + self.issued_offset
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": grant.identity.sub,
            "aud": self.audience or grant.client_id,
            "iat": now,
            "exp": now + self.lifetime,
            "nonce": self.nonce or grant.nonce,
            "email": grant.identity.email,
            "email_verified": grant.identity.email_verified,
            "name": grant.identity.name,
        }
        key = self.signing_key or self.keys[-1]
        header = {"alg": "RS256", "kid": self.keys[-1].kid, "typ": "JWT"}
        return jwt.encode(header, claims, key)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.url,
                "authorization_endpoint": f"{self.url}/authorize",
                "token_endpoint": f"{self.url}/token",
                "jwks_uri": f"{self.url}/jwks",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": list(self.auth_methods),
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response(KeySet(list(self.keys)).as_dict(private=False))

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256":
            return web.json_response({"error": "unsupported_response_type"}, status=400)
        if q.get("client_id") != self.client_id or "openid" not in q.get("scope", "").split():
            return web.json_response({"error": "invalid_request"}, status=400)
        code = secrets.token_urlsafe(16)
        self.grants[code] = Grant(
            client_id=q["client_id"],
            redirect_uri=q["redirect_uri"],
            nonce=q["nonce"],
            challenge=q["code_challenge"],
            identity=self.identity,
        )
        back = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q["state"]})
        raise web.HTTPFound(back)

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.token_requests.append(
            {**form, "authorization": request.headers.get("Authorization", "")}
        )
        if not self._client_ok(request, form):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.grants.pop(form.get("code", ""), None)  # a code works once
        if grant is None or form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = form.get("code_verifier", "").encode()
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if challenge.decode() != grant.challenge or form.get("redirect_uri") != grant.redirect_uri:
            return web.json_response({"error": "invalid_grant"}, status=400)
        body = {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                "expires_in": 3600, "id_token": self.id_token(grant)}  # fmt: skip
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    def _client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic ") and "client_secret_basic" in self.auth_methods:
            pair = base64.b64decode(header[6:]).decode()
            return pair == f"{self.client_id}:{self.client_secret}"
        return "client_secret_post" in self.auth_methods and (
            form.get("client_id"),
            form.get("client_secret"),
        ) == (self.client_id, self.client_secret)


def new_key() -> RSAKey:
    """A fresh 2048-bit RSA key with a key id."""
    return RSAKey.generate_key(2048, {"alg": "RS256", "use": "sig"}, auto_kid=True)


@asynccontextmanager
async def running(provider: FakeProvider) -> AsyncIterator[FakeProvider]:
    """Serve ``provider`` on a free loopback port for the duration of the block."""
    runner = web.AppRunner(provider.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    provider.url = f"http://127.0.0.1:{port}"
    try:
        yield provider
    finally:
        await runner.cleanup()
