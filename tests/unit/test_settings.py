"""Settings (DESIGN.md "Settings"): the defaults the contract names, comma lists, and what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.errors import ConfigurationError
from shared.settings import PREFIX, Settings, load_settings

# DESIGN.md and API.md, name by name.
DOCUMENTED_DEFAULTS = {
    "database_url": "postgresql://postgres@127.0.0.1:5432/modelruns",
    "amqp_url": "amqp://guest:guest@127.0.0.1:5672/",
    "http_host": "127.0.0.1",
    "http_port": 8080,
    "rate_limit_per_second": 100,
    "rate_limit_burst": 200,
    "trigger_rate_limit_per_second": 20,
    "trigger_rate_limit_burst": 40,
    "step_lease_seconds": 30,
    "heartbeat_seconds": 5,
    "reconcile_seconds": 5,
    "worker_pools": ("default",),
    "worker_concurrency": 8,
    "worker_allow_commands": False,
    # "default the bundled examples"
    "worker_python_allow": ("examples.",),
    "page_token_secret": None,
    "database_owner_url": None,
    "ops_port": None,
    "url": "http://127.0.0.1:8080",
    "api_key": None,
}


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MODELRUNS_* variable of the caller's shell reaches the tests that read the real environment."""
    import os

    for name in list(os.environ):
        if name.startswith(PREFIX):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("field", "value"), sorted(DOCUMENTED_DEFAULTS.items()))
def test_documented_defaults(field: str, value: object) -> None:
    assert getattr(load_settings({}), field) == value


def test_every_documented_name_is_a_setting() -> None:
    assert set(DOCUMENTED_DEFAULTS) <= set(Settings.model_fields)


def test_owner_url_defaults_to_the_database_url() -> None:
    assert load_settings({}).owner_url == DOCUMENTED_DEFAULTS["database_url"]
    settings = load_settings(
        {
            "MODELRUNS_DATABASE_URL": "postgresql://app@db/x",
            "MODELRUNS_DATABASE_OWNER_URL": "postgresql://owner@db/x",
        }
    )
    assert settings.owner_url == "postgresql://owner@db/x"
    assert settings.database_url == "postgresql://app@db/x"


def test_values_from_the_mapping() -> None:
    settings = load_settings(
        {
            "MODELRUNS_HTTP_PORT": "9000",
            "MODELRUNS_RATE_LIMIT_PER_SECOND": "2.5",
            "MODELRUNS_WORKER_ALLOW_COMMANDS": "true",
            "MODELRUNS_OPS_PORT": "9100",
            "MODELRUNS_PAGE_TOKEN_SECRET": "s3cret",
            "MODELRUNS_API_KEY": "mr_key",
            "PATH": "/usr/bin",
            "OTHER_PREFIX_X": "1",
        }
    )
    assert settings.http_port == 9000
    assert settings.rate_limit_per_second == 2.5
    assert settings.worker_allow_commands is True
    assert settings.ops_port == 9100
    assert settings.page_token_secret is not None
    assert settings.page_token_secret.get_secret_value() == "s3cret"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "mr_key"
    assert "s3cret" not in repr(settings) and "mr_key" not in repr(settings)


@pytest.mark.parametrize(
    ("raw", "value"), [("true", True), ("1", True), ("yes", True), ("false", False), ("0", False)]
)
def test_booleans(raw: str, value: bool) -> None:
    assert load_settings({"MODELRUNS_WORKER_ALLOW_COMMANDS": raw}).worker_allow_commands is value


@pytest.mark.parametrize(
    ("raw", "pools"),
    [
        ("default", ("default",)),
        ("gpu,cpu", ("gpu", "cpu")),
        (" gpu , cpu ", ("gpu", "cpu")),
        ("gpu,,cpu,", ("gpu", "cpu")),
        ("gpu.large,cpu_small-2", ("gpu.large", "cpu_small-2")),
    ],
)
def test_pools_are_a_comma_list(raw: str, pools: tuple[str, ...]) -> None:
    assert load_settings({"MODELRUNS_WORKER_POOLS": raw}).worker_pools == pools


@pytest.mark.parametrize(
    ("raw", "prefixes"),
    [
        ("examples.", ("examples.",)),
        ("examples.,mycorp.models.", ("examples.", "mycorp.models.")),
        ("", ()),
    ],
)
def test_python_allow_is_a_comma_list(raw: str, prefixes: tuple[str, ...]) -> None:
    assert load_settings({"MODELRUNS_WORKER_PYTHON_ALLOW": raw}).worker_python_allow == prefixes


def test_comma_lists_from_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, clean_environ: None
) -> None:
    monkeypatch.setenv("MODELRUNS_WORKER_POOLS", "gpu, cpu")
    monkeypatch.setenv("MODELRUNS_WORKER_PYTHON_ALLOW", "examples.,pkg.")
    settings = load_settings()
    assert settings.worker_pools == ("gpu", "cpu")
    assert settings.worker_python_allow == ("examples.", "pkg.")


