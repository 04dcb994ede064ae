"""Where a client finds the API and its key: arguments, then `MODELRUNS_URL` / `MODELRUNS_API_KEY`,
then a TOML file (`MODELRUNS_CONFIG`, else `$XDG_CONFIG_HOME/modelruns/config.toml`, else
`~/.config/modelruns/config.toml`) holding `url = "..."` and `api_key = "..."`."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigurationError

DEFAULT_URL = "http://127.0.0.1:8080"
FILE_KEYS = frozenset({"url", "api_key"})


@dataclass(frozen=True)
class ClientConfig:
    url: str = DEFAULT_URL
    api_key: str | None = None


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get("MODELRUNS_CONFIG"):
        return Path(environ["MODELRUNS_CONFIG"]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "modelruns" / "config.toml"


def read_file(path: Path, *, required: bool) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigurationError(f"the config file {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigurationError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"the config file {path} is not TOML: {exc}") from exc
    unknown = sorted(set(values) - FILE_KEYS)
    if unknown:
        raise ConfigurationError(f"the config file {path} has unknown keys: {', '.join(unknown)}")
    wrong = sorted(k for k, v in values.items() if not isinstance(v, str))
    if wrong:
        raise ConfigurationError(f"the config file {path}: {', '.join(wrong)} must be strings")
    return dict(values)


def load_config(
    *,
    url: str | None = None,
    api_key: str | None = None,
    environ: Mapping[str, str] | None = None,
    path: str | Path | None = None,
) -> ClientConfig:
    """The first value found for each of url and api_key: the arguments, the environment, the file.
    An explicit `path` (or MODELRUNS_CONFIG) must exist; the default file may be absent."""
    env = os.environ if environ is None else environ
    required = path is not None or bool(env.get("MODELRUNS_CONFIG"))
    file = read_file(Path(path).expanduser() if path is not None else config_path(env), required=required)
    return ClientConfig(
        url=url or env.get("MODELRUNS_URL") or file.get("url") or DEFAULT_URL,
        api_key=api_key or env.get("MODELRUNS_API_KEY") or file.get("api_key") or None,
    )
