"""OpenID Connect sign-in end to end: the web UI's routes on a real database against a
provider on loopback that speaks the OIDC wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from fastapi import FastAPI

from atrium.api.errors import install_error_handlers
from atrium.api.ui import install_web
from atrium.core.errors import ConflictError
from atrium.core.settings import OidcSettings, WebSettings
from atrium.gateway.auth import KeyAuthenticator
from atrium.store import ApiKeyRepository, Database
from atrium.store.secrets import SecretStore
from atrium.users.oidc_flow import STATE_COOKIE
from atrium.users.repository import Role
from atrium.users.sessions import CSRF_COOKIE, SESSION_COOKIE
from atrium.users.web import WebServices, build_web
from tests.integration.users.oidc_provider import FakeProvider, Identity, new_key, running

pytestmark = pytest.mark.integration

JSON = {"accept": "application/json"}


@dataclass
class OidcApp:
    web: WebServices
    app: FastAPI
    provider: FakeProvider

    def browser(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=("10.1.2.3", 5000))
        return httpx.AsyncClient(transport=transport, base_url="http://atrium.test")


async def _build(
    database: Database, tmp_path: Path, provider: FakeProvider, **oidc: object
) -> OidcApp:
    fernet_key = Fernet.generate_key()
    await SecretStore(database, fernet_key).put("oidc-client", provider.client_secret)
    options = OidcSettings(
        enabled=True,
        issuer=provider.url,
        client_id=provider.client_id,
        client_secret_secret="oidc-client",
        **oidc,  # type: ignore[arg-type]
    )
    settings = WebSettings(
        password_time_cost=1, password_memory_kib=8 * 1024, ui_dir=tmp_path / "no-ui", oidc=options
    )
    keys = ApiKeyRepository(database)
    auth = KeyAuthenticator(keys, ttl=0)
    web = build_web(settings, db=database, keys=keys, auth=auth, secret_key=fernet_key)
    await web.start()
    app = FastAPI()
    install_error_handlers(app)
    install_web(app, web, auth)
    return OidcApp(web, app, provider)


@pytest_asyncio.fixture
async def oidc(database: Database, tmp_path: Path) -> AsyncIterator[OidcApp]:
    async with running(FakeProvider()) as provider:
        yield await _build(
            database,
            tmp_path,
            provider,
            allowed_domains=["firm.example"],
            admin_emails=["boss@firm.example"],
        )


async def _to_provider(browser: httpx.AsyncClient, next_path: str = "/chat") -> str:
    """Press the button: the URL of the provider's authorization endpoint."""
    resp = await browser.get("/v1/auth/oidc/login", params={"next": next_path})
    assert resp.status_code == 302, resp.text
    assert STATE_COOKIE in resp.cookies
    return resp.headers["location"]


async def _provider_redirect(authorize_url: str) -> str:
    """The provider signs the user in and sends the browser back: the callback URL."""
    async with httpx.AsyncClient() as outside:
        resp = await outside.get(authorize_url)
    assert resp.status_code == 302, resp.text
    return resp.headers["location"]


async def _sign_in(browser: httpx.AsyncClient, next_path: str = "/chat") -> httpx.Response:
    callback = await _provider_redirect(await _to_provider(browser, next_path))
    return await browser.get(callback, headers=JSON)


async def test_signing_in_creates_a_user_and_a_session_with_csrf(oidc: OidcApp) -> None:
    async with oidc.browser() as browser:
        authorize = await _to_provider(browser)
        query = parse_qs(urlsplit(authorize).query)
        assert authorize.startswith(oidc.provider.url + "/authorize?")
        assert query["redirect_uri"] == ["http://atrium.test/v1/auth/oidc/callback"]
        assert query["code_challenge_method"] == ["S256"]
        assert query["scope"] == ["openid email profile"]
        resp = await browser.get(await _provider_redirect(authorize))
        assert resp.status_code == 303, resp.text
        assert resp.headers["location"] == "/chat"
        assert {SESSION_COOKIE, CSRF_COOKIE} <= set(resp.cookies)
        set_cookies = resp.headers.get_list("set-cookie")
        session_cookie = next(c for c in set_cookies if c.startswith(SESSION_COOKIE + "="))
        assert "HttpOnly" in session_cookie
        assert "SameSite=strict" in session_cookie

        me = await browser.get("/v1/auth/me")
        assert me.status_code == 200, me.text
        assert me.json()["username"] == "alice@firm.example"
        assert me.json()["display_name"] == "Alice Example"
        assert me.json()["role"] == "user"

        refused = await browser.post("/v1/auth/logout")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "csrf_failed"
        csrf = browser.cookies[CSRF_COOKIE]
        out = await browser.post("/v1/auth/logout", headers={"x-csrf-token": csrf})
        assert out.status_code == 200, out.text
    # The client authenticated at the token endpoint (basic) and sent the PKCE verifier.
    sent = oidc.provider.token_requests[-1]
    assert sent["authorization"].startswith("Basic ")
    assert sent["code_verifier"]
    assert "client_secret" not in sent


