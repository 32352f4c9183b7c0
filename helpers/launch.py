"""`make run`: a notebook's full run on a CUDA GPU, wherever what is left of it takes at most `FULL_RUN_HOURS`, or
in sittings of a given budget; else an estimate and a quick reduced run instead.

    python -m helpers.launch notebooks/01_resnet18_baseline.ipynb [more notebooks] [--force] [--hours 2.5]

A full run executes the notebook with papermill into `runs/partial/` and, once it has run to the end, moves it
over the stored notebook, so that its outputs and run record are saved (every execution through
`helpers.notebook.execute`: its figures saved, its outputs cleaned for a reader); a sitting that stops early leaves
the stored notebook as it was. The launcher
1. says which device and precision it found, where the notebook's checkpoint is and whether it resumes (after
   which epoch) or starts fresh; a checkpoint of another run (another notebook or other parameters) stops it with
   one line;
2. on CUDA, or with `--force`, runs the notebook in full;
3. with `--hours H` (`make run HOURS=H`), runs it in full with that time budget (the notebook's `MAX_HOURS`):
   training stops at the last epoch boundary that fits, and the same command resumes it from the checkpoint, on
   this clone or another one on the same machine (`h.storage_dir`); a budget smaller than the sitting's first
   epoch is refused before anything starts;
4. elsewhere (a CPU) times a few training steps of the notebook's model, in the precision, memory format and
   batch size the run would use, and estimates the full run's time and what is left of it; at most
   `FULL_RUN_HOURS` (3 h: what one sitting at a machine allows) starts it in full;
5. else runs a QUICK run: the same notebook on real data, reduced (a few thousand images, a few epochs, sized to
   take about `--minutes` minutes on this device), written to `runs/quick/` (never over the notebook) under a
   banner that says what it is, and says how to run the full one anyway, at once or in sittings.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import nbformat
import torch
from torch import nn

from .data import FULL_TEST, FULL_TRAIN, PROJECT_ROOT, shown_path
from .devices import (autocast, autocast_dtype, channels_last_default, describe_precision, device_name,
                      select_device, synchronize, to_device)
from .loaders import CPU_EVAL_BATCH
from .models import FACTORIES
from .engine import CheckpointError
from .notebook import execute
from .training_run import TrainingRun

QUICK_DIR = Path("runs") / "quick"  # relative to the project root; git-ignored
PARTIAL_DIR = Path("runs") / "partial"  # a full run's executed notebook until it has run to the end
QUICK_EPOCHS = 3
QUICK_TEST_IMAGES = 1000
QUICK_BATCH_SIZE = 32  # small batches: more steps in a short run
QUICK_LR_TEST = {"LR_TEST_ITERATIONS": 60, "LR_TEST_BATCH_SIZE": 16}
QUICK_MIN_IMAGES, QUICK_MAX_IMAGES = 1000, 20000
# What a run spends outside model compute: the kernel's start, imports, reading the data, the figures. Measured on
# the quick run of notebook 01 on a 2-core CPU: 15 s (9.5 s outside the cells, 5.5 s in the small cells).
NOTEBOOK_OVERHEAD_SECONDS = 15.0
# Forward passes over the test set after training: fit's final measurement of the returned model (plain and
# mirrored images in one pass over the loader: 2) and of its EMA (2 more), and the notebook's evaluation cell (1).
FINAL_PASSES, FINAL_PASSES_EMA = 3, 5
FULL_RUN_HOURS = 3.0  # a full run estimated at most this long starts by itself off CUDA too
TIMING_BATCH = 128  # largest batch timed for the estimate (a CPU takes seconds per step at 512)


@dataclass(frozen=True)
class Timing:
    """Seconds of model compute per image on a device: a training step, and an evaluation forward pass."""

    train: float
    eval: float


@dataclass(frozen=True)
class RunSize:
    """The work of one run, in images: trained per epoch, evaluated per epoch (validation and test), trained by the
    LR range test, and the test set measured at the end; `ema`: an EMA of the weights is evaluated beside them."""

    epochs: int
    train_images: int
    eval_images: int
    lr_test_images: int = 0
    test_images: int = 0
    ema: bool = False

    def seconds(self, timing: Timing) -> float:
        """The run's wall time at `timing`: its model compute (every epoch's training and evaluations, the EMA's
        too, the range test, the final passes over the test set) and the notebook's fixed overhead."""
        per_epoch = self.train_images * timing.train + self.eval_images * timing.eval * (2 if self.ema else 1)
        final = self.test_images * timing.eval * (FINAL_PASSES_EMA if self.ema else FINAL_PASSES)
        return (NOTEBOOK_OVERHEAD_SECONDS + self.epochs * per_epoch + self.lr_test_images * timing.train + final)


