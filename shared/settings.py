"""The one settings object. Entry points build it once and pass it down; nothing else reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigurationError

PREFIX = "MODELRUNS_"

CommaList = Annotated[tuple[str, ...], NoDecode]


def _split_commas(value: Any) -> Any:
    # Operators write MODELRUNS_WORKER_POOLS=gpu,cpu; pydantic-settings would otherwise expect JSON.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True)

    database_url: str = "postgresql://postgres@127.0.0.1:5432/modelruns"
    database_owner_url: str | None = None
    database_pool_size: int = Field(default=10, ge=1, le=200)
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    ops_port: int | None = Field(default=None, ge=0, le=65535)

    rate_limit_per_second: float = Field(default=100.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    trigger_rate_limit_per_second: float = Field(default=20.0, gt=0)
    trigger_rate_limit_burst: int = Field(default=40, ge=1)
    api_key_cache_seconds: float = Field(default=1.0, ge=0, le=1.0)

    page_token_secret: SecretStr | None = None

    step_lease_seconds: float = Field(default=30.0, gt=0)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    reconcile_seconds: float = Field(default=5.0, gt=0)
    outbox_poll_seconds: float = Field(default=0.5, gt=0)
    dispatch_redeliveries: int = Field(default=3, ge=0, le=100)
    cancel_deadline_seconds: float = Field(default=30.0, gt=0)
    max_test_results_per_step: int = Field(default=100_000, ge=1, le=10_000_000)

    worker_pools: CommaList = ("default",)
    worker_concurrency: int = Field(default=8, ge=1, le=1024)
    worker_allow_commands: bool = False
    worker_python_allow: CommaList = ("examples.",)
    worker_id: str | None = None
    worker_scratch_dir: str | None = None
    worker_shutdown_grace_seconds: float = Field(default=30.0, ge=0)

    log_level: str = "INFO"
    log_format: str = "auto"

    url: str = "http://127.0.0.1:8080"
    api_key: SecretStr | None = None
    # The client's config file (url, api_key); default $XDG_CONFIG_HOME/modelruns/config.toml.
    config: str | None = None

    @field_validator("worker_pools", "worker_python_allow", mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("worker_pools")
    @classmethod
    def _pool_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from shared.models.api import POOL_PATTERN

        for pool in value:
            if not POOL_PATTERN.fullmatch(pool):
                raise ValueError(f"invalid pool name {pool!r}")
        if not value:
            raise ValueError("at least one pool is needed")
        return value

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Settings:
        if self.heartbeat_seconds >= self.step_lease_seconds:
            raise ValueError("MODELRUNS_HEARTBEAT_SECONDS must be shorter than MODELRUNS_STEP_LEASE_SECONDS")
        return self

    @property
    def owner_url(self) -> str:
        return self.database_owner_url or self.database_url


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment, refusing MODELRUNS_* names nobody reads (a typo is not a default)."""
    env = os.environ if environ is None else environ
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(name for name in env if name.startswith(PREFIX) and name not in known)
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}")
    if environ is None:
        try:
            return Settings(**overrides)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from exc
    values: dict[str, Any] = {
        name[len(PREFIX) :].lower(): value for name, value in env.items() if name.startswith(PREFIX)
    }
    values.update(overrides)
    try:
        explicit = _MappingOnly.model_validate(
            {
                k: _split_commas(v) if k in ("worker_pools", "worker_python_allow") else v
                for k, v in values.items()
            }
        )
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from exc
    return Settings.model_construct(_fields_set=explicit.model_fields_set, **dict(explicit))


class _MappingOnly(Settings):
    """Settings validated from the given mapping alone: with an explicit `environ`, the process's
    own MODELRUNS_* variables must not leak in (pydantic-settings reads os.environ otherwise)."""

    model_config = SettingsConfigDict(title="Settings")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)
