"""Sign-in with an OpenID Connect provider: the authorization code flow with PKCE,
state and nonce, ending in the same session a password sign-in opens.

``start`` returns the provider's authorization URL and a signed, short-lived state
cookie (state, nonce, PKCE verifier, the page to return to). ``finish`` checks the
callback against that cookie (once only), trades the code for an ID token, verifies it,
finds the user bound to its subject (or, at the first sign-in, the user its verified
e-mail names, then bound to the subject) and opens a session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from atrium.core.errors import (
    AtriumError,
    ConflictError,
    InvalidRequestError,
    PermissionDeniedError,
)
from atrium.core.settings import OidcSettings
from atrium.store.secrets import SecretDecryptionError, SecretNotFoundError
from atrium.users.oidc import ClientCredentials, OidcProvider, authorization_url
from atrium.users.repository import Role, User, normalize_username
from atrium.users.service import SignIn, UserService

STATE_COOKIE: Final = "atrium_oidc"
STATE_TTL_SECONDS: Final = 600
_MAX_NEXT: Final = 2000

SecretReader = Callable[[str], Awaitable[str]]


class OidcStateError(InvalidRequestError):
    """The callback's state is missing, forged, expired or already used."""

    default_code = "oidc_state_invalid"


class OidcUnavailableError(AtriumError):
    """Sign-in with the provider is misconfigured here (its client secret is missing)."""

    status = 503
    default_code = "oidc_unavailable"


@dataclass(frozen=True, slots=True)
class PendingSignIn:
    """What the state cookie carries between the redirect out and the callback."""

    state: str
    nonce: str
    verifier: str
    next: str
    expires: int


@dataclass(frozen=True, slots=True)
class Redirect:
    """Where to send the browser and the state cookie to set on the way."""

    url: str
    cookie: str


def safe_next(candidate: str | None) -> str:
    """``candidate`` when it is a path on this site, else ``/`` (no open redirect:
    ``//host``, ``/\\host``, schemes and control characters are refused)."""
    if not candidate or len(candidate) > _MAX_NEXT or not candidate.startswith("/"):
        return "/"
    if candidate.startswith(("//", "/\\")) or any(c < " " or c == "\\" for c in candidate):
        return "/"
    parts = urlsplit(candidate)
    return candidate if not parts.scheme and not parts.netloc else "/"


class StateSigner:
    """Signs and checks the state cookie (HMAC-SHA256 with a key derived from the
    server's secret key)."""

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(b"atrium-oidc-state\x00" + key).digest()
        self._clock = clock

    def issue(self, next_path: str) -> PendingSignIn:
        """A fresh state, nonce and PKCE verifier for one sign-in."""
        return PendingSignIn(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            next=safe_next(next_path),
            expires=int(self._clock()) + STATE_TTL_SECONDS,
        )

    def seal(self, pending: PendingSignIn) -> str:
        """The cookie value: payload and signature, both base64url."""
        payload = _b64(orjson.dumps([pending.state, pending.nonce, pending.verifier,
                                     pending.next, pending.expires]))  # fmt: skip
        return f"{payload}.{self._sign(payload)}"

    def open(self, cookie: str | None, state: str | None) -> PendingSignIn:
        """The pending sign-in of a callback whose ``state`` matches the cookie."""
        if not cookie or not state:
            raise OidcStateError("the sign-in has no state (cookies blocked?); please start again")
        payload, _, signature = cookie.partition(".")
        if not hmac.compare_digest(self._sign(payload).encode(), signature.encode()):
            raise OidcStateError("the sign-in state is not ours; please start again")
        values = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        pending = PendingSignIn(*values)
        if not hmac.compare_digest(pending.state.encode(), state.encode()):
            raise OidcStateError("the sign-in state does not match; please start again")
        if pending.expires < self._clock():
            raise OidcStateError("the sign-in took too long; please start again")
        return pending

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


