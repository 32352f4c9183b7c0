"""A notebook's full run in one sitting or several: the checkpoint it resumes, this sitting's time budget, and what
the run keeps with its checkpoint so that a resumed sitting shows what the first one measured.

    run = h.TrainingRun("01_resnet18_baseline", CHECKPOINT, parameters=globals(), max_hours=MAX_HOURS)
    lr_test = run.range_test(lambda: find_lr(model, optimizer, loader))  # the first sitting's, once resumed
    history = h.fit(model, ..., run=run)  # resumes the run's checkpoint; stops at the budget (BudgetReached)

A checkpoint is resumed only by the run that wrote it: the same notebook with the same training parameters (a
resumed run may change where it runs: device, data folder, budget). Anything else stops with one line that says how
to start fresh, before any work. Running the notebook again (or `make run NB=...`) resumes it.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Mapping

from .data import PROJECT_ROOT, shown_path
from .engine import CheckpointError, load_checkpoint
from .lr_finder import LRRangeTest

# Parameters that say where a run happens or keeps its files, not what it trains: a sitting may change them.
PLACE_PARAMETERS = frozenset({"DEVICE", "DATA_ROOT", "CHECKPOINT", "RESULTS_DIR", "KAGGLE_DIR", "MAX_HOURS",
                              "PRETRAINED", "REPO_URL"})
FRESH_REMEDY = "delete it, or point CHECKPOINT at another file, to start this run fresh"
_UNSET = object()


def _plain(value: object) -> bool:
    if isinstance(value, (list, tuple)):
        return all(map(_plain, value))
    return value is None or isinstance(value, (bool, int, float, str))


def training_parameters(namespace: Mapping[str, object]) -> dict[str, object]:
    """What a run's checkpoint must match to be resumed: the notebook's parameters, i.e. the upper-case names of
    its namespace holding plain values (numbers, strings, booleans, None, tuples and lists of them), less those
    that only say where it runs (`PLACE_PARAMETERS`)."""
    return {name: value for name, value in sorted(namespace.items())
            if name.isupper() and name not in PLACE_PARAMETERS and _plain(value)}


class TrainingRun:
    """The full run of notebook `name`: trained into `checkpoint` (None: no checkpoint, one sitting), resumed
    from it by a later sitting with the same `parameters` (a notebook passes `globals()`: see
    `training_parameters`), and in this sitting stopped by `fit` at the last epoch boundary within `max_hours`
    (None: no budget), counted from this object's creation: the top of the notebook. A checkpoint of another run
    (`check`) or a damaged one raises `CheckpointError` here, at once."""

    def __init__(self, name: str, checkpoint: str | os.PathLike | None, *, parameters: Mapping[str, object],
                 max_hours: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if max_hours is not None and not max_hours > 0:
            raise ValueError(f"max_hours must be positive (or None: no budget), not {max_hours!r}")
        self.name, self.max_hours, self.clock = name, max_hours, clock
        self.checkpoint = None if checkpoint is None else PROJECT_ROOT / checkpoint  # relative: to the project
        self.parameters = training_parameters(parameters)
        self.started = clock()
        self._range_test: dict | None = None
        self._stored: dict | None | object = _UNSET
        self.epochs_done: int | None = None  # the checkpoint's epochs (None: no checkpoint, a fresh start)
        self.stored()  # a checkpoint of another run stops the notebook here, before any work

    def identity(self) -> dict:
        return {"notebook": self.name, "parameters": self.parameters}

    def entry(self) -> dict:
        """What the checkpoint keeps of the run: its notebook, parameters and range test."""
        return {**self.identity(), "range_test": self._range_test}

    def stored(self) -> dict | None:
        """The run entry of the checkpoint on disk (checked: `check`), or None when there is no checkpoint yet.
        Read once: what it holds of the run does not change between epochs."""
        if self._stored is _UNSET:
            exists = self.checkpoint is not None and self.checkpoint.exists()
            state = load_checkpoint(self.checkpoint, remedy=FRESH_REMEDY) if exists else None
            if state is not None:
                self.check(state)
                self.epochs_done = int(state.get("epoch", 0))
            self._stored = None if state is None else state.get("run") or {}
            if self._stored and self._stored.get("range_test"):
                self._range_test = self._stored["range_test"]
        return self._stored

    def check(self, state: dict) -> None:
        """Raise `CheckpointError` (one line, with the way to start fresh) unless the checkpoint `state` was
        written by this run: the same notebook, and the same value of every training parameter both have (a name
        only one side has is not compared: a cell run again in the same kernel may have defined more upper-case
        names, such as notebook 03's `LR`). A checkpoint written before runs were named passes (it cannot be
        checked)."""
        stored = state.get("run")
        if not stored:
            return
        where = shown_path(self.checkpoint) if self.checkpoint else "the checkpoint"
        if stored["notebook"] != self.name:
            raise CheckpointError(f"{where} belongs to notebook {stored['notebook']}, not {self.name}: "
                                  f"{FRESH_REMEDY}")
        theirs, ours = stored["parameters"], self.parameters
        differ = [f"{name} = {theirs[name]!r} there, {ours[name]!r} here"
                  for name in sorted(set(theirs) & set(ours)) if theirs[name] != ours[name]]
        if differ:
            raise CheckpointError(f"{where} was written by a run with other parameters ({'; '.join(differ)}): "
                                  f"{FRESH_REMEDY}")

    def range_test(self, run_test: Callable[[], LRRangeTest]) -> LRRangeTest:
        """The run's LR range test: `run_test()` in its first sitting (kept, and stored with the checkpoint at
        the first epoch), the stored one, shown again with its curve, in every sitting that resumes."""
        stored = self.stored()
        if stored and stored.get("range_test"):
            kept = stored["range_test"]
            return LRRangeTest.from_state(kept, origin=f"the first sitting's, on {kept['measured_on']}, stored with "
                                                       f"the checkpoint: not run again")
        test = run_test()
        self._range_test = test.state()
        return test

    def elapsed(self) -> float:
        """Seconds since this sitting began."""
        return self.clock() - self.started

    def allows(self, seconds: float) -> bool:
        """Whether `seconds` more still fit this sitting's budget (always, without one)."""
        return self.max_hours is None or self.elapsed() + seconds <= self.max_hours * 3600

    def stopped_message(self, done: int, epochs: int, epoch_seconds: float | None, trained: int) -> str:
        """The line a sitting ends with when the next epoch does not fit its budget."""
        resume = (f"checkpoint {shown_path(self.checkpoint)}; `make run NB=notebooks/{self.name}.ipynb` (or running "
                  f"the notebook again) resumes it")
        epoch = f" (an epoch takes about {epoch_seconds / 60:.1f} min here)" if epoch_seconds else ""
        if trained:
            return f"stopped after epoch {done} of {epochs} at its {self.max_hours:g} h budget{epoch}; {resume}"
        return (f"nothing trained in this sitting: {max(self.max_hours * 3600 - self.elapsed(), 0) / 60:.1f} min "
                f"of its {self.max_hours:g} h budget were left, less than the next epoch (epoch {done + 1} of "
                f"{epochs}){epoch}; give it more time, {resume}")
