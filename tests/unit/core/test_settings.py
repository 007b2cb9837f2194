from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from atrium.core.settings import (
    LlamaCppModel,
    OnnxEmbeddingModel,
    OpenAICompatModel,
    Settings,
    load_settings,
)


def test_defaults_serve_the_bundled_models_on_sqlite(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    chat = settings.models["smollm2-135m"]
    assert isinstance(chat, LlamaCppModel)
    assert chat.aliases == ["default"]
    assert isinstance(settings.models["all-minilm-l6-v2"], OnnxEmbeddingModel)
    assert settings.store_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/atrium.db"
    assert settings.bus.backend == "inprocess"
    assert settings.server.host == "127.0.0.1"


def test_environment_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRIUM_SERVER__PORT", "9123")
    monkeypatch.setenv("ATRIUM_STORE__URL", "postgresql+asyncpg://postgres@127.0.0.1/x")
    monkeypatch.setenv("ATRIUM_AUTH__BOOTSTRAP_KEY", "atr-0123456789abcdefghij")
    settings = Settings()
    assert settings.server.port == 9123
    assert settings.store_url == "postgresql+asyncpg://postgres@127.0.0.1/x"
    assert settings.auth.bootstrap_key is not None
    assert "0123456789" not in repr(settings.auth)


def test_yaml_file_defines_models_and_env_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "atrium.yaml"
    config.write_text(
        "server:\n  port: 7000\n  max_body_bytes: 65536\n"
        "models:\n  gpt:\n    backend: openai_compat\n    base_url: http://127.0.0.1:9/v1\n"
        "    aliases: [fast]\n"
    )
    monkeypatch.setenv("ATRIUM_SERVER__PORT", "7001")
    settings = load_settings(config)
    assert settings.server.port == 7001
    assert settings.server.max_body_bytes == 65536
    assert list(settings.models) == ["gpt"]
    model = settings.models["gpt"]
    assert isinstance(model, OpenAICompatModel)
    assert str(model.base_url) == "http://127.0.0.1:9/v1"
    assert model.aliases == ["fast"]


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_a_name_used_twice_is_refused() -> None:
    with pytest.raises(ValidationError, match="'default' is used by both"):
        Settings(
            models={
                "a": LlamaCppModel(aliases=["default"]),
                "b": OnnxEmbeddingModel(aliases=["default"]),
            }
        )


def test_unknown_settings_and_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Settings(nonsense=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="port"):
        Settings(server={"port": 70000})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="backend"):
        Settings(models={"x": {"backend": "nope"}})  # type: ignore[dict-item]


def test_replica_groups_are_swept_only_after_their_heartbeats_stopped(tmp_path: Path) -> None:
    bus = Settings(data_dir=tmp_path).bus
    assert bus.replica_group_idle_seconds > bus.claim_idle_seconds
    too_soon = {"claim_idle_seconds": 60, "replica_group_idle_seconds": 30}
    with pytest.raises(ValidationError, match="replica_group_idle_seconds must be above"):
        Settings.model_validate({"data_dir": tmp_path, "bus": too_soon})