async def test_a_second_sign_in_finds_the_same_user(oidc: OidcApp) -> None:
    async with oidc.browser() as first, oidc.browser() as second:
        assert (await _sign_in(first)).status_code == 303
        assert (await _sign_in(second)).status_code == 303
        one, two = (await first.get("/v1/auth/me")).json(), (await second.get("/v1/auth/me")).json()
    assert one["id"] == two["id"]
    assert len(await oidc.web.users.users.list()) == 2  # the first admin and alice


async def test_admin_emails_get_the_admin_role(oidc: OidcApp) -> None:
    oidc.provider.identity = Identity(sub="2", email="Boss@firm.example", name="The Boss")
    async with oidc.browser() as browser:
        assert (await _sign_in(browser)).status_code == 303
        me = (await browser.get("/v1/auth/me")).json()
        admin_route = await browser.get("/v1/admin/users")
    assert me["username"] == "boss@firm.example"
    assert me["role"] == "admin"
    assert admin_route.status_code == 200


async def test_the_first_sign_in_binds_the_subject_and_later_ones_follow_it(
    oidc: OidcApp,
) -> None:
    users = oidc.web.users.users
    existing = await oidc.web.users.create_user(
        username="alice@firm.example", password="a long enough password 1", role=Role.BUILDER
    )
    assert await users.identity_subject(existing.id, oidc.provider.url) is None
    async with oidc.browser() as browser:
        assert (await _sign_in(browser)).status_code == 303
        assert (await browser.get("/v1/auth/me")).json()["id"] == existing.id
    # The password user whose name is the address is now bound to the provider's subject.
    assert await users.identity_subject(existing.id, oidc.provider.url) == Identity.sub

    # The provider changes her address: the subject still finds her, no new account.
    oidc.provider.identity = Identity(email="alice.smith@firm.example")
    async with oidc.browser() as browser:
        assert (await _sign_in(browser)).status_code == 303
        me = (await browser.get("/v1/auth/me")).json()
    assert (me["id"], me["username"]) == (existing.id, "alice@firm.example")
    assert len(await users.list()) == 2  # the first admin and alice


async def test_an_address_bound_to_another_subject_is_refused(oidc: OidcApp) -> None:
    async with oidc.browser() as browser:
        assert (await _sign_in(browser)).status_code == 303
    # Someone else now holds alice's address at the provider (a reissued mailbox).
    oidc.provider.identity = Identity(sub="someone-else")
    async with oidc.browser() as browser:
        resp = await _sign_in(browser)
        assert resp.status_code == 403, resp.text
        assert resp.json()["error"]["code"] == "oidc_subject_mismatch"
        assert SESSION_COOKIE not in browser.cookies
    users = oidc.web.users.users
    alice = await users.credentials("alice@firm.example")
    assert alice is not None
    assert await users.identity_subject(alice[0].id, oidc.provider.url) == Identity.sub
    assert await users.by_identity(oidc.provider.url, "someone-else") is None


