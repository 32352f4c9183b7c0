"""Shared fixtures: tiny CIFAR-format data made in the test, and the real offline copy when present."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import helpers as h

REAL_ROOT = Path(os.environ.get("CIFAR10_ROOT") or h.PROJECT_ROOT / "data")


@pytest.fixture(autouse=True)
def own_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test with a cache folder of its own (`h.context.local_cache`, where checkpoints go by default): never
    this machine's, whose checkpoints of real runs would change what a test sees, and which a test must not touch."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("CHECKPOINT_DIR", raising=False)
    return cache


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A folder holding `cifar-10-batches-py` with 100 train / 40 test synthetic images."""
    root = tmp_path_factory.mktemp("cifar")
    h.write_synthetic_cifar10(root, n_train=100, n_test=40)
    return root


@pytest.fixture
def real_root() -> Path:
    """The real (offline JPEG-75) CIFAR-10 copy; skips the test when it is absent."""
    if not (REAL_ROOT / h.data.BATCH_DIR / h.data.TEST_FILE).exists():
        pytest.skip(f"real CIFAR-10 not found under {REAL_ROOT} (make data puts it there, or set CIFAR10_ROOT)")
    return REAL_ROOT


# The longest tests, started first: pytest-xdist hands out tests in this order, so a late long one would run alone
# at the end while the other worker idles (the real-data test takes 2 to 4 minutes on one thread).
LONGEST_FIRST = ("tests/test_real_data.py", "executed-03_resnet18_lrfinder_gradcam", "executed-05_kaggle_resnet")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the marks
def pytest_collection_modifyitems(items):
    """Under pytest-xdist (`make test`: `--dist loadgroup`), the tests of one executed notebook
    (test_executed_notebooks.py's `executed` fixture) run in one worker, so that the notebook is executed once; the
    longest tests come first (`LONGEST_FIRST`)."""
    def rank(item) -> int:
        names = [item.nodeid.split("::")[0]] + [m.args[0] for m in item.iter_markers("xdist_group")]
        return next((i for i, long in enumerate(LONGEST_FIRST) if long in names), len(LONGEST_FIRST))

    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and "executed" in callspec.params:
            item.add_marker(pytest.mark.xdist_group(f"executed-{callspec.params['executed']}"))
    items.sort(key=rank)


# Notebooks under tests/ are data (hand-made outputs for the cleaner), not notebooks for `pytest --nbval` to run.
collect_ignore_glob = ["fixtures/*.ipynb"]