class UsedStates:
    """States already redeemed (in this process) until they expire: a callback replayed
    with the same cookie is refused even before the provider refuses its code."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._used: dict[str, int] = {}
        self._clock = clock

    def redeem(self, pending: PendingSignIn) -> None:
        """Mark ``pending`` used; :class:`OidcStateError` when it already was."""
        now = self._clock()
        self._used = {s: e for s, e in self._used.items() if e >= now}
        if pending.state in self._used:
            raise OidcStateError("this sign-in was already used; please start again")
        self._used[pending.state] = pending.expires


class OidcSignIn:
    """The OpenID Connect sign-in of the web UI, from the login button to a session."""

    def __init__(
        self,
        options: OidcSettings,
        *,
        provider: OidcProvider,
        users: UserService,
        signer: StateSigner,
        read_secret: SecretReader,
    ) -> None:
        self.options = options
        self._provider = provider
        self._users = users
        self._signer = signer
        self._used = UsedStates()
        self._read_secret = read_secret

    async def start(self, next_path: str | None, *, redirect_uri: str) -> Redirect:
        """The provider's authorization URL and the state cookie to set."""
        metadata = await self._provider.metadata()
        pending = self._signer.issue(next_path or "/")
        challenge = _b64(hashlib.sha256(pending.verifier.encode()).digest())
        url = authorization_url(
            metadata.authorization_endpoint,
            {
                "response_type": "code",
                "client_id": self.options.client_id,
                "redirect_uri": redirect_uri,
                "scope": " ".join(self.options.scopes),
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            },
        )
        return Redirect(url, self._signer.seal(pending))

    async def finish(
        self,
        *,
        cookie: str | None,
        state: str | None,
        code: str | None,
        redirect_uri: str,
        address: str,
        user_agent: str,
    ) -> tuple[SignIn, str]:
        """Check the callback, verify the ID token, open a session; the session and the
        (same-site) path to return to."""
        pending = self._signer.open(cookie, state)
        self._used.redeem(pending)
        if not code:
            raise InvalidRequestError("the provider sent no code", code="oidc_code_rejected")
        client = ClientCredentials(self.options.client_id, await self._client_secret())
        id_token = await self._provider.exchange_code(
            client, code=code, redirect_uri=redirect_uri, code_verifier=pending.verifier
        )
        claims = await self._provider.verify_id_token(
            id_token, client_id=self.options.client_id, nonce=pending.nonce
        )
        user = await self._user_for(claims)
        signed = await self._users.open_session(user, address=address, user_agent=user_agent)
        return signed, pending.next

    async def _client_secret(self) -> str | None:
        name = self.options.client_secret_secret
        if name is None:
            return None
        try:
            return await self._read_secret(name)
        except (SecretNotFoundError, SecretDecryptionError):
            msg = (
                f"sign-in with {self.options.name} is not set up completely (its client secret "
                f"{name!r} is missing from the secret store); please tell an administrator"
            )
            raise OidcUnavailableError(msg) from None

    async def _user_for(self, claims: dict[str, Any]) -> User:
        """The user of a verified ID token: the one bound to its (issuer, sub), else the
        one its e-mail names (or a new one), bound to that subject from now on."""
        email = self._allowed_email(claims)
        issuer, subject = str(claims["iss"]), _subject(claims)
        user = await self._users.users.by_identity(issuer, subject)
        if user is None:
            user = await self._user_by_email(email, claims)
            await self._bind(user, issuer, subject, email)
        if email in self.options.admin_emails and user.role != Role.ADMIN:
            user = await self._users.users.update(user.id, role=Role.ADMIN.value)
        return user

    async def _user_by_email(self, email: str, claims: dict[str, Any]) -> User:
        found = await self._users.users.credentials(email)
        if found is not None:
            return found[0]
        if not self.options.auto_create and email not in self.options.admin_emails:
            msg = f"there is no account for {email}; ask an administrator to create one"
            raise PermissionDeniedError(msg, code="oidc_no_account")
        name = str(claims.get("name") or "")
        role = Role.ADMIN if email in self.options.admin_emails else Role.USER
        try:
            return await self._users.create_federated_user(
                username=email, role=role, display_name=name
            )
        except ConflictError:  # the same person's other tab won the race
            raced = await self._users.users.credentials(email)
            if raced is None:
                raise
            return raced[0]

    async def _bind(self, user: User, issuer: str, subject: str, email: str) -> None:
        """Bind ``user`` to ``subject``, refusing when it is bound to another one: the
        address now belongs to someone else at the provider (or was reissued)."""
        users = self._users.users
        bound = await users.identity_subject(user.id, issuer)
        if bound is None:
            try:
                await users.bind_identity(user.id, issuer, subject)
                return
            except ConflictError:  # another tab bound it first: fine if to this subject
                raced = await users.by_identity(issuer, subject)
                if raced is not None and raced.id == user.id:
                    return
        msg = (
            f"the account {email} is linked to another {self.options.name} identity; "
            "ask an administrator"
        )
        raise PermissionDeniedError(msg, code="oidc_subject_mismatch")

    def _allowed_email(self, claims: dict[str, Any]) -> str:
        email = str(claims.get("email") or "").strip().lower()
        if not email:
            msg = "the provider did not share an e-mail address (is the 'email' scope granted?)"
            raise PermissionDeniedError(msg, code="oidc_email_missing")
        if claims.get("email_verified") not in (True, "true"):
            msg = f"the provider has not verified {email}"
            raise PermissionDeniedError(msg, code="oidc_email_not_verified")
        domain = email.rpartition("@")[2]
        if self.options.allowed_domains and domain not in self.options.allowed_domains:
            msg = f"accounts of {domain} may not sign in here"
            raise PermissionDeniedError(msg, code="oidc_email_not_allowed")
        try:
            return normalize_username(email)
        except InvalidRequestError:
            msg = f"{email} cannot be used as a username here"
            raise PermissionDeniedError(msg, code="oidc_email_unusable") from None


def _subject(claims: dict[str, Any]) -> str:
    """The token's ``sub``: at most 255 ASCII characters (OpenID Connect Core 2)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255 or not subject.isascii():
        raise PermissionDeniedError(
            "the provider sent an unusable subject", code="oidc_subject_unusable"
        )
    return subject


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