def full_run_parameters(notebook: nbformat.NotebookNode) -> dict:
    """The notebook's full-run defaults: its `parameters` cell executed with smoke mode off."""
    cell = next((c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    import helpers  # the cell reads `h.smoke_mode()`
    smoke = os.environ.pop("SMOKE", None)
    try:
        namespace: dict = {"h": helpers}
        exec(cell.source, namespace)  # noqa: S102 - the project's own notebook
    finally:
        if smoke is not None:
            os.environ["SMOKE"] = smoke
    return {k: v for k, v in namespace.items() if k.isupper()}


def notebook_model(notebook: nbformat.NotebookNode) -> str:
    """The name (a key of `models.FACTORIES`) of the model the notebook builds with `h.models.<name>(...)`."""
    names = {m for c in notebook.cells if c.cell_type == "code"
             for m in re.findall(r"\bh\.models\.(\w+)\(", c.source)}
    found = sorted(names & set(FACTORIES))
    if len(found) != 1:
        raise ValueError(f"expected one model built as h.models.<name>(...), found {found or 'none'}")
    return found[0]


def full_run_size(params: dict) -> RunSize:
    """The work of a notebook's full run, from its parameters (early stopping may end it sooner)."""
    images = params.get("TRAIN_SUBSET") or FULL_TRAIN
    val = params.get("VAL_SIZE") or 0
    lr_test = params.get("LR_TEST_ITERATIONS", 0) * params.get("LR_TEST_BATCH_SIZE", 0)
    test = params.get("TEST_SUBSET") or FULL_TEST
    return RunSize(params["EPOCHS"], images - val, val + test, lr_test, test, bool(params.get("EMA_DECAY")))


def time_model(model: nn.Module, device: torch.device, batch_size: int = 32, steps: int = 2) -> Timing:
    """Seconds per image of SGD training steps (at `batch_size`) and of evaluation forward passes (at the
    evaluation loader's batch size: at most `CPU_EVAL_BATCH` on a CPU) of `model` on `device`, timed after one
    warm-up step on random images, in the precision and memory format `fit` would use there."""
    amp_dtype = autocast_dtype(device)
    channels_last = channels_last_default(device, model, amp_dtype)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,)), device, channels_last)

    x, y = images(batch_size)
    model.train()
    for step in range(steps + 1):
        if step == 1:
            synchronize(device)
            began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    synchronize(device)
    train = (time.perf_counter() - began) / (steps * batch_size)
    x, _ = images(CPU_EVAL_BATCH if device.type == "cpu" else batch_size)
    model.eval()
    with torch.no_grad(), autocast(device, amp_dtype):
        model(x)  # warm-up: the first call at a new batch size picks its kernels
        synchronize(device)
        began = time.perf_counter()
        model(x)
        synchronize(device)
    return Timing(train, (time.perf_counter() - began) / len(x))


