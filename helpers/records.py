"""Run records: one small JSON per full run under `results/`; `helpers.results` builds the README table from them."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from .data import PROJECT_ROOT
from .devices import describe_precision, device_name
from .engine import History
from .models import count_parameters


def git_commit() -> str | None:
    """The checked-out commit of the project (with '-dirty' if tracked files changed), or None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def record_path(name: str, seed: int = 0, results_dir: str | os.PathLike | None = None) -> Path:
    """Where the run record of notebook `name` with `seed` goes: `results/<name>.json`, `<name>_seed<k>.json`."""
    folder = PROJECT_ROOT / (results_dir if results_dir is not None else "results")  # relative: to the project
    return folder / (f"{name}.json" if seed == 0 else f"{name}_seed{seed}.json")


def save_run_record(name: str, model: nn.Module, history: History, *, data_source: str,
                    device: torch.device | str, wall_seconds: float, seed: int, smoke: bool,
                    results_dir: str | os.PathLike | None = None, extra: dict | None = None) -> Path:
    """Write the run record of notebook `name` (see `record_path`) and return its path.

    It holds the model, parameters, epochs, best and final test accuracy of the raw and EMA weights, what `fit`
    measured on the returned model (`history.final_model`: flip TTA too), wall time, device, torch version, data
    source, seed, git commit, whether it was a smoke run, the sittings it was trained in (`History.sittings`) and
    the whole history. `release_model` adds the entry of the released weights ("release": file, sha256, what they
    measured).
    """
    record = {
        "name": name,
        "model": type(model).__name__,
        "parameters": count_parameters(model),
        "epochs": len(history),
        "best_test_acc": history.best("test_acc"),
        "final_test_acc": history.final("test_acc"),
        "best_val_acc": history.best("val_acc"),
        "best_test_acc_ema": history.best("test_acc_ema"),
        "final_test_acc_ema": history.final("test_acc_ema"),
        "final_model": history.final_model,
        "wall_seconds": round(wall_seconds, 1),
        "device": device_name(device),
        "precision": describe_precision(device),
        "torch": torch.__version__,
        "data": data_source,
        "seed": seed,
        "smoke": smoke,
        "git_commit": git_commit(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "sittings": history.sittings,
        "history": history.records,
        **(extra or {}),
    }
    path = record_path(name, seed, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    keep_released_record(path, superseded_by=record["finished"])
    path.write_text(json.dumps(record, indent=1))
    return path


def sha256_of(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def keep_released_record(path: Path, superseded_by: str) -> Path | None:
    """Before a new run's record replaces the one at `path`: if the old one vouches for the released weights still
    held (its release's sha256 is the file's), keep it beside as `<stem>_<its finish date>_<time>.json`, marked
    `superseded_by` the new run's finish time, so that those weights stay checkable (`release.check_release`)
    while the results table shows the new run. Returns where it was kept, or None when nothing needs keeping."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    release = old.get("release") or {}
    weights = PROJECT_ROOT / release.get("file", "")
    if not release.get("released") or not weights.is_file() or sha256_of(weights) != release.get("sha256"):
        return None
    finished = old.get("finished", "")
    kept = path.with_name(f"{path.stem}_{finished[:10]}_{finished[11:13]}{finished[14:16]}.json")
    kept.write_text(json.dumps({**old, "superseded_by": superseded_by}, indent=1))
    return kept
