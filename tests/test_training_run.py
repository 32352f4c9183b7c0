"""Full runs in several sittings (`h.TrainingRun` with `fit`): a time budget that stops at an epoch boundary, a
resumed run that keeps its first range test, one history over every sitting, and one clear line for each bad state."""
from __future__ import annotations

import json

import pytest
import torch

import helpers as h
from helpers.engine import FINISH_TEST_PASSES, _fits_budget, _sitting
from helpers.lr_finder import find_lr
from test_engine import TinyNet, loaders, metrics, tiny_data  # noqa: F401 - the fixture

HOUR = 3600.0
EPOCHS = 6
PARAMETERS = {"EPOCHS": EPOCHS, "BATCH_SIZE": 32, "SEED": 3, "DEVICE": "cpu", "MAX_HOURS": 1.5}


class Clock:
    """A clock the test moves: every epoch of a sitting takes an hour of it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def hour_per_epoch(self, epoch: int, history: h.History) -> None:
        self.now += HOUR


def sitting(tiny_data, run: h.TrainingRun | None, clock: Clock | None = None, checkpoint=None):
    """One sitting of the run as a notebook makes it: fresh objects, the range test (the stored one once
    resumed), then `fit`. Returns (history, model, ema, range test)."""
    train, val, test = loaders(tiny_data)
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if run is not None and run.stored():
        lr_test = run.range_test(lambda: pytest.fail("a resumed run must not run its range test again"))
    else:
        test_run = lambda: find_lr(model, optimizer, train, start_lr=1e-4, end_lr=1.0, num_iter=20)  # noqa: E731
        lr_test = run.range_test(test_run) if run is not None else test_run()
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, epochs=EPOCHS,
                                                    steps_per_epoch=len(train))
    ema = h.ModelEMA(model, decay=0.9, every=2)
    history = h.fit(model, train, optimizer, EPOCHS, val_loader=val, test_loader=test, scheduler=scheduler,
                    ema=ema, progress=False, seed=3, run=run, checkpoint_path=checkpoint,
                    on_epoch_end=clock.hour_per_epoch if clock else None)
    return history, model, ema, lr_test


def record(tmp_path, name, model, history, lr_test) -> dict:
    path = h.save_run_record("test_run", model, history, data_source="synthetic", device="cpu",
                             wall_seconds=sum(history["seconds"]), seed=3, smoke=False, results_dir=tmp_path / name,
                             extra={"max_lr": lr_test.bounds.lr_max, "lr_min": lr_test.bounds.lr_min})
    return json.loads(path.read_text())


def timeless(saved: dict) -> dict:
    """A run record without what differs between two identical runs: times, dates, the commit, the sittings."""
    drop = {"wall_seconds", "finished", "git_commit", "sittings"}
    return {**{k: v for k, v in saved.items() if k not in drop},
            "history": [{k: v for k, v in r.items() if k != "seconds"} for r in saved["history"]]}


def test_a_run_stopped_twice_by_its_budget_ends_as_one_uninterrupted_run(tiny_data, tmp_path):
    reference, ref_model, ref_ema, ref_test = sitting(tiny_data, None)
    checkpoint = tmp_path / "cache" / "run.pt"
    stops = []
    for _ in range(3):
        clock = Clock()
        run = h.TrainingRun("test_run", checkpoint, parameters=PARAMETERS, max_hours=1.5, clock=clock)
        try:
            history, model, ema, lr_test = sitting(tiny_data, run, clock)
        except h.BudgetReached as stop:
            stops.append(str(stop))
            continue
        break
    assert stops == [f"stopped after epoch {done} of {EPOCHS} at its 1.5 h budget (an epoch takes about 0.0 min "
                     f"here); checkpoint {h.shown_path(checkpoint)}; `make run NB=notebooks/test_run.ipynb` (or "
                     f"running the notebook again) resumes it" for done in (2, 4)]
    assert metrics(history) == metrics(reference) and history.final_model == reference.final_model
    assert all(torch.equal(v, ref_model.state_dict()[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, ref_ema.module.state_dict()[k]) for k, v in ema.module.state_dict().items())
    assert (lr_test.lrs, lr_test.losses, lr_test.bounds) == (ref_test.lrs, ref_test.losses, ref_test.bounds)
    assert "the first sitting's" in lr_test.figure.axes[0].get_title().replace("\n", " ")
    assert [(s["first_epoch"], s["last_epoch"]) for s in history.sittings] == [(1, 2), (3, 4), (5, 6)]
    assert all(s["device"] == h.device_name("cpu") and s["precision"] for s in history.sittings)
    resumed_record, reference_record = record(tmp_path, "a", model, history, lr_test), record(
        tmp_path, "b", ref_model, reference, ref_test)
    assert timeless(resumed_record) == timeless(reference_record)
    assert resumed_record["max_lr"] == ref_test.bounds.lr_max, "the schedule's bounds, from the first sitting"
    assert len(resumed_record["sittings"]) == 3 and resumed_record["wall_seconds"] == pytest.approx(
        sum(s["seconds"] for s in history.sittings), abs=0.2)
    text = h.describe_training(history)
    assert text.startswith(f"{EPOCHS} epochs in ") and "in 3 sittings:" in text and "epochs 3-4: cpu" in text


def test_a_budget_spent_before_the_first_epoch_keeps_the_range_test_for_the_next_sitting(tiny_data, tmp_path):
    checkpoint = tmp_path / "run.pt"
    clock = Clock()
    run = h.TrainingRun("test_run", checkpoint, parameters=PARAMETERS, max_hours=0.5, clock=clock)
    clock.now = HOUR  # the data and the range test took the whole budget
    with pytest.raises(h.BudgetReached, match="nothing trained in this sitting"):
        sitting(tiny_data, run)
    state = h.load_checkpoint(checkpoint)
    assert state["epoch"] == 0 and state["history"] == [] and state["run"]["range_test"]["lrs"]
    history, *_ = sitting(tiny_data, h.TrainingRun("test_run", checkpoint, parameters=PARAMETERS, max_hours=9))
    reference, *_ = sitting(tiny_data, None)
    assert metrics(history) == metrics(reference)


def test_the_budget_judges_by_the_slowest_measured_epoch_and_keeps_time_for_the_end():
    clock = Clock()
    run = h.TrainingRun("test_run", None, parameters={}, max_hours=2.0, clock=clock)
    history = h.History([{"epoch": e, "seconds": s} for e, s in ((1, 500.0), (2, 600.0), (3, 550.0))])
    history.sittings = [_sitting(1, 3, "cpu (X)", "bf16", "", history["seconds"], test_seconds=100.0)]
    clock.now = 2 * HOUR - 600
    assert _fits_budget(run, history, "cpu (X)", last_epoch=False) == (True, 600.0)
    clock.now += 1
    assert _fits_budget(run, history, "cpu (X)", last_epoch=False) == (False, 600.0)
    clock.now = 2 * HOUR - 600 - FINISH_TEST_PASSES * 100
    assert _fits_budget(run, history, "cpu (X)", last_epoch=True)[0]
    clock.now += 1
    assert not _fits_budget(run, history, "cpu (X)", last_epoch=True)[0], "the last epoch keeps time for the end"
    assert _fits_budget(run, history, "cuda (Y)", last_epoch=False) == (True, None), "another device: unknown"
    assert _fits_budget(h.TrainingRun("x", None, parameters={}), history, "cpu (X)", False) == (True, None)


def first_sitting(tiny_data, tmp_path, hours: float):
    """A run's first sitting, stopped by a budget of `hours` (an hour per epoch); returns its checkpoint."""
    checkpoint, clock = tmp_path / "run.pt", Clock()
    with pytest.raises(h.BudgetReached):
        sitting(tiny_data, h.TrainingRun("test_run", checkpoint, parameters=PARAMETERS, max_hours=hours,
                                         clock=clock), clock)
    return checkpoint