def quick_run(params: dict, timing: Timing, device: torch.device, minutes: float) -> tuple[dict, RunSize]:
    """Parameters of a quick run sized to take about `minutes` at `timing` (`RunSize.seconds`), and its size.

    Only parameters the notebook has are set: fewer epochs and images, batch 32, a short LR range test, warm-up
    and peak in the first epoch (the cosine counting from its start), no checkpoint, outputs under `runs/quick/`.
    """
    lr_test = (QUICK_LR_TEST["LR_TEST_ITERATIONS"] * QUICK_LR_TEST["LR_TEST_BATCH_SIZE"]
               if "LR_TEST_ITERATIONS" in params else 0)
    val_fraction = 0.1 if "VAL_SIZE" in params else 0.0
    ema = bool(params.get("EMA_DECAY"))
    fixed = RunSize(QUICK_EPOCHS, 0, QUICK_TEST_IMAGES, lr_test, QUICK_TEST_IMAGES, ema).seconds(timing)
    per_image = QUICK_EPOCHS * ((1 - val_fraction) * timing.train
                                + val_fraction * timing.eval * (2 if ema else 1))
    images = int(min(max((minutes * 60 - fixed) / per_image, QUICK_MIN_IMAGES), QUICK_MAX_IMAGES)) // 100 * 100
    val = int(images * val_fraction)
    overrides = {"EPOCHS": QUICK_EPOCHS, "TRAIN_SUBSET": images, "TEST_SUBSET": QUICK_TEST_IMAGES,
                 "VAL_SIZE": val, "BATCH_SIZE": QUICK_BATCH_SIZE, **QUICK_LR_TEST, "PEAK_EPOCH": 1,
                 "WARMUP_EPOCHS": 1, "COSINE_START_EPOCH": 0, "DEVICE": str(device), "CHECKPOINT": None,
                 "RESULTS_DIR": str(QUICK_DIR / "results"), "KAGGLE_DIR": str(QUICK_DIR / "kaggle")}
    quick = {k: v for k, v in overrides.items() if k in params}
    return quick, RunSize(QUICK_EPOCHS, images - val, val + QUICK_TEST_IMAGES, lr_test, QUICK_TEST_IMAGES, ema)


def format_duration(seconds: float) -> str:
    """'40 s', '3.5 min', '12 min', '3.5 h' or '2.1 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 10 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def quick_banner(path: Path, quick: dict, size: RunSize, device: torch.device, full_estimate: str) -> str:
    """The markdown cell on top of a quick run's notebook: what it is, what it is not, how to run the full one."""
    settings = ", ".join(f"`{k} = {v!r}`" for k, v in quick.items())
    return (f"> **QUICK {device.type.upper()} RUN: not the full result.** No CUDA GPU was found and the full run "
            f"would take more than {FULL_RUN_HOURS:g} h here, so `make run` ran this notebook reduced: "
            f"{size.train_images:,} training images for {size.epochs} epochs on "
            f"{device_name(device)} ({settings}). Its accuracies come from a few minutes of training and say "
            f"little about what the recipe reaches; the goal verdict at the end is for the full run and does not "
            f"apply here.\n>\n"
            f"> The full run would take {full_estimate} on this device. On a CUDA GPU (or Colab) `make run "
            f"NB={shown_path(path)}` runs it; `make run NB={shown_path(path)} FORCE=1` runs it here anyway.")


class LaunchRefused(RuntimeError):
    """`make run` will not start this run: the message says why and what to do instead."""


def checkpointed_run(path: Path, params: dict, hours: float | None) -> TrainingRun | None:
    """The notebook's `TrainingRun` as its full run would make it (its checkpoint checked: one of another run
    raises `CheckpointError`), or None for a notebook that keeps no checkpoint."""
    checkpoint = params.get("CHECKPOINT")
    if checkpoint is None:
        return None
    return TrainingRun(path.stem, checkpoint, parameters=params, max_hours=hours)


