"""Training engine: `fit` with progress bars, history, schedulers, early stopping, checkpoints and resume."""
from __future__ import annotations

import os
import pickle
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Literal

import numpy as np
import torch
from torch import nn
from tqdm.std import TqdmWarning

with warnings.catch_warnings():
    # Without ipywidgets (the GPU machine, a bare kernel) tqdm.auto falls back to text bars, which is fine, and warns
    # about it in every notebook; the first import decides for the whole kernel (torch-lr-finder's too).
    warnings.filterwarnings("ignore", message="IProgress not found", category=TqdmWarning)
    from tqdm.auto import tqdm

from .data import shown_path
from .devices import (autocast, autocast_dtype, channels_last_default, device_name, non_blocking, precision_name,
                      select_device, to_device)
from .ema import ModelEMA

if TYPE_CHECKING:
    from .training_run import TrainingRun

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
METRICS = ("lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
           "val_loss_ema", "val_acc_ema", "test_loss_ema", "test_acc_ema", "seconds")
_SPLIT_METRIC = re.compile(r"(train|val|test)_(loss|acc)(_ema)?")  # a metric's split, measure and EMA suffix


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class OneLineError(Exception):
    """An error Jupyter shows as its message alone, one line, without a traceback (IPython's
    `_render_traceback_`): what went wrong and the way out, for a reader of the notebook."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class BudgetReached(OneLineError):
    """Training stopped at an epoch boundary because the next epoch would not fit the run's time budget; the
    checkpoint holds every epoch so far, and running the notebook again resumes it. A notebook stops here: nothing
    after it (run record, released weights) is written for a run that has not finished."""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


@dataclass
class History:
    """Per-epoch metrics: `history["test_acc"]` is a list with one value per epoch (None where not measured).

    `final_model` holds what `fit` measured on the model it returned, at the end: the epoch its weights come from,
    test accuracy, and with flip TTA and EMA where they were on (`test_acc_tta`, `test_acc_ema`,
    `test_acc_ema_tta`). `sittings` says how the epochs were trained: one entry per call of `fit` that trained
    some (a run resumed from its checkpoint has several), with its `first_epoch`, `last_epoch`, `device`,
    `precision`, `started` (local time, ISO 8601), `seconds` (the sum of its epochs' times) and `test_seconds`
    (its last epoch's evaluation of the test set).
    """

    records: list[dict] = field(default_factory=list)
    final_model: dict = field(default_factory=dict)
    sittings: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:  # records of an older checkpoint get the columns added since, as None
        self.records = [self._columns(record) for record in self.records]

    @staticmethod
    def _columns(record: dict) -> dict:
        return {k: record.get(k) for k in ("epoch", *METRICS)}

    def append(self, record: dict) -> None:
        self.records.append(self._columns(record))

    def __getitem__(self, metric: str) -> list:
        return [r[metric] for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def best(self, metric: str = "test_acc") -> float | None:
        """Highest value of `metric` over the epochs (None if never measured)."""
        values = [v for v in self[metric] if v is not None]
        return max(values) if values else None

    def final(self, metric: str = "test_acc") -> float | None:
        return self.records[-1][metric] if self.records else None

    def table(self) -> str:
        """The log as a fixed-width text table, narrow enough not to wrap in a rendered notebook: epoch, LR, loss
        and accuracy of each split (train, val, test, val EMA, test EMA) under the split's name, seconds."""
        present = [c for c in ("epoch", *METRICS) if any(r[c] is not None for r in self.records)]
        fmt = {"epoch": "{:d}", "lr": "{:.2e}", "seconds": "{:.1f}"}
        rows = [["-" if r[c] is None else fmt.get(c, "{:.4f}").format(r[c]) for c in present] for r in self.records]
        split_metric = [_SPLIT_METRIC.fullmatch(c) for c in present]
        groups = [(m[1] + (" EMA" if m[3] else "")) if m else "" for m in split_metric]
        names = [m[2] if m else c for m, c in zip(split_metric, present)]
        width = [max([len(name), *(len(row[i]) for row in rows)]) for i, name in enumerate(names)]
        spans = [[i for i, _ in members] for _, members in groupby(enumerate(groups), key=lambda item: item[1])]

        def span_width(span: list[int]) -> int:
            return sum(width[i] for i in span) + len(span) - 1

        def line(cells: list[str]) -> str:  # one space within a split's columns, two between splits
            return "  ".join(" ".join(f"{cells[i]:>{width[i]}}" for i in span) for span in spans).rstrip()

        for span in spans:  # a split's name wider than its columns widens them
            width[span[0]] += max(0, len(groups[span[0]]) - span_width(span))
        header = "  ".join(f"{groups[span[0]]:^{span_width(span)}}" for span in spans).rstrip()
        return "\n".join([*([header] if header else []), line(names), *(line(row) for row in rows)])


@dataclass
class EarlyStopping:
    """Stop when `monitor` (a validation metric) has not improved by `min_delta` for `patience` epochs.

    The best weights are kept and, with `restore_best`, loaded back when training ends.
    """

    patience: int = 5
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    min_delta: float = 0.0
    restore_best: bool = True
    best: float | None = None
    bad_epochs: int = 0
    best_epoch: int | None = None
    best_state: dict | None = None

    def improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.monitor.endswith("loss"):
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def update(self, value: float, epoch: int, model: nn.Module) -> bool:
        """Record this epoch's `value`; returns True when training should stop."""
        if self.improved(value):
            self.best, self.bad_epochs, self.best_epoch = value, 0, epoch
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "best_epoch": self.best_epoch,
                "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
        self.best_epoch, self.best_state = state["best_epoch"], state["best_state"]


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """Sum of absolute values of all trainable parameters."""
    return sum(p.abs().sum() for p in model.parameters() if p.requires_grad)


def train_epoch(model: nn.Module, loader: Batches, optimizer: torch.optim.Optimizer, loss_fn: Callable,
                device: torch.device, *, scheduler=None, amp_dtype: torch.dtype | None = None,
                scaler: torch.amp.GradScaler | None = None, l1_lambda: float = 0.0, channels_last: bool = False,
                ema: ModelEMA | None = None, epoch: int = 1, progress: bool | str = True, sync_every: int = 10
                ) -> tuple[float, float]:
    """One pass over `loader`; steps a per-batch `scheduler` and the `ema` if given. Returns (mean loss, accuracy).

    Raises `TrainingDiverged` naming the epoch and batch when the loss stops being finite.
    """
    model.train()
    total_loss = torch.zeros((), device=device, dtype=torch.float32 if device.type == "mps" else torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    first_bad = torch.full((), -1, device=device, dtype=torch.int64)
    seen = 0
    desc = progress if isinstance(progress, str) else f"epoch {epoch}"
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress, unit="batch")
    for batch_index, (x, y) in enumerate(bar, start=1):
        x, y = to_device(x, y, device, channels_last)
        with autocast(device, amp_dtype):
            logits = model(x)
            loss = loss_fn(logits, y)
        if l1_lambda:
            loss = loss + l1_lambda * l1_penalty(model)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        lr = current_lr(optimizer)  # this batch's: the scheduler's step sets the next one's (past a cycle's end too)
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.step(model)
        detached = loss.detach()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached),
                                torch.full_like(first_bad, batch_index), first_bad)
        total_loss += detached.to(total_loss.dtype) * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if batch_index % sync_every == 0 or batch_index == len(bar):
            _raise_if_diverged(first_bad, epoch)
            bar.set_postfix(loss=f"{total_loss.item() / seen:.4f}", acc=f"{correct.item() / seen:.2%}",
                            lr=f"{lr:.2e}")
    _raise_if_diverged(first_bad, epoch)
    if seen == 0:
        raise ValueError("the training loader yielded no batches (is the dataset smaller than one batch?)")
    return total_loss.item() / seen, correct.item() / seen