def test_a_budget_too_small_for_one_epoch_says_so_before_training(tiny_data, tmp_path):
    checkpoint = first_sitting(tiny_data, tmp_path, hours=1.5)
    state = h.load_checkpoint(checkpoint)
    for r in state["history"]:
        r["seconds"] = 1800.0  # as if each epoch had taken half an hour on this device
    torch.save(state, checkpoint)
    run = h.TrainingRun("test_run", checkpoint, parameters=PARAMETERS, max_hours=0.25, clock=Clock())
    with pytest.raises(h.BudgetReached) as stop:
        sitting(tiny_data, run)
    assert str(stop.value).startswith("nothing trained in this sitting: 15.0 min of its 0.25 h budget were left, "
                                      "less than the next epoch (epoch 3 of 6) (an epoch takes about 30.0 min here)")
    assert h.load_checkpoint(checkpoint)["epoch"] == 2, "the checkpoint is left as it was"


def test_a_checkpoint_of_another_notebook_or_other_parameters_is_refused_in_one_line(tiny_data, tmp_path):
    checkpoint = first_sitting(tiny_data, tmp_path, hours=0.5)
    moved = {**PARAMETERS, "DEVICE": "cuda", "MAX_HOURS": None, "DATA_ROOT": "elsewhere"}
    assert h.TrainingRun("test_run", checkpoint, parameters=moved).epochs_done == 1, "where it runs may change"
    with pytest.raises(h.CheckpointError) as refused:
        h.TrainingRun("test_run", checkpoint, parameters={**PARAMETERS, "EPOCHS": 30, "BATCH_SIZE": 64})
    assert str(refused.value) == (f"{h.shown_path(checkpoint)} was written by a run with other parameters "
                                  "(BATCH_SIZE = 32 there, 64 here; EPOCHS = 6 there, 30 here): delete it, or point "
                                  "CHECKPOINT at another file, to start this run fresh")
    assert refused.value._render_traceback_() == [f"CheckpointError: {refused.value}"], "one line in Jupyter"
    with pytest.raises(h.CheckpointError, match="belongs to notebook test_run, not 03_other: delete it"):
        h.TrainingRun("03_other", checkpoint, parameters=PARAMETERS)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(h.CheckpointError, match="is truncated or damaged .*: delete it, or point CHECKPOINT"):
        h.TrainingRun("test_run", checkpoint, parameters=PARAMETERS)