def describe_checkpoint(run: TrainingRun | None, epochs: int) -> str:
    if run is None:
        return "This notebook writes no checkpoint: a stopped run starts over."
    if run.epochs_done is None:
        return (f"Checkpoint {shown_path(run.checkpoint)}: none yet, the run starts fresh (one is written after every "
                f"epoch; the same command resumes a stopped run from it).")
    return (f"Checkpoint {shown_path(run.checkpoint)}: this run's, after epoch {run.epochs_done} of {epochs}: it "
            f"resumes from there" + (" (training is done: the notebook's evaluation runs again)."
                                     if run.epochs_done >= epochs else "."))


def mark_stopped_sitting(path: Path, line: str) -> None:
    """Head the executed copy of a sitting its budget stopped with what it is, in place of papermill's "An
    Exception was encountered" cells: the stop is the budget's, not an error."""
    from papermill.execute import ERROR_MARKER_TAG

    notebook = nbformat.read(path, as_version=4)
    notebook.cells = [c for c in notebook.cells if ERROR_MARKER_TAG not in c.metadata.get("tags", [])]
    banner = nbformat.v4.new_markdown_cell(f"> **ONE SITTING OF A LONGER RUN, not the result:** {line}. Its "
                                           f"training so far is in the checkpoint; the run's notebook is written "
                                           f"by the sitting that finishes it.")
    banner.id = "stopped-sitting-banner"
    notebook.cells.insert(0, banner)
    nbformat.write(notebook, path)


def run_in_full(path: Path, parameters: dict | None) -> Path:
    """Execute notebook `path` in full into `runs/partial/`, moved over `path` once it has run to the end; a sitting
    stopped by its time budget (or by an error) leaves the stored notebook as it was. Returns the executed copy."""
    from papermill.exceptions import PapermillExecutionError

    partial = PROJECT_ROOT / PARTIAL_DIR / path.name
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        execute(str(path), str(partial), parameters=parameters, cwd=str(path.resolve().parent))
    except PapermillExecutionError as err:
        if err.ename != "BudgetReached":
            print(f"The run failed; its executed copy is {shown_path(partial)}, the stored notebook is unchanged.",
                  flush=True)
            raise
        mark_stopped_sitting(partial, err.evalue)
        print(f"{err.evalue}\nThis sitting's executed copy: {shown_path(partial)} (the stored notebook, run record "
              f"and released weights are unchanged until the run finishes).", flush=True)
        return partial
    os.replace(partial, path)
    name_stored_run(path)
    return path


def name_stored_run(path: Path) -> None:
    """Point the papermill metadata of the finished run stored at `path` at `path` itself, project-relative: papermill
    wrote the absolute path of its executed copy in `runs/partial/`, a path of this machine."""
    notebook = nbformat.read(path, as_version=4)
    notebook.metadata.setdefault("papermill", {})["output_path"] = shown_path(path)
    nbformat.write(notebook, path)


