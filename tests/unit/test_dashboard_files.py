"""The dashboard's files: shipped as package data, self-contained, with nothing inline."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from gateway.dashboard import UI_DIR

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(p for p in UI_DIR.rglob("*") if p.is_file())
SCRIPTS = [p for p in FILES if p.suffix == ".js"]


def test_every_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    gateway_patterns = patterns["gateway"]
    assert FILES
    for path in FILES:
        relative = path.relative_to(UI_DIR.parent).as_posix()
        assert any(fnmatch(relative, p) and relative.count("/") == p.count("/") for p in gateway_patterns), (
            relative
        )


def test_nothing_is_fetched_from_elsewhere() -> None:
    # The SVG namespace is a name, not a fetch.
    foreign = re.compile(r"(https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]{2,}", re.IGNORECASE)
    for path in FILES:
        text = path.read_text()
        for line in text.splitlines():
            if line.lstrip().startswith("//"):
                continue  # a comment
            assert not foreign.search(line), (path.name, line)


def test_the_page_has_no_inline_script_or_style() -> None:
    html = (UI_DIR / "index.html").read_text()
    assert "<style" not in html
    assert " style=" not in html
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    for tag in re.findall(r"<script[^>]*>", html):
        assert 'src="' in tag, tag
    assert not re.search(r"<script[^>]*>[^<]+</script>", html)


def test_scripts_build_the_page_from_text_and_send_the_key_only_as_a_header() -> None:
    for path in SCRIPTS:
        text = path.read_text()
        assert "innerHTML" not in text, path.name
        assert "EventSource(" not in text, path.name
        assert "localStorage" not in text, path.name
        for module in re.findall(r'from "\./([\w-]+\.js)"', text):
            assert (path.parent / module).is_file(), (path.name, module)