def _raise_if_diverged(first_bad: torch.Tensor, epoch: int) -> None:
    bad = int(first_bad.item())
    if bad >= 0:
        raise TrainingDiverged(f"the loss became NaN or infinite at epoch {epoch}, batch {bad}. "
                               "Lower the learning rate (or the L1 weight), or check the inputs for NaNs.")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Batches, device: torch.device, loss_fn: Callable | None = None,
             amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on `loader` (evaluation mode, no gradients)."""
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    model.eval()
    total_loss, correct, seen = 0.0, 0, 0
    for x, y in loader:
        x, y = to_device(x, y, device, channels_last)
        with autocast(device, amp_dtype):
            logits = model(x)
        total_loss += loss_fn(logits.float(), y).item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
    return total_loss / seen, correct / seen


@torch.no_grad()
def softmax_views(model: nn.Module, loader: Batches, device: torch.device | None = None,
                  amp_dtype: torch.dtype | None = None, mirrored: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One pass of `model` over `loader`: returns (true labels, softmax probabilities, and with `mirrored` the
    softmax probabilities of the horizontal mirror images, else None) as numpy."""
    device = device or next(model.parameters()).device
    model.eval()
    plain, mirror, labels = [], [], []
    for x, y in loader:
        x = x.to(device, non_blocking=non_blocking(device, x))
        with autocast(device, amp_dtype):
            plain.append(model(x).float().softmax(1).cpu())
            if mirrored:
                mirror.append(model(x.flip(-1)).float().softmax(1).cpu())
        labels.append(y.cpu())
    return (torch.cat(labels).numpy(), torch.cat(plain).numpy(),
            torch.cat(mirror).numpy() if mirrored else None)