async def test_an_admin_unbinds_a_reissued_account_and_the_next_sign_in_binds_anew(
    oidc: OidcApp,
) -> None:
    async with oidc.browser() as browser:
        assert (await _sign_in(browser)).status_code == 303
        alice = (await browser.get("/v1/auth/me")).json()["id"]
    oidc.provider.identity = Identity(sub="boss-sub", email="boss@firm.example", name="Boss")
    async with oidc.browser() as boss:
        assert (await _sign_in(boss)).status_code == 303
        csrf = {"x-csrf-token": boss.cookies[CSRF_COOKIE]}
        path = f"/v1/admin/users/{alice}/identities"
        listed = (await boss.get(path)).json()["data"]
        assert [(i["issuer"], i["subject"]) for i in listed] == [(oidc.provider.url, Identity.sub)]
        oidc.provider.identity = Identity(sub="alice-again")
        async with oidc.browser() as browser:
            refused = await _sign_in(browser)
        assert refused.json()["error"]["code"] == "oidc_subject_mismatch"
        unbound = await boss.delete(path, headers=csrf)
        assert unbound.status_code == 200, unbound.text
        assert unbound.json()["deleted"] == 1
        assert (await boss.get(path)).json()["data"] == []
        assert (await boss.delete(path, headers=csrf)).json()["deleted"] == 0
        missing = await boss.get("/v1/admin/users/nobody/identities")
        assert missing.status_code == 404
        assert missing.json()["error"]["param"] == "user_id"
        async with oidc.browser() as browser:
            assert (await _sign_in(browser)).status_code == 303
            assert (await browser.get("/v1/auth/me")).json()["id"] == alice
        rebound = (await boss.get(path)).json()["data"]
    assert [i["subject"] for i in rebound] == ["alice-again"]


async def test_an_admin_unbinds_one_identity_by_issuer_and_subject(oidc: OidcApp) -> None:
    async with oidc.browser() as browser:
        assert (await _sign_in(browser)).status_code == 303
        alice = (await browser.get("/v1/auth/me")).json()["id"]
    other = "https://other.example/oauth2"
    await oidc.web.users.users.bind_identity(alice, other, "alice-there")
    oidc.provider.identity = Identity(sub="boss-sub", email="boss@firm.example", name="Boss")
    async with oidc.browser() as boss:
        assert (await _sign_in(boss)).status_code == 303
        csrf = {"x-csrf-token": boss.cookies[CSRF_COOKIE]}
        path = f"/v1/admin/users/{alice}/identities"

        async def bound() -> list[tuple[str, str]]:
            return [(i["issuer"], i["subject"]) for i in (await boss.get(path)).json()["data"]]

        assert await bound() == [(oidc.provider.url, Identity.sub), (other, "alice-there")]
        # A subject the user is not bound to there (one since bound anew, say): nothing goes.
        stale = await boss.delete(path, params={"issuer": other, "subject": "old"}, headers=csrf)
        assert stale.status_code == 404, stale.text
        error = stale.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error",
            "not_found",
            "subject",
        )
        half = await boss.delete(path, params={"issuer": other}, headers=csrf)
        assert half.status_code == 400, half.text
        assert "both issuer and subject" in half.json()["error"]["message"]
        assert len(await bound()) == 2

        one = {"issuer": other, "subject": "alice-there"}
        unbound = await boss.delete(path, params=one, headers=csrf)
        assert unbound.status_code == 200, unbound.text
        assert unbound.json() == {"object": "user.identities", "user_id": alice, "deleted": 1}
        assert await bound() == [(oidc.provider.url, Identity.sub)]
        again = await boss.delete(path, params=one, headers=csrf)
        assert again.status_code == 404
        nobody = await boss.delete("/v1/admin/users/nobody/identities", params=one, headers=csrf)
        assert nobody.json()["error"]["param"] == "user_id"
    # The identity left still signs her in.
    oidc.provider.identity = Identity()
    async with oidc.browser() as browser:
        assert (await _sign_in(browser)).status_code == 303
        assert (await browser.get("/v1/auth/me")).json()["id"] == alice


