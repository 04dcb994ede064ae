"""Where the iris pipeline keeps what its steps hand each other on disk.

Steps exchange small JSON outputs through the orchestrator, but a model file does not belong in a
message: `train` writes it under a directory named after the run, and later steps find it there.

The `command` step (the pytest suite) cannot read the run's parameters and runs with a minimal
environment of its own (its TMPDIR is its scratch directory), so both sides are told the same root
explicitly: the run parameter `artifacts_root` for the python steps, and `env.ARTIFACTS_ROOT` for
the command, with the run id (MODELRUNS_RUN_ID, set by the worker) naming the run's directory
under it. examples/iris-pipeline.json sets both to /tmp/modelruns-artifacts; steps on several
machines need a root on storage they all mount.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODEL_FILE = "model.pkl"
REPORT_FILE = "report.json"
ROOT_NAME = "modelruns-artifacts"


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / ROOT_NAME


def run_dir(run_id: str, parameters: Mapping[str, Any] | None = None) -> Path:
    """The run's directory as a python step sees it: `parameters.artifacts_root` or the default root."""
    root = (parameters or {}).get("artifacts_root")
    base = Path(root) if isinstance(root, str) and root else default_root()
    return base / run_id


def model_path_from_env(environ: Mapping[str, str] | None = None) -> Path:
    """The model file as a command step sees it: MODEL_PATH when given (a run by hand), else the
    run's directory, named by MODELRUNS_RUN_ID, under ARTIFACTS_ROOT (or the default root)."""
    env = os.environ if environ is None else environ
    explicit = env.get("MODEL_PATH")
    if explicit:
        return Path(explicit)
    run_id = env.get("MODELRUNS_RUN_ID")
    if not run_id:
        raise LookupError("set MODEL_PATH, or run as a modelruns command step (MODELRUNS_RUN_ID)")
    root = env.get("ARTIFACTS_ROOT")
    return (Path(root) if root else default_root()) / run_id / MODEL_FILE