def predict(model: nn.Module, loader: Batches, device: torch.device | None = None,
            amp_dtype: torch.dtype | None = None, flip_tta: bool = False
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `model` over `loader`: returns (predicted labels, true labels, softmax probabilities) as numpy.

    With `flip_tta`, the probabilities are the average over each image and its horizontal mirror.
    """
    labels, p, mirror = softmax_views(model, loader, device, amp_dtype, mirrored=flip_tta)
    if flip_tta:
        p = (p + mirror) / 2
    return p.argmax(1), labels, p


def _scheduler_interval(scheduler) -> Literal["batch", "epoch", "plateau"] | None:
    if scheduler is None:
        return None
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return "plateau"
    if isinstance(scheduler, (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.CyclicLR)):
        return "batch"
    return "epoch"


def _plateau_metric(scheduler) -> Literal["val_loss", "val_acc"]:
    """What a ReduceLROnPlateau watches: the validation accuracy in mode "max", else the validation loss."""
    return "val_acc" if getattr(scheduler, "mode", "min") == "max" else "val_loss"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` with torch.save atomically: to a temporary file, then renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


class CheckpointError(OneLineError, ValueError):
    """A checkpoint that cannot be used: the message names the file, what is wrong with it and the way out."""


RESUME_REMEDY = "delete it to start over, or pass resume=False"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    remedy: str = RESUME_REMEDY) -> dict:
    """Load a checkpoint written by `save_checkpoint` (tensors and plain data only: `weights_only=True`).

    A file that cannot be read raises `CheckpointError`: one line with the file, what is wrong with it (empty,
    truncated, not written by torch.save, or holding objects a weights-only load refuses) and `remedy`.
    """
    path, where = Path(path), shown_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the weights-only unpickler's notes on a file it may then refuse
            state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        # One line, never torch's own message: it advises weights_only=False, which would run code from the file.
        raise CheckpointError(f"{where} {_damage(path, err)}: {remedy}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{where} holds a {type(state).__name__}, not a checkpoint dict: {remedy}")
    return state


def _damage(path: Path, err: Exception) -> str:
    """What is wrong with a checkpoint file torch.load could not read, in words."""
    if isinstance(err, IsADirectoryError):
        return "is a folder, not a checkpoint file"
    if isinstance(err, OSError):
        return f"cannot be read ({err.strerror or err})"
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return "is empty (its writing was cut off)"
    if head != b"PK\x03\x04":  # the start of the zip archive torch.save writes
        return "was not written by torch.save (it is no zip archive)"
    if isinstance(err, pickle.UnpicklingError):
        return "holds Python objects other than tensors and plain data, which a safe (weights-only) load refuses"
    return "is truncated or damaged (an interrupted write or copy)"


def _seed_epoch(loader: Batches, seed: int, epoch: int) -> None:
    """Make epoch `epoch` reproducible whether or not the run was resumed: shuffling, augmentation, dropout.

    A `TensorLoader` draws the epoch from (seed, epoch) itself. For a DataLoader, its sampler's and its own generator
    are seeded, and its dataset's `set_seed` (an `ArrayDataset`) reseeds the augmentation, in this process and in
    (persistent) worker processes alike.
    """
    epoch_seed = seed * 1_000_003 + epoch
    seed_everything(epoch_seed)
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch, seed)
        return
    sampler = getattr(loader, "sampler", None)
    for generator in (getattr(loader, "generator", None), getattr(sampler, "generator", None)):
        if generator is not None:
            generator.manual_seed(epoch_seed)
    dataset = getattr(loader, "dataset", None)
    if hasattr(dataset, "set_seed"):
        dataset.set_seed(epoch_seed)


def _resume(path: Path, epochs: int, device: torch.device, amp_dtype: torch.dtype | None, *, model: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
            early_stopping: EarlyStopping | None, ema: ModelEMA | None, run: TrainingRun | None) -> History:
    """Load the checkpoint at `path` into the training state; on any device and in any precision (one line says
    when these changed). With a `run`, the checkpoint must be that run's (`TrainingRun.check`). Returns the history
    so far, its sittings included."""
    state, where = load_checkpoint(path, map_location=device), shown_path(path)
    if "epochs" not in state or "model" not in state:
        raise CheckpointError(f"{where} is not a training checkpoint written by fit: {RESUME_REMEDY}")
    if run is not None:
        run.check(state)
    if state["epochs"] != epochs:
        raise CheckpointError(f"{where} belongs to a {state['epochs']}-epoch run, not {epochs}: {RESUME_REMEDY}")
    if ema is not None and state.get("ema") is None:
        raise CheckpointError(f"{where} was written without an EMA: {RESUME_REMEDY}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{where} holds the weights of another model ({str(err).splitlines()[0]}): "
                              f"{RESUME_REMEDY}") from None
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # empty when written with the scaler off (fp32 or bf16): a fresh loss scale then
        scaler.load_state_dict(state["scaler"])
    if early_stopping is not None and state["early_stopping"] is not None:
        early_stopping.load_state_dict(state["early_stopping"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    print(f"Resumed from {where} after epoch {state['epoch']} of {epochs}.")
    # Checkpoints written before the precision was recorded: fp16 exactly when the scaler state is not empty.
    precision = state.get("precision") or ("fp16 + GradScaler" if state["scaler"] else "fp32")
    written_on = state.get("device")
    if precision != precision_name(amp_dtype) or written_on not in (None, device.type):
        fresh = "; the GradScaler starts from a fresh loss scale" if scaler.is_enabled() and not state["scaler"] else ""
        print(f"The checkpoint was written in {precision}{f' on {written_on}' if written_on else ''}; "
              f"training goes on in {precision_name(amp_dtype)} on {device.type}{fresh}.")
    # Checkpoints written before sittings were recorded: their epochs as one sitting, on the device they name.
    sittings = state["sittings"] if "sittings" in state else [
        _sitting(1, state["epoch"], state.get("device") or "unknown", precision, "",
                 [r.get("seconds") or 0.0 for r in state["history"]])]
    return History(list(state["history"]), sittings=list(sittings))


def _sitting(first_epoch: int, last_epoch: int, device: str, precision: str, started: str, seconds: list[float],
             test_seconds: float | None = None) -> dict:
    """One entry of `History.sittings`."""
    return {"first_epoch": first_epoch, "last_epoch": last_epoch, "device": device, "precision": precision,
            "started": started, "seconds": round(sum(seconds), 1), "test_seconds": test_seconds}


# What follows the last epoch, in passes over the test set at the speed an epoch's test evaluation measured: fit's
# final measurement of each model (its images plain and mirrored: two passes) and a notebook's evaluation and
# release check after it (about two more). A time budget keeps this much for the sitting that ends the run.
FINISH_TEST_PASSES = 4


def _fits_budget(run: TrainingRun | None, history: History, device_label: str, last_epoch: bool
                 ) -> tuple[bool, float | None]:
    """Whether one more epoch fits `run`'s time budget, and the epoch time it was judged by: the slowest epoch of
    the latest sitting (this one once it has trained an epoch) when it ran on this device; unknown (None, and
    allowed) before any. Before the run's last epoch, the work after it (`FINISH_TEST_PASSES`) must fit too."""
    if run is None or run.max_hours is None:
        return True, None
    last = history.sittings[-1] if history.sittings else None
    measured = history["seconds"][last["first_epoch"] - 1:last["last_epoch"]] if last else []
    if not measured or last["device"] != device_label:
        return run.allows(0.0), None
    epoch_seconds = max(measured)
    finish = FINISH_TEST_PASSES * last["test_seconds"] if last_epoch and last["test_seconds"] else 0.0
    return run.allows(epoch_seconds + finish), epoch_seconds


def fit(model: nn.Module, train_loader: Batches, optimizer: torch.optim.Optimizer, epochs: int, *,
        val_loader: Batches | None = None, test_loader: Batches | None = None, scheduler=None,
        scheduler_interval: Literal["batch", "epoch", "plateau"] | None = None,
        loss_fn: Callable | None = None, l1_lambda: float = 0.0, early_stopping: EarlyStopping | int | None = None,
        checkpoint_path: str | os.PathLike | None = None, resume: bool = True,
        device: torch.device | str | None = None, amp: bool = True, channels_last: bool | None = None,
        ema: ModelEMA | None = None, flip_tta: bool = True, seed: int = 0, progress: bool = True,
        compile: bool = False, on_epoch_end: Callable[[int, History], None] | None = None,
        run: TrainingRun | None = None) -> History:
    """Train `model` for `epochs` epochs and return its `History`.

    - `scheduler`: stepped per batch (OneCycleLR, CyclicLR), per epoch on a validation metric (ReduceLROnPlateau:
      the accuracy when its mode is "max", else the loss) or per epoch (others); `scheduler_interval` overrides
      the guess.
    - `early_stopping`: patience (int) or an `EarlyStopping`; it watches the validation set only, never the test set.
    - `ema`: a `ModelEMA` of `model`, updated after every optimizer step and evaluated every epoch beside the raw
      weights (`val_acc_ema`, `test_acc_ema`, ...: one more evaluation pass per split and epoch), and saved in the
      checkpoint. Early stopping and ReduceLROnPlateau still watch the raw model.
    - At the end, the returned model (and `ema.module`) is measured on the test set, plainly and, with `flip_tta`,
      as the mean softmax over each image and its mirror: `history.final_model`. This costs three forward passes
      of the test set per model, once; the per-epoch log stays without TTA.
    - `checkpoint_path`: a checkpoint is written atomically after every epoch; with `resume`, an existing one is
      loaded and training continues where it stopped, on any device and in any precision (a CPU checkpoint
      resumes in fp16 on a T4, say: one line says so). A damaged one raises `CheckpointError` with the way out.
    - Reproducibility: every epoch's randomness (shuffling, augmentation, dropout) is drawn from (`seed`, epoch),
      so a resumed run trains on the same batches as an uninterrupted one, with a `TensorLoader` or a DataLoader
      over an `ArrayDataset` (worker processes too, for the same number of workers). On the CPU it ends with the
      same history, bit for bit. On CUDA the data are the same but the arithmetic is not bit-exact: cuDNN's
      benchmark mode picks its algorithms anew in each process, and some GPU kernels sum in varying order, so
      two runs differ in the last bits, and the difference grows over the epochs like a change of seed's would.
    - Mixed precision (`amp`), decided by `autocast_dtype(device)`: bf16 on GPUs of compute capability 8.0 and
      newer and on CPUs where it is measured faster (AMX; AVX512-BF16 on AMD: `cpu_bf16_choice`), fp16 with a
      GradScaler on 7.x (Colab's T4), fp32 below that, on other CPUs and on mps. channels_last on CUDA and the CPU
      (`channels_last_default`: NCHW for a model with dilated depthwise convolutions in bf16 on a CPU).
    - `compile`: run the forward passes through `torch.compile(model)` (the first epoch pays the compilation);
      `model` itself is trained in place and checkpoints keep its plain state_dict keys.
    - `run`: a notebook's `TrainingRun`, for a run trained in several sittings. It gives the checkpoint (instead
      of `checkpoint_path`), which must be its own to be resumed (same notebook and parameters) and keeps what it
      stores (its range test); with a time budget (`max_hours`), training stops at the last epoch boundary that
      fits it, judged from the measured epoch times, and raises `BudgetReached` with the checkpoint written.
      Every call of `fit` that trains an epoch is a sitting (`History.sittings`), with or without a run.
    """
    if run is not None:
        if checkpoint_path is not None:
            raise ValueError("give the checkpoint either as checkpoint_path or through the run, not both")
        checkpoint_path = run.checkpoint
    device = select_device(device)
    amp_dtype = autocast_dtype(device, amp)
    if channels_last is None:
        channels_last = channels_last_default(device, model, amp_dtype)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    model.to(device, memory_format=memory_format)
    if ema is not None:
        ema.averaged.to(device, memory_format=memory_format)
    forward_model = torch.compile(model) if compile else model  # shares model's parameters and buffers
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    interval = scheduler_interval or _scheduler_interval(scheduler)
    if isinstance(early_stopping, int):
        early_stopping = EarlyStopping(patience=early_stopping)
    if (interval == "plateau" or early_stopping is not None) and val_loader is None:
        raise ValueError("ReduceLROnPlateau and early stopping need a val_loader (they must not watch the test set)")
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    history, start = History(), 0

    if checkpoint_path is not None and resume and Path(checkpoint_path).exists():
        history = _resume(Path(checkpoint_path), epochs, device, amp_dtype, model=model, optimizer=optimizer,
                          scheduler=scheduler, scaler=scaler, early_stopping=early_stopping, ema=ema, run=run)
        start = len(history)
    device_label, began_sitting = device_name(device), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sittings_before, test_seconds = list(history.sittings), None

    def write_checkpoint(epoch: int) -> None:
        save_checkpoint(checkpoint_path, {
            "epoch": epoch, "epochs": epochs, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict(), "precision": precision_name(amp_dtype), "device": device.type,
            "history": history.records, "sittings": history.sittings,
            "early_stopping": early_stopping.state_dict() if early_stopping is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "run": run.entry() if run is not None else None})

    stop = False
    # updated by hand, not iterated: a loop left by `break` would not count its last epoch (2/30 would show 1/30)
    epoch_bar = tqdm(desc="training", unit="epoch", disable=not progress, initial=start, total=epochs)
    for epoch in range(start + 1, epochs + 1):
        fits, epoch_seconds = _fits_budget(run, history, device_label, last_epoch=epoch == epochs)
        if not fits:
            epoch_bar.close()
            if checkpoint_path is not None and not Path(checkpoint_path).exists():
                write_checkpoint(start)  # nothing trained yet: the run's state before epoch 1 (its range test)
            raise BudgetReached(run.stopped_message(epoch - 1, epochs, epoch_seconds, trained=epoch - 1 - start))
        _seed_epoch(train_loader, seed, epoch)
        began = time.perf_counter()
        lr = current_lr(optimizer)
        train_loss, train_acc = train_epoch(
            forward_model, train_loader, optimizer, loss_fn, device,
            scheduler=scheduler if interval == "batch" else None, amp_dtype=amp_dtype, scaler=scaler,
            l1_lambda=l1_lambda, channels_last=channels_last, ema=ema, epoch=epoch,
            progress=f"epoch {epoch}/{epochs}" if progress else False)
        record = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc}
        for split, loader in (("val", val_loader), ("test", test_loader)):
            if loader is None:
                continue
            split_began = time.perf_counter()
            record[f"{split}_loss"], record[f"{split}_acc"] = evaluate(forward_model, loader, device, loss_fn,
                                                                       amp_dtype, channels_last)
            if ema is not None:
                record[f"{split}_loss_ema"], record[f"{split}_acc_ema"] = evaluate(
                    ema.module, loader, device, loss_fn, amp_dtype, channels_last)
            if split == "test":
                test_seconds = time.perf_counter() - split_began
        if interval == "plateau":
            scheduler.step(record[_plateau_metric(scheduler)])
        elif interval == "epoch":
            scheduler.step()
        stop = early_stopping is not None and early_stopping.update(record[early_stopping.monitor], epoch, model)
        record["seconds"] = time.perf_counter() - began
        history.append(record)
        history.sittings = sittings_before + [_sitting(start + 1, epoch, device_label, precision_name(amp_dtype),
                                                       began_sitting, history["seconds"][start:], test_seconds)]
        epoch_bar.set_postfix({k: f"{v:.4f}" for k, v in record.items()
                               if k in ("train_loss", "val_acc", "test_acc", "test_acc_ema") and v is not None},
                              refresh=False)
        epoch_bar.update()
        if checkpoint_path is not None:
            write_checkpoint(epoch)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
        if stop:
            break
    epoch_bar.close()  # before any message: a text bar printed over would show twice in a saved notebook
    if stop:
        print(f"Early stopping after epoch {epoch}: {early_stopping.monitor} has not improved for "
              f"{early_stopping.patience} epochs (best {early_stopping.best:.4f} at epoch "
              f"{early_stopping.best_epoch}).")
    weights_epoch = len(history)
    if early_stopping is not None and early_stopping.restore_best and early_stopping.best_state is not None:
        model.load_state_dict(early_stopping.best_state)
        weights_epoch = early_stopping.best_epoch
    history.final_model = {"epoch": weights_epoch, "epochs": len(history)}
    if test_loader is not None:
        began = time.perf_counter()
        history.final_model.update(measure_final_model(model, test_loader, device, ema=ema, flip_tta=flip_tta,
                                                       amp_dtype=amp_dtype))
        print(f"{describe_final_model(history.final_model)} ({time.perf_counter() - began:.1f} s)")
    return history


