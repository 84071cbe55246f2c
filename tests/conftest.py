"""Shared fixtures. Real files come from ../shared beside the checkout; tests that need
them skip with a clear reason where it is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATA = Path(__file__).resolve().parent / "data"


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared not found ({path}): real camera samples are needed")
    return path


@pytest.fixture
def nef_dir(tmp_path: Path) -> Path:
    """A writable copy of ../shared/samples/nef (13 NEFs with real photographs as previews)."""
    source = shared_path("samples", "nef")
    target = tmp_path / "shoot"
    target.mkdir()
    for nef in sorted(source.glob("*.NEF")):
        shutil.copy2(nef, target / nef.name)
        os.chmod(target / nef.name, 0o644)
    return target


def copy_file(source: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or source.name)
    shutil.copy2(source, target)
    os.chmod(target, 0o644)
    return target


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh process, as a user would."""
    full_env = dict(os.environ)
    full_env.setdefault(
        "XDG_CONFIG_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "postselectd-test-noconfig")
    )
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "postselectd", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return path
