"""``web.oidc`` settings validation and the ``next`` path guard of OIDC sign-in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from atrium.core.settings import OidcSettings, Settings, load_settings
from atrium.users.oidc_flow import OidcStateError, StateSigner, safe_next

README = Path(__file__).parents[3] / "README.md"


def test_defaults_are_google_and_off() -> None:
    options = OidcSettings()
    assert not options.enabled
    assert options.issuer == "https://accounts.google.com"
    assert options.name == "Google"
    assert options.scopes == ["openid", "email", "profile"]
    assert options.auto_create


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"issuer": "http://login.example.com"}, "web.oidc.issuer"),
        ({"issuer": "not a url"}, "web.oidc.issuer"),
        ({"redirect_url": "http://atrium.example.com/cb"}, "web.oidc.redirect_url"),
        ({"enabled": True}, "web.oidc.client_id"),
        ({"scopes": ["email"]}, "web.oidc.scopes"),
        ({"admin_emails": ["boss"]}, "web.oidc.admin_emails"),
    ],
)
def test_bad_values_name_the_field(values: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        OidcSettings.model_validate(values)


def test_http_is_allowed_on_loopback_only_and_lists_are_normalised() -> None:
    options = OidcSettings(
        issuer="http://127.0.0.1:9000/",
        redirect_url="http://localhost:8080/v1/auth/oidc/callback",
        allowed_domains=[" @Firm.Example "],
        admin_emails=["Boss@Firm.Example"],
    )
    assert options.issuer == "http://127.0.0.1:9000"
    assert options.allowed_domains == ["firm.example"]
    assert options.admin_emails == ["boss@firm.example"]
    assert options.name == "127.0.0.1"


def test_the_client_secret_is_a_secret_name_never_a_literal() -> None:
    with pytest.raises(ValidationError, match="client_secret_secret"):
        OidcSettings(client_secret_secret="has spaces and / slashes")
    with pytest.raises(ValidationError, match="client_secret"):
        OidcSettings.model_validate({"client_secret": "literal"})  # extra fields are refused


def test_settings_read_oidc_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRIUM_WEB__OIDC__ENABLED", "true")
    monkeypatch.setenv("ATRIUM_WEB__OIDC__CLIENT_ID", "abc.apps.googleusercontent.com")
    monkeypatch.setenv("ATRIUM_WEB__OIDC__ALLOWED_DOMAINS", '["firm.example"]')
    oidc = Settings().web.oidc
    assert oidc.enabled
    assert oidc.client_id == "abc.apps.googleusercontent.com"
    assert oidc.allowed_domains == ["firm.example"]


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("/chat", "/chat"),
        ("/workflows/abc?tab=runs#x", "/workflows/abc?tab=runs#x"),
        (None, "/"),
        ("", "/"),
        ("chat", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/ok\\..\\x", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/a\nb", "/"),
        ("/" + "a" * 3000, "/"),
    ],
)
def test_next_is_a_path_on_this_site(candidate: str | None, expected: str) -> None:
    assert safe_next(candidate) == expected


def test_the_state_cookie_is_signed_matched_and_short_lived() -> None:
    now = [1_000_000.0]
    signer = StateSigner(b"key", clock=lambda: now[0])
    pending = signer.issue("/chat")
    cookie = signer.seal(pending)
    assert signer.open(cookie, pending.state) == pending
    with pytest.raises(OidcStateError):
        signer.open(cookie, "another-state")
    with pytest.raises(OidcStateError):
        StateSigner(b"other key").open(cookie, pending.state)
    now[0] += 601
    with pytest.raises(OidcStateError, match="too long"):
        signer.open(cookie, pending.state)


def test_the_readme_oidc_example_loads(tmp_path: Path) -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.DOTALL)
    config = tmp_path / "atrium.yaml"
    config.write_text(next(b for b in blocks if "oidc:" in b))
    oidc = load_settings(config).web.oidc
    assert oidc.enabled
    assert oidc.name == "Google"
    assert oidc.client_secret_secret == "google-oidc"
    assert oidc.allowed_domains == ["example.com"]