def describe_training(history: History, device: str | None = None) -> str:
    """How the epochs of `history` were trained: how many, the training time (the sum of the epochs' times, over
    every sitting) and where: one sitting's device and precision, or each sitting's epochs, device, precision, date
    and time. `device` names the device of a history without sittings (a record written before they were kept)."""
    total = sum(seconds or 0.0 for seconds in history["seconds"])
    head = f"{len(history)} epochs in {total / 60:.1f} min of training"
    sittings = history.sittings
    if not sittings:
        return head + (f" on {device}" if device else "")
    if len(sittings) == 1:
        return f"{head} on {sittings[0]['device']}, {sittings[0]['precision']}"
    lines = []
    for s in sittings:
        epochs = (f"epoch {s['first_epoch']}" if s["first_epoch"] == s["last_epoch"]
                  else f"epochs {s['first_epoch']}-{s['last_epoch']}")
        started = f"started {s['started'][:16].replace('T', ' ')}, " if s["started"] else ""
        lines.append(f"  {epochs}: {s['device']}, {s['precision']}, {started}{s['seconds'] / 60:.1f} min")
    return "\n".join([f"{head}, in {len(sittings)} sittings:", *lines])


def measure_final_model(model: nn.Module, test_loader: Batches, device: torch.device, *,
                        ema: ModelEMA | None = None, flip_tta: bool = True,
                        amp_dtype: torch.dtype | None = None) -> dict:
    """Test accuracy of `model` (and of `ema.module`), plain and with flip TTA, in one pass each."""
    models = {"": model} if ema is None else {"": model, "_ema": ema.module}
    measured = {}
    for suffix, network in models.items():
        y_true, plain, mirror = softmax_views(network, test_loader, device, amp_dtype, mirrored=flip_tta)
        measured[f"test_acc{suffix}"] = float((plain.argmax(1) == y_true).mean())
        if flip_tta:
            tta = ((plain + mirror) / 2).argmax(1)
            measured[f"test_acc{suffix}_tta"] = float((tta == y_true).mean())
    measured["test_images"] = len(y_true)
    return measured


def describe_final_model(final: dict) -> str:
    """One line from `History.final_model`: test accuracy of the raw weights, EMA and flip TTA where measured."""
    parts = []
    last = "" if final["epoch"] == final["epochs"] else f" (epoch {final['epochs']})"
    for suffix, name in (("", "raw weights"), ("_ema", f"EMA weights{last}")):
        if f"test_acc{suffix}" in final:
            tta = final.get(f"test_acc{suffix}_tta")
            parts.append(f"{name} {final[f'test_acc{suffix}']:.2%}"
                         + (f" (flip TTA {tta:.2%})" if tta is not None else ""))
    measured = f" on {final['test_images']:,} test images: " + " · ".join(parts) if parts else ": not tested"
    return f"Final model (weights of epoch {final['epoch']} of {final['epochs']}){measured}"


__all__ = ["BudgetReached", "CheckpointError", "EarlyStopping", "History", "OneLineError", "TrainingDiverged",
           "autocast", "autocast_dtype", "describe_final_model", "describe_training", "device_name", "evaluate",
           "fit", "l1_penalty", "load_checkpoint", "measure_final_model", "predict", "save_checkpoint",
           "seed_everything", "select_device", "to_device", "train_epoch"]
