"""`make test` on a newcomer's machine: without a Python 3.13 the Colab twin is skipped with a one-line notice and
the main suite decides; where CI is set, a missing 3.13 is an error before any test runs.

The Makefile's own `test` target runs here, with the main suite cut to one small test file (`TESTS=...`) and
`.venv` taken as installed (`make -o`), once with `COLAB_PYTHON=` on the command line and once with nothing to
find: a HOME without pyenv and a PATH without python3.13 or uv.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

import helpers as h

MAKE = shutil.which("make")
INSTALLED = h.PROJECT_ROOT / ".venv" / ".installed"
pytestmark = pytest.mark.skipif(MAKE is None or not INSTALLED.exists(),
                                reason="needs make and the project's .venv (make setup)")
NOTICE = "Colab twin skipped: no Python 3.13 found for the Colab twin (.venv-colab): uv python install 3.13"


def run_make_test(tmp_path, how: str, ci: bool) -> subprocess.CompletedProcess:
    """`make test` on the main suite cut to tests/test_schedules.py, in one process (`XDIST=`), with no Python 3.13
    to be had."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "CI", "COLAB_PYTHON", "TESTS")}
    variables = ["TESTS=tests/test_schedules.py", "XDIST="]
    if how == "command line":
        variables.append("COLAB_PYTHON=")
    else:  # nothing to find: no pyenv under HOME, nothing on the PATH (the recipes name their programs)
        empty = tmp_path / "bin"
        empty.mkdir()
        env.update(HOME=str(tmp_path), PATH=str(empty))
    if ci:
        env["CI"] = "true"
    return subprocess.run([MAKE, "-C", str(h.PROJECT_ROOT), "-o", ".venv/.installed", "test", *variables],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("how", ["command line", "nothing on the PATH"])
def test_without_python_313_make_test_runs_the_main_suite_and_passes(tmp_path, how):
    done = run_make_test(tmp_path, how, ci=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "tests/test_schedules.py" in done.stdout and " passed" in done.stdout, "the main suite ran"
    notices = [line for line in done.stdout.splitlines() if line.startswith("Colab twin skipped")]
    assert len(notices) == 1 and notices[0].startswith(NOTICE), notices
    assert ".venv-colab/bin/python -m pytest" not in done.stdout


@pytest.mark.parametrize("how", ["command line", "nothing on the PATH"])
def test_in_ci_a_missing_python_313_is_an_error_before_any_test(tmp_path, how):
    done = run_make_test(tmp_path, how, ci=True)
    assert done.returncode != 0
    assert "CI runs the Colab twin: no Python 3.13 found" in done.stderr
    assert "passed" not in done.stdout and "pytest" not in done.stdout


def test_a_python_313_installed_by_uv_is_found(tmp_path):
    """After `uv python install 3.13` (the notice's advice) `make` finds that Python through `uv python find`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    uv = bin_dir / "uv"  # stands for uv: answers `uv python find 3.13` as uv does once 3.13 is installed
    uv.write_text('#!/bin/sh\n[ "$*" = "python find 3.13" ] && echo /opt/uv/cpython-3.13/bin/python3.13\n')
    uv.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "COLAB_PYTHON")}
    env.update(HOME=str(tmp_path), PATH=str(bin_dir))
    done = subprocess.run([MAKE, "-C", str(h.PROJECT_ROOT), "-n", "setup-colab", f"COLAB_VENV={tmp_path / 'venv'}"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"/opt/uv/cpython-3.13/bin/python3.13 -m venv {tmp_path / 'venv'}" in done.stdout


def test_gpu_bundle_in_a_plain_clone_says_in_one_line_what_it_needs(tmp_path):
    """The offline GPU runner's bundle needs its script beside the clone; without it, one line and exit 2."""
    done = subprocess.run([MAKE, "-C", str(h.PROJECT_ROOT), "gpu-bundle", f"GPU_BUNDLE_SCRIPT={tmp_path}/none.sh"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    [line] = [text for text in done.stderr.splitlines() if not text.startswith(("make:", "make["))]
    assert line.startswith(f"make gpu-bundle is for this project's offline GPU runner: it needs {tmp_path}/none.sh")