async def test_a_subject_is_bound_once_per_issuer(oidc: OidcApp) -> None:
    users = oidc.web.users.users
    first = await oidc.web.users.create_federated_user(
        username="bob@firm.example", role=Role.USER, display_name=""
    )
    second = await oidc.web.users.create_federated_user(
        username="carol@firm.example", role=Role.USER, display_name=""
    )
    await users.bind_identity(first.id, "https://idp.example", "s-1")
    # Another issuer may use the same subject for someone else, and bob may have an
    # account there too.
    await users.bind_identity(second.id, "https://other.example", "s-1")
    await users.bind_identity(first.id, "https://other.example", "s-2")
    with pytest.raises(ConflictError):  # the subject is bob's at this issuer
        await users.bind_identity(second.id, "https://idp.example", "s-1")
    with pytest.raises(ConflictError):  # bob has a subject at this issuer already
        await users.bind_identity(first.id, "https://idp.example", "s-3")
    found = await users.by_identity("https://other.example", "s-1")
    assert found is not None
    assert found.id == second.id


@pytest.mark.parametrize(
    ("knob", "status", "code"),
    [
        ("audience", 401, "oidc_token_invalid"),
        ("signature", 401, "oidc_token_invalid"),
        ("expired", 401, "oidc_token_expired"),
        ("nonce", 401, "oidc_token_invalid"),
        ("future", 401, "oidc_token_invalid"),
        ("unverified", 403, "oidc_email_not_verified"),
        ("domain", 403, "oidc_email_not_allowed"),
        ("subject", 403, "oidc_subject_unusable"),
    ],
)
async def test_a_bad_id_token_or_email_is_refused_clearly(
    oidc: OidcApp, knob: str, status: int, code: str
) -> None:
    provider = oidc.provider
    if knob == "audience":
        provider.audience = "someone-else"
    elif knob == "signature":
        provider.signing_key = new_key()  # same kid in the header, another key signs
    elif knob == "expired":
        provider.issued_offset, provider.lifetime = -3600, 300
    elif knob == "nonce":
        provider.nonce = "not-the-nonce"
    elif knob == "future":
        provider.issued_offset = 3600
    elif knob == "unverified":
        provider.identity = Identity(email_verified=False)
    elif knob == "subject":
        provider.identity = Identity(sub="s" * 256)  # over OpenID Connect's 255
    else:
        provider.identity = Identity(email="mallory@elsewhere.example")
    async with oidc.browser() as browser:
        resp = await _sign_in(browser)
        assert resp.status_code == status, resp.text
        assert resp.json()["error"]["code"] == code
        assert SESSION_COOKIE not in browser.cookies
        assert (await browser.get("/v1/auth/me")).status_code == 401
    assert len(await oidc.web.users.users.list()) == 1  # nobody was created


async def test_the_error_page_is_readable_html_for_a_browser(oidc: OidcApp) -> None:
    oidc.provider.identity = Identity(email="mallory@elsewhere.example")
    async with oidc.browser() as browser:
        callback = await _provider_redirect(await _to_provider(browser))
        resp = await browser.get(callback)
    assert resp.status_code == 403
    assert resp.headers["content-type"].startswith("text/html")
    assert "accounts of elsewhere.example may not sign in here" in resp.text


async def test_a_replayed_or_forged_state_is_refused(oidc: OidcApp) -> None:
    async with oidc.browser() as browser:
        callback = await _provider_redirect(await _to_provider(browser))
        state_cookie = browser.cookies[STATE_COOKIE]
        assert (await browser.get(callback)).status_code == 303
        browser.cookies.set(STATE_COOKIE, state_cookie, path="/v1/auth/oidc/callback")
        replay = await browser.get(callback, headers=JSON)
    assert replay.status_code == 400
    assert replay.json()["error"]["code"] == "oidc_state_invalid"

    async with oidc.browser() as victim, oidc.browser() as attacker:
        # The attacker's own callback URL, opened in the victim's browser (login CSRF).
        attacker_callback = await _provider_redirect(await _to_provider(attacker))
        await _to_provider(victim)
        forged = await victim.get(attacker_callback, headers=JSON)
        no_cookie = await oidc.browser().get(attacker_callback, headers=JSON)
        payload, _, signature = attacker.cookies[STATE_COOKIE].partition(".")
        tampered = f"{payload}.{signature[:-2]}AA"
        attacker.cookies.set(STATE_COOKIE, tampered, path="/v1/auth/oidc/callback")
        bad_signature = await attacker.get(attacker_callback, headers=JSON)
    for resp in (forged, no_cookie, bad_signature):
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "oidc_state_invalid"


