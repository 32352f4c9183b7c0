"""Run records: one small JSON per full run under `results/`, and the README results table built from them."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

from .data import PROJECT_ROOT
from .engine import History, device_name
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


def save_run_record(name: str, model: nn.Module, history: History, *, data_source: str,
                    device: torch.device | str, wall_seconds: float, results_dir: str | os.PathLike | None = None,
                    extra: dict | None = None) -> Path:
    """Write `results/<name>.json`: model, parameters, epochs, best/final test accuracy, wall time, device,
    torch version, data source and git commit. Returns the path."""
    record = {
        "name": name,
        "model": type(model).__name__,
        "parameters": count_parameters(model),
        "epochs": len(history),
        "best_test_acc": history.best("test_acc"),
        "final_test_acc": history.final("test_acc"),
        "best_val_acc": history.best("val_acc"),
        "wall_seconds": round(wall_seconds, 1),
        "device": device_name(device),
        "torch": torch.__version__,
        "data": data_source,
        "git_commit": git_commit(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "history": history.records,
        **(extra or {}),
    }
    folder = PROJECT_ROOT / (results_dir if results_dir is not None else "results")  # relative: to the project
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(record, indent=1))
    return path