def launch(path: Path, device: torch.device, force: bool, minutes: float, hours: float | None = None) -> Path:
    """Run one notebook: full on CUDA, when forced, with a time budget of `hours` (the run in sittings), or when
    what is left of it is estimated at most `FULL_RUN_HOURS`; else quick. Returns the executed notebook's path."""
    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    params = full_run_parameters(notebook)
    if hours is not None and "MAX_HOURS" not in params:
        raise LaunchRefused(f"{shown_path(path)} takes no time budget (it has no MAX_HOURS parameter): run it "
                            f"without HOURS.")
    overrides = {"MAX_HOURS": hours} if hours is not None else None
    run = checkpointed_run(path, {**params, **(overrides or {})}, hours)
    done = (run.epochs_done or 0) if run is not None else 0
    if device.type == "cuda" or force:
        print(f"Full run of {shown_path(path)} on {device} ({device_name(device)}). "
              f"{describe_checkpoint(run, params['EPOCHS'])}", flush=True)
        return run_in_full(path, overrides)
    model = notebook_model(notebook)
    timing = time_model(FACTORIES[model](), device, batch_size=min(params.get("BATCH_SIZE", 32), TIMING_BATCH))
    full = full_run_size(params)
    full_estimate = f"about {format_duration(full.seconds(timing))}"
    print(f"{path.name}: the full run ({full.epochs} epochs of {full.train_images:,} training images, "
          f"{full.eval_images:,} evaluated per epoch) would take {full_estimate} here ({model}: "
          f"{timing.train * 1e3:.1f} ms per training image, {timing.eval * 1e3:.1f} ms per evaluated one, timed "
          f"over a few steps; the EMA's evaluations and the final test passes counted"
          f"{', early stopping may end it sooner' if any('PATIENCE' in k for k in params) else ''}).", flush=True)
    print(describe_checkpoint(run, full.epochs), flush=True)
    left = replace(full, epochs=max(full.epochs - done, 0), lr_test_images=0 if done else full.lr_test_images)
    left_seconds = left.seconds(timing)
    if done:
        print(f"What is left ({left.epochs} epochs) would take about {format_duration(left_seconds)}.", flush=True)
    if hours is not None:
        first = replace(left, epochs=min(left.epochs, 1), test_images=left.test_images if left.epochs <= 1 else 0)
        if first.seconds(timing) > hours * 3600:
            raise LaunchRefused(f"A budget of {hours:g} h is less than the first epoch of this sitting here (about "
                                f"{format_duration(first.seconds(timing))}"
                                + (", the range test included" if first.lr_test_images else "")
                                + "): give HOURS more time.")
        print(f"Full run in sittings, this one at most {hours:g} h: training stops at the last epoch that fits, and "
              f"the same command resumes it from the checkpoint.", flush=True)
        return run_in_full(path, overrides)
    if left_seconds <= FULL_RUN_HOURS * 3600:
        print(f"That is at most {FULL_RUN_HOURS:g} h, so the full run starts now ({shown_path(path)}, replaced by "
              f"the executed notebook when it finishes).", flush=True)
        return run_in_full(path, None)
    quick, size = quick_run(params, timing, device, minutes)
    output = PROJECT_ROOT / QUICK_DIR / path.name
    print(f"More than {FULL_RUN_HOURS:g} h: not starting it. Quick run instead: {size.train_images:,} training "
          f"images x {size.epochs} epochs, about {format_duration(size.seconds(timing))} -> "
          f"{output.relative_to(PROJECT_ROOT)}\nFull run anyway: make run NB={shown_path(path)} FORCE=1, or in "
          f"sittings of at most 2.5 h each: make run NB={shown_path(path)} HOURS=2.5", flush=True)
    banner = nbformat.v4.new_markdown_cell(quick_banner(path, quick, size, device, full_estimate))
    banner.id = "quick-run-banner"
    notebook.cells.insert(0, banner)
    output.parent.mkdir(parents=True, exist_ok=True)
    execute(notebook, str(output), parameters=quick, cwd=str(path.resolve().parent))
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--force", action="store_true", help="the full run whatever its estimate")
    parser.add_argument("--minutes", type=float, default=3.0, help="size of a quick run (default: 3)")
    parser.add_argument("--device", default=None, help="default: cuda > mps > cpu")
    parser.add_argument("--hours", type=float, default=None,
                        help="this sitting's time budget: the full run, stopped at the last epoch that fits and "
                             "resumed by the same command")
    args = parser.parse_args(argv)
    if args.hours is not None and not args.hours > 0:
        parser.error(f"--hours must be positive, not {args.hours:g}")
    device = select_device(args.device)
    found = device_name(device) if device.type == "cpu" else f"{device} ({device_name(device)})"
    print(f"Device: {found}, precision {describe_precision(device)}"
          + ("" if device.type == "cuda" else f": no CUDA GPU, so a full run starts only where it is estimated at "
                                              f"most {FULL_RUN_HOURS:g} h (or is forced)."), flush=True)
    for path in args.notebooks:
        try:
            output = launch(path, device, args.force, args.minutes, args.hours)
        except (LaunchRefused, CheckpointError) as err:
            print(err, file=sys.stderr, flush=True)
            return 1
        print(f"Done: {shown_path(output)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
