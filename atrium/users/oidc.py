"""An OpenID Connect provider as a relying party sees it: discovery, keys, the token
endpoint, and ID token verification (OpenID Connect Core 1.0, sections 3.1.3.5-3.1.3.7).

The provider's address is configured by the operator, never taken from a request; every
call to it is still time-bounded. Signatures are checked by ``joserfc`` against the
provider's JWKS, fetched again (at most every ``jwks_refresh_seconds``) when a token names
a key the cached set lacks, so the provider can rotate keys without a restart.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

import httpx
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
)
from joserfc.jwk import KeySet

from atrium.core.errors import AuthenticationError, InvalidRequestError, UpstreamError

DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
# Asymmetric algorithms only: "none" and the HMAC family are never accepted.
SIGNING_ALGORITHMS: Final = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256")
_MAX_DOCUMENT_BYTES: Final = 512 * 1024


class OidcTokenError(AuthenticationError):
    """The provider's ID token does not verify (signature, issuer, audience, time, nonce)."""

    default_code = "oidc_token_invalid"


class OidcProviderError(UpstreamError):
    """The provider cannot be reached or answered something that is not OpenID Connect."""

    default_code = "oidc_provider_unavailable"


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    """The parts of a discovery document a relying party uses."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_auth_methods: tuple[str, ...]

    @classmethod
    def parse(cls, document: Mapping[str, Any], expected_issuer: str) -> ProviderMetadata:
        """Metadata from a discovery document whose ``issuer`` must be ``expected_issuer``."""
        if str(document.get("issuer", "")).rstrip("/") != expected_issuer:
            msg = f"the discovery document names another issuer than {expected_issuer!r}"
            raise OidcProviderError(msg)
        fields = {}
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not value.startswith(("https://", "http://")):
                raise OidcProviderError(f"the discovery document has no usable {name}")
            fields[name] = value
        methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        return cls(
            issuer=expected_issuer,
            token_auth_methods=tuple(str(m) for m in methods),
            **fields,
        )


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """This application at the provider: its client id and (for a confidential client)
    its secret."""

    client_id: str
    client_secret: str | None = None


class OidcProvider:
    """Discovery (cached), JWKS (cached, refreshed on an unknown key id), the token
    endpoint, and ID token verification for one issuer."""

    def __init__(
        self,
        issuer: str,
        *,
        timeout_seconds: float = 10.0,
        discovery_ttl_seconds: float = 3600.0,
        jwks_refresh_seconds: float = 5.0,
        leeway_seconds: int = 60,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._timeout = timeout_seconds
        self._discovery_ttl = discovery_ttl_seconds
        self._jwks_refresh = jwks_refresh_seconds
        self._leeway = leeway_seconds
        self._transport = transport
        self._clock = clock
        self._metadata: tuple[float, ProviderMetadata] | None = None
        self._keys: tuple[float, KeySet] | None = None
        self._lock = asyncio.Lock()

    async def metadata(self) -> ProviderMetadata:
        """The provider's discovery document, fetched at most once per TTL."""
        cached = self._metadata
        if cached is not None and self._clock() - cached[0] < self._discovery_ttl:
            return cached[1]
        document = await self._get_json(self.issuer + DISCOVERY_PATH)
        metadata = ProviderMetadata.parse(document, self.issuer)
        self._metadata = (self._clock(), metadata)
        return metadata

    async def exchange_code(
        self, client: ClientCredentials, *, code: str, redirect_uri: str, code_verifier: str
    ) -> str:
        """Trade an authorization code for tokens; the ID token (still to be verified)."""
        metadata = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        headers = {"accept": "application/json"}
        if client.client_secret is None:
            form["client_id"] = client.client_id
        elif "client_secret_basic" in metadata.token_auth_methods:
            headers["authorization"] = _basic(client.client_id, client.client_secret)
        else:
            form |= {"client_id": client.client_id, "client_secret": client.client_secret}
        answer = await self._request("POST", metadata.token_endpoint, data=form, headers=headers)
        body = _json_object(answer)
        if answer.status_code >= 400 or not isinstance(body.get("id_token"), str):
            error = str(body.get("error", f"status {answer.status_code}"))[:100]
            msg = f"the provider refused the sign-in code ({error}); please sign in again"
            raise InvalidRequestError(msg, code="oidc_code_rejected")
        return str(body["id_token"])

    async def verify_id_token(self, id_token: str, *, client_id: str, nonce: str) -> dict[str, Any]:
        """The claims of a valid ID token for ``client_id`` carrying ``nonce``;
        :class:`OidcTokenError` otherwise."""
        try:
            token = jwt.decode(id_token, await self._key_set(), algorithms=SIGNING_ALGORITHMS)
        except InvalidKeyIdError:
            token = self._decode_or_fail(id_token, await self._key_set(refresh=True))
        except JoseError as error:
            raise _token_error(error) from None
        claims = dict(token.claims)
        self._check_claims(claims, client_id=client_id, nonce=nonce)
        return claims

    def _decode_or_fail(self, id_token: str, keys: KeySet) -> jwt.Token:
        try:
            return jwt.decode(id_token, keys, algorithms=SIGNING_ALGORITHMS)
        except JoseError as error:
            raise _token_error(error) from None

    def _check_claims(self, claims: dict[str, Any], *, client_id: str, nonce: str) -> None:
        now = int(self._clock())
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=self._leeway,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": client_id},
            sub={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            registry.validate(claims)
        except JoseError as error:
            raise _token_error(error) from None
        issued = claims["iat"]
        if not isinstance(issued, int | float) or issued > now + self._leeway:
            raise OidcTokenError("the ID token was issued in the future (check the clocks)")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != client_id:
            raise OidcTokenError("the ID token's authorized party (azp) is not this client")

    async def _key_set(self, *, refresh: bool = False) -> KeySet:
        async with self._lock:
            cached = self._keys
            if cached is not None and not (
                refresh and self._clock() - cached[0] >= self._jwks_refresh
            ):
                return cached[1]
            document = await self._get_json((await self.metadata()).jwks_uri)
            try:
                keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as error:
                raise OidcProviderError(f"the provider's JWKS is not usable: {error}") from None
            self._keys = (self._clock(), keys)
            return keys

    async def _get_json(self, url: str) -> dict[str, Any]:
        answer = await self._request("GET", url, headers={"accept": "application/json"})
        if answer.status_code != 200:
            raise OidcProviderError(f"the sign-in provider answered {answer.status_code}")
        return _json_object(answer)

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, follow_redirects=False
            ) as client:
                answer = await client.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            msg = f"the sign-in provider cannot be reached ({type(error).__name__})"
            raise OidcProviderError(msg) from None
        if len(answer.content) > _MAX_DOCUMENT_BYTES:
            raise OidcProviderError("the sign-in provider's answer is too large")
        return answer


def authorization_url(endpoint: str, parameters: Mapping[str, str]) -> str:
    """``endpoint`` with the authorization request's query parameters added."""
    separator = "&" if "?" in endpoint else "?"
    return endpoint + separator + urlencode(parameters, quote_via=quote)


def _basic(client_id: str, secret: str) -> str:
    # RFC 6749 section 2.3.1: both parts form-encoded before base64.
    pair = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(pair).decode()


def _json_object(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise OidcProviderError("the sign-in provider answered something other than JSON")
    return body


def _token_error(error: JoseError) -> OidcTokenError:
    if isinstance(error, BadSignatureError):
        return OidcTokenError("the ID token's signature does not verify")
    if isinstance(error, ExpiredTokenError):
        return OidcTokenError("the ID token has expired", code="oidc_token_expired")
    if isinstance(error, InvalidKeyIdError):
        return OidcTokenError("the ID token is signed with a key the provider does not publish")
    return OidcTokenError(f"the ID token is not valid: {error.description or error.error}")