def test_training_parameters_leave_out_where_the_run_happens():
    namespace = {"EPOCHS": 30, "LR_BOUNDS": (1e-3, 0.1), "CHECKPOINT": "x.pt", "DEVICE": "cuda", "MAX_HOURS": 2.0,
                 "REPO_URL": "https://example.org", "model": object(), "PATH": h.PROJECT_ROOT, "h": h}
    assert h.training_run.training_parameters(namespace) == {"EPOCHS": 30, "LR_BOUNDS": (1e-3, 0.1)}
    with pytest.raises(ValueError, match="max_hours must be positive"):
        h.TrainingRun("x", None, parameters={}, max_hours=0)


def test_describe_training_says_where_the_epochs_ran():
    history = h.History([{"epoch": 1, "seconds": 60.0}, {"epoch": 2, "seconds": 90.0}])
    assert h.describe_training(history) == "2 epochs in 2.5 min of training"
    assert h.describe_training(history, "Tesla T4") == "2 epochs in 2.5 min of training on Tesla T4"
    history.sittings = [_sitting(1, 2, "cpu (AMD EPYC, 2 threads)", "bf16", "2026-12-02T22:00:00+0000", [60, 90])]
    assert h.describe_training(history) == "2 epochs in 2.5 min of training on cpu (AMD EPYC, 2 threads), bf16"
    history.sittings = [_sitting(1, 1, "cpu (AMD EPYC, 2 threads)", "bf16", "2026-12-02T22:00:00+0000", [60]),
                        _sitting(2, 2, "Tesla T4", "fp16 + GradScaler", "2026-12-03T09:00:00+0000", [90])]
    assert h.describe_training(history) == ("2 epochs in 2.5 min of training, in 2 sittings:\n"
                                            "  epoch 1: cpu (AMD EPYC, 2 threads), bf16, started 2026-12-02 22:00, "
                                            "1.0 min\n"
                                            "  epoch 2: Tesla T4, fp16 + GradScaler, started 2026-12-03 09:00, 1.5 min")