@pytest.mark.parametrize("raw", ["GPU", "gpu,-cpu", "gpu pool", "", ",", "a" * 65])
def test_invalid_pools_are_refused(raw: str) -> None:
    with pytest.raises(ConfigurationError):
        load_settings({"MODELRUNS_WORKER_POOLS": raw})


@pytest.mark.parametrize(
    ("environ", "unknown"),
    [
        ({"MODELRUNS_DATABSE_URL": "postgresql://x"}, ["MODELRUNS_DATABSE_URL"]),
        ({"MODELRUNS_HTTP_PORT": "1", "MODELRUNS_WORKERS": "3"}, ["MODELRUNS_WORKERS"]),
        ({"MODELRUNS_": "x"}, ["MODELRUNS_"]),
        ({"MODELRUNS_database_url": "postgresql://x"}, ["MODELRUNS_database_url"]),
        ({"MODELRUNS_B": "1", "MODELRUNS_A": "2"}, ["MODELRUNS_A", "MODELRUNS_B"]),
    ],
)
def test_unknown_variables_are_refused(environ: dict[str, str], unknown: list[str]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)
    assert str(caught.value) == f"unknown setting(s): {', '.join(unknown)}"


def test_unknown_variables_are_refused_from_the_process_environment(
    monkeypatch: pytest.MonkeyPatch, clean_environ: None
) -> None:
    monkeypatch.setenv("MODELRUNS_HEARTBEAT_SECOND", "1")
    with pytest.raises(ConfigurationError, match="MODELRUNS_HEARTBEAT_SECOND"):
        load_settings()


def test_an_explicit_mapping_is_all_that_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # The process's own variables must not leak into settings built from a given mapping.
    monkeypatch.setenv("MODELRUNS_HTTP_PORT", "1234")
    monkeypatch.setenv("MODELRUNS_WORKER_POOLS", "leaked")
    settings = load_settings({"MODELRUNS_HTTP_HOST": "0.0.0.0"})
    assert settings.http_port == 8080
    assert settings.worker_pools == ("default",)
    assert settings.http_host == "0.0.0.0"
    assert type(settings) is Settings


def test_the_process_environment_is_read_without_a_mapping(
    monkeypatch: pytest.MonkeyPatch, clean_environ: None
) -> None:
    monkeypatch.setenv("MODELRUNS_HTTP_PORT", "1234")
    assert load_settings().http_port == 1234


def test_overrides_win(clean_environ: None) -> None:
    assert load_settings({"MODELRUNS_HTTP_PORT": "1"}, http_port=2).http_port == 2
    assert load_settings(http_port=3).http_port == 3


@pytest.mark.parametrize(
    ("heartbeat", "lease"),
    [("30", "30"), ("31", "30"), ("5", "5"), ("5", "4.9")],
)
def test_heartbeat_must_be_shorter_than_the_lease(heartbeat: str, lease: str) -> None:
    with pytest.raises(ConfigurationError, match="HEARTBEAT"):
        load_settings({"MODELRUNS_HEARTBEAT_SECONDS": heartbeat, "MODELRUNS_STEP_LEASE_SECONDS": lease})


def test_heartbeat_just_inside_the_lease() -> None:
    settings = load_settings({"MODELRUNS_HEARTBEAT_SECONDS": "29.9", "MODELRUNS_STEP_LEASE_SECONDS": "30"})
    assert settings.heartbeat_seconds < settings.step_lease_seconds


def test_default_heartbeat_against_a_short_lease_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        load_settings({"MODELRUNS_STEP_LEASE_SECONDS": "5"})


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MODELRUNS_HTTP_PORT", "65536"),
        ("MODELRUNS_HTTP_PORT", "-1"),
        ("MODELRUNS_HTTP_PORT", "eighty"),
        ("MODELRUNS_OPS_PORT", "70000"),
        ("MODELRUNS_WORKER_CONCURRENCY", "0"),
        ("MODELRUNS_RATE_LIMIT_PER_SECOND", "0"),
        ("MODELRUNS_RATE_LIMIT_BURST", "0"),
        ("MODELRUNS_TRIGGER_RATE_LIMIT_BURST", "0"),
        ("MODELRUNS_STEP_LEASE_SECONDS", "0"),
        ("MODELRUNS_HEARTBEAT_SECONDS", "-1"),
        ("MODELRUNS_RECONCILE_SECONDS", "0"),
        ("MODELRUNS_API_KEY_CACHE_SECONDS", "2"),
        ("MODELRUNS_WORKER_ALLOW_COMMANDS", "maybe"),
    ],
)
def test_invalid_values_are_refused(name: str, raw: str) -> None:
    with pytest.raises(ConfigurationError):
        load_settings({name: raw})


def test_settings_are_frozen() -> None:
    settings = load_settings({})
    with pytest.raises(ValidationError):
        settings.http_port = 1  # type: ignore[misc]


def test_unknown_fields_are_refused_in_code_too() -> None:
    with pytest.raises(ValidationError):
        Settings(bogus=1)  # type: ignore[call-arg]
