"""Running the `vna` command as a user would: a real subprocess of this checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def vna_env(settings: object | None = None, **extra: str) -> dict[str, str]:
    """Environment for a `vna` subprocess: this checkout first on the path, the settings of
    a test archive as VNA_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VNA_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONWARNINGS"] = "ignore"
    if settings is not None:
        env["VNA_DATA_DIR"] = str(settings.data_dir)  # type: ignore[attr-defined]
        if settings.index_url:  # type: ignore[attr-defined]
            env["VNA_INDEX_URL"] = settings.index_url  # type: ignore[attr-defined]
        if settings.store_url:  # type: ignore[attr-defined]
            env["VNA_STORE_URL"] = settings.store_url  # type: ignore[attr-defined]
    env.update(extra)
    return env


def run_vna(
    *args: str, settings: object | None = None, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m vna ARGS`` with the test archive's settings; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "vna", *args],
        env=vna_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