async def test_an_expired_code_is_a_clear_error(oidc: OidcApp) -> None:
    async with oidc.browser() as browser:
        callback = await _provider_redirect(await _to_provider(browser))
        oidc.provider.grants.clear()  # the provider forgot the code (it expired)
        resp = await browser.get(callback, headers=JSON)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "oidc_code_rejected"


@pytest.mark.parametrize(
    "next_path",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "chat"],
)
async def test_an_open_redirect_in_next_is_refused(oidc: OidcApp, next_path: str) -> None:
    async with oidc.browser() as browser:
        resp = await _sign_in(browser, next_path)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/"


async def test_the_provider_rotating_its_keys_is_followed(oidc: OidcApp) -> None:
    async with oidc.browser() as browser:
        assert (await _sign_in(browser)).status_code == 303
        fetches = oidc.provider.jwks_fetches
        assert (await _sign_in(browser)).status_code == 303
        assert oidc.provider.jwks_fetches == fetches  # cached while the key is known
        oidc.provider.rotate()
        oidc.web.oidc._provider._jwks_refresh = 0  # type: ignore[union-attr]
        assert (await _sign_in(browser)).status_code == 303
    assert oidc.provider.jwks_fetches == fetches + 1


async def test_the_provider_being_down_is_a_502_not_a_500(
    database: Database, tmp_path: Path
) -> None:
    async with running(FakeProvider()) as gone:
        pass  # started and stopped: its port now refuses connections
    app = await _build(database, tmp_path, gone)
    async with app.browser() as browser:
        as_json = await browser.get("/v1/auth/oidc/login", headers=JSON)
        as_page = await browser.get("/v1/auth/oidc/login")
    assert as_json.status_code == as_page.status_code == 502
    assert as_json.json()["error"]["code"] == "oidc_provider_unavailable"
    assert "cannot be reached" in as_page.text


async def test_providers_lists_the_button_and_post_auth_works(
    database: Database, tmp_path: Path
) -> None:
    provider = FakeProvider(auth_methods=("client_secret_post",))
    async with running(provider):
        app = await _build(database, tmp_path, provider, display_name="Firm SSO", auto_create=False)
        async with app.browser() as browser:
            listed = (await browser.get("/v1/auth/providers")).json()
            resp = await _sign_in(browser)
    assert listed["oidc"] == {"name": "Firm SSO", "login_url": "/v1/auth/oidc/login"}
    # client_secret_post was used, and auto_create off means no account is made.
    assert provider.token_requests[-1]["client_secret"] == provider.client_secret
    assert resp.status_code == 403
    assert resp.json()["error"]["code"] == "oidc_no_account"


async def test_odd_callback_parameters_are_400s(oidc: OidcApp) -> None:
    async with oidc.browser() as browser:
        await _to_provider(browser)
        odd_state = await browser.get(
            "/v1/auth/oidc/callback", params={"state": "é", "code": "x"}, headers=JSON
        )
        denied = await browser.get(
            "/v1/auth/oidc/callback",
            params={"error": "access_denied", "error_description": "The user said no"},
            headers=JSON,
        )
        browser.cookies.clear()
        raw_cookie = f"{STATE_COOKIE}=é.é".encode()  # not ASCII, as a browser may send
        odd_cookie = await browser.get(
            "/v1/auth/oidc/callback",
            params={"state": "s", "code": "x"},
            headers={**JSON, "cookie": raw_cookie},  # type: ignore[dict-item]
        )
    assert odd_state.status_code == odd_cookie.status_code == 400
    assert odd_state.json()["error"]["code"] == odd_cookie.json()["error"]["code"]
    assert odd_cookie.json()["error"]["code"] == "oidc_state_invalid"
    assert denied.status_code == 400
    assert denied.json()["error"]["code"] == "oidc_denied"
    assert "The user said no" in denied.json()["error"]["message"]


async def test_a_missing_client_secret_is_a_clear_503(oidc: OidcApp, database: Database) -> None:
    assert oidc.web.oidc is not None
    await SecretStore(database, Fernet.generate_key()).delete("oidc-client")
    async with oidc.browser() as browser:
        resp = await _sign_in(browser)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "oidc_unavailable"
    assert "'oidc-client'" in resp.json()["error"]["message"]
