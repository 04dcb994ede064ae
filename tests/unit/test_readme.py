"""The README documents every setting and the commands a new user starts with."""

from __future__ import annotations

from pathlib import Path

from shared.settings import PREFIX, Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [
        PREFIX + name.upper()
        for name in Settings.model_fields
        if f"| `{PREFIX}{name.upper()}` |" not in README
    ]
    assert not missing, f"README's configuration table lacks {missing}"


def test_quickstart_commands() -> None:
    assert "make demo" in README and "make test" in README
