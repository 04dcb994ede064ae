"""A step's scratch directory: made on first use only, private, one per attempt."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

from worker.context import Scratch


def test_nothing_is_made_until_the_step_asks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    scratch = Scratch(root, "step-1-")
    assert scratch.path is None and not root.exists()
    made = scratch.get()
    assert made.parent == root and made.name.startswith("step-1-") and made.is_dir()
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert scratch.get() == made == scratch.path


def test_threads_asking_at_once_share_one_directory(tmp_path: Path) -> None:
    scratch = Scratch(tmp_path, "step-")
    seen: list[Path] = []
    threads = [threading.Thread(target=lambda: seen.append(scratch.get())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 1
    assert list(tmp_path.iterdir()) == [seen[0]]


def test_two_attempts_get_two_directories(tmp_path: Path) -> None:
    assert Scratch(tmp_path, "s-1-").get() != Scratch(tmp_path, "s-1-").get()


def test_an_existing_directory_is_used_as_it_is(tmp_path: Path) -> None:
    scratch = Scratch.existing(tmp_path)
    assert scratch.get() == tmp_path
    assert list(tmp_path.iterdir()) == []
