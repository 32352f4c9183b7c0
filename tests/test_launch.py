"""`make run` (helpers.launch): full run on CUDA or when forced; elsewhere an estimate and a quick reduced run."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
import torch
from torch import nn

import helpers as h
from helpers import launch

NOTEBOOKS = sorted((h.PROJECT_ROOT / "notebooks").glob("0*.ipynb"))
MODELS = {"01": "resnet18", "02": "lightnet", "03": "resnet18", "04": "resnet9", "05": "resnet_kaggle"}
CPU_TIMING = launch.Timing(train=0.011, eval=0.003)  # ResNet18 on this 2-core machine, as make run timed it


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_full_run_parameters_are_the_defaults_even_under_smoke(monkeypatch):
    monkeypatch.setenv("SMOKE", "1")
    params = launch.full_run_parameters(read(NOTEBOOKS[0]))
    assert params["SMOKE"] is False and params["EPOCHS"] == 30 and params["BATCH_SIZE"] == 128
    assert params["TRAIN_SUBSET"] is None and params["VAL_SIZE"] == 2000
    assert h.smoke_mode(), "SMOKE is restored afterwards"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_names_its_model_and_sizes_its_full_run(path):
    notebook = read(path)
    assert launch.notebook_model(notebook) == MODELS[path.name[:2]]
    size = launch.full_run_size(launch.full_run_parameters(notebook))
    assert size.epochs >= 24 and 45_000 <= size.train_images <= 50_000 and size.eval_images >= 10_000


def test_full_run_size_counts_validation_and_the_lr_test():
    size = launch.full_run_size({"EPOCHS": 50, "TRAIN_SUBSET": None, "TEST_SUBSET": None, "VAL_SIZE": 5000,
                                 "LR_TEST_ITERATIONS": 200, "LR_TEST_BATCH_SIZE": 128})
    assert size == launch.RunSize(50, 45_000, 15_000, 25_600, 10_000, ema=False)
    assert size.seconds(launch.Timing(0.01, 0.001)) == pytest.approx(
        launch.NOTEBOOK_OVERHEAD_SECONDS + 50 * (450 + 15) + 256 + 10 * launch.FINAL_PASSES)
    with_ema = launch.full_run_size({"EPOCHS": 50, "VAL_SIZE": 5000, "EMA_DECAY": 0.999})
    assert with_ema.ema and with_ema.seconds(launch.Timing(0.01, 0.001)) == pytest.approx(
        launch.NOTEBOOK_OVERHEAD_SECONDS + 50 * (450 + 2 * 15) + 10 * launch.FINAL_PASSES_EMA)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_quick_run_is_reduced_fits_its_budget_and_sets_only_the_notebooks_parameters(path):
    params = launch.full_run_parameters(read(path))
    quick, size = launch.quick_run(params, CPU_TIMING, torch.device("cpu"), minutes=3)
    assert set(quick) <= set(params)
    assert quick["EPOCHS"] == 3 and quick["DEVICE"] == "cpu" and quick["CHECKPOINT"] is None
    assert quick["RESULTS_DIR"].startswith("runs/quick")
    assert launch.QUICK_MIN_IMAGES <= quick["TRAIN_SUBSET"] <= 5000
    assert size.seconds(CPU_TIMING) <= 3 * 60 * 1.05
    assert quick.get("VAL_SIZE", 0) < quick["TRAIN_SUBSET"] / 5
    assert quick.get("PEAK_EPOCH", 1) < quick["EPOCHS"] and quick.get("WARMUP_EPOCHS", 1) < quick["EPOCHS"]
    assert quick.get("COSINE_START_EPOCH", 0) <= quick.get("WARMUP_EPOCHS", 1), "notebook 05's cosine phase"
    assert quick.get("LR_TEST_ITERATIONS", 17) >= 17
    assert launch.full_run_size(params).seconds(CPU_TIMING) > 50 * size.seconds(CPU_TIMING)


def test_a_slow_device_still_gets_a_real_quick_run():
    params = launch.full_run_parameters(read(NOTEBOOKS[0]))
    quick, _ = launch.quick_run(params, launch.Timing(1.0, 0.5), torch.device("cpu"), minutes=3)
    assert quick["TRAIN_SUBSET"] == launch.QUICK_MIN_IMAGES


def test_time_model_measures_seconds_per_image():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    timing = launch.time_model(model, torch.device("cpu"), batch_size=8, steps=2)
    assert 0 < timing.train < 1 and 0 < timing.eval < 1


@pytest.mark.parametrize("seconds, text", [(40, "40 s"), (218, "3.6 min"), (600, "10 min"), (3 * 3600, "3.0 h"),
                                           (5 * 86400, "5.0 days")])
def test_format_duration(seconds, text):
    assert launch.format_duration(seconds) == text


@pytest.fixture
def executed(monkeypatch, tmp_path):
    """Record papermill calls instead of running them (each writes its notebook, unexecuted, to its output, or
    raises what the test put in `executed.errors`); runs land in tmp_path; the model timing is fixed."""
    import papermill

    calls = Calls()

    def execute_notebook(notebook, output, parameters=None, cwd=None, **kwargs):
        calls.append((notebook, output, parameters, cwd))
        node = notebook if isinstance(notebook, nbformat.NotebookNode) else read(notebook)
        node.metadata["papermill"] = {"output_path": str(Path(output).resolve())}  # as papermill writes it
        if calls.errors:  # papermill heads a failed notebook with its "An Exception was encountered" cell
            error_cell = nbformat.v4.new_markdown_cell("An Exception was encountered")
            error_cell.metadata["tags"] = ["papermill-error-cell-tag"]
            node.cells.insert(0, error_cell)
        nbformat.write(node, output)
        if calls.errors:
            raise calls.errors.pop(0)

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    monkeypatch.setattr(launch, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(launch, "time_model", lambda model, device, **kwargs: CPU_TIMING)
    return calls


class Calls(list):
    errors: list[Exception]

    def __init__(self) -> None:
        super().__init__()
        self.errors = []


def copied(path: Path, tmp_path: Path) -> Path:
    """A copy of a project notebook, so that a full run's move over the stored notebook stays in the test."""
    folder = tmp_path / "notebooks"
    folder.mkdir(exist_ok=True)
    (folder / path.name).write_text(path.read_text())
    return folder / path.name


def budget_stop(line: str) -> Exception:
    from papermill.exceptions import PapermillExecutionError
    return PapermillExecutionError(16, 1, "history = h.fit(...)", "BudgetReached", line, [f"BudgetReached: {line}"])


def test_without_cuda_make_run_estimates_and_runs_a_labelled_quick_run(executed, capsys, tmp_path):
    nb = NOTEBOOKS[0]
    assert launch.main([str(nb), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Device: cpu" in out and "no CUDA GPU" in out
    assert "would take about" in out and " h " in out, "the full run's estimate, in hours on a CPU"
    assert f"make run NB={nb.relative_to(h.PROJECT_ROOT)} FORCE=1" in out, "the project-relative path"
    [(notebook, output, parameters, cwd)] = executed
    assert Path(output) == tmp_path / "runs" / "quick" / nb.name and Path(cwd) == nb.parent
    assert parameters["EPOCHS"] == 3 and parameters["TRAIN_SUBSET"] < 10_000
    banner = notebook.cells[0]
    assert banner.cell_type == "markdown" and "QUICK CPU RUN: not the full result" in banner.source
    assert "FORCE=1" in banner.source and "would take about" in banner.source
    assert nbformat.validate(notebook) is None


def test_forced_or_on_cuda_make_run_runs_the_full_notebook_and_keeps_it_when_it_finishes(executed, monkeypatch,
                                                                                         tmp_path):
    nb = copied(NOTEBOOKS[3], tmp_path)
    monkeypatch.setattr("helpers.data.PROJECT_ROOT", tmp_path)  # the copy's project, as `shown_path` sees it
    launch.main([str(nb), "--device", "cpu", "--force"])
    monkeypatch.setattr(launch, "select_device", lambda preferred=None: torch.device("cuda"))
    monkeypatch.setattr(launch, "device_name", lambda device: "a CUDA GPU")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a CUDA GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    launch.main([str(nb)])
    partial = tmp_path / "runs" / "partial" / nb.name
    assert [(str(a), str(b), p) for a, b, p, _ in executed] == [(str(nb), str(partial), None)] * 2
    assert nb.exists() and not partial.exists(), "the finished run's executed copy replaced the stored notebook"
    assert read(nb).metadata["papermill"]["output_path"] == "notebooks/" + nb.name, "no path of this machine"


def test_make_run_with_hours_runs_in_sittings_and_keeps_a_stopped_one_apart(executed, capsys, tmp_path):
    nb = copied(NOTEBOOKS[0], tmp_path)
    stored = nb.read_text()
    line = "stopped after epoch 3 of 30 at its 0.5 h budget; `make run NB=notebooks/x.ipynb` resumes it"
    executed.errors.append(budget_stop(line))
    assert launch.main([str(nb), "--device", "cpu", "--hours", "0.5"]) == 0
    out = capsys.readouterr().out
    [(_, output, parameters, _)] = executed
    assert parameters == {"MAX_HOURS": 0.5} and Path(output) == tmp_path / "runs" / "partial" / nb.name
    assert "none yet, the run starts fresh" in out
    assert "Full run in sittings, this one at most 0.5 h" in out and line in out
    assert f"This sitting's executed copy: {h.shown_path(output)} (the stored notebook" in out
    assert nb.read_text() == stored and Path(output).exists(), "a stopped sitting never replaces the notebook"
    banner = read(output).cells[0]
    assert banner.source.startswith(f"> **ONE SITTING OF A LONGER RUN, not the result:** {line}.")
    assert not any("papermill-error-cell-tag" in c.metadata.get("tags", []) for c in read(output).cells)


def test_make_run_refuses_a_budget_below_one_epoch_and_a_notebook_without_one(executed, capsys, tmp_path):
    assert launch.main([str(NOTEBOOKS[0]), "--device", "cpu", "--hours", "0.01"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("A budget of 0.01 h is less than the first epoch of this sitting here (about ")
    without_budget = read(NOTEBOOKS[3])  # every notebook has MAX_HOURS: a user's copy without it
    cell = next(c for c in without_budget.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(line for line in cell.source.splitlines()
                            if "MAX_HOURS" not in line and "fits and" not in line)
    nbformat.write(without_budget, tmp_path / NOTEBOOKS[3].name)
    assert launch.main([str(tmp_path / NOTEBOOKS[3].name), "--device", "cpu", "--hours", "2"]) == 1
    assert "takes no time budget (it has no MAX_HOURS parameter)" in capsys.readouterr().err
    assert executed == [], "nothing started"


def test_make_run_says_where_the_checkpoint_is_and_refuses_another_runs(executed, capsys, tmp_path, own_cache):
    nb = copied(NOTEBOOKS[0], tmp_path)
    params = launch.full_run_parameters(read(nb))
    checkpoint = params["CHECKPOINT"]
    assert checkpoint == own_cache / "cifar10-notebooks" / "checkpoints" / "01_resnet18.pt"
    run = h.TrainingRun(nb.stem, checkpoint, parameters={**params, "EPOCHS": 30})
    h.save_checkpoint(checkpoint, {"epoch": 12, "epochs": 30, "run": run.entry()})
    executed.errors.append(budget_stop("stopped"))
    assert launch.main([str(nb), "--device", "cpu", "--hours", "3"]) == 0
    out = capsys.readouterr().out
    assert f"Checkpoint {h.shown_path(checkpoint)}: this run's, after epoch 12 of 30: it resumes from there." in out
    assert "What is left (18 epochs) would take about" in out
    h.save_checkpoint(checkpoint, {"epoch": 12, "epochs": 30, "run": {**run.entry(), "notebook": "03_other"}})
    assert launch.main([str(nb), "--device", "cpu"]) == 1
    assert "belongs to notebook 03_other, not 01_resnet18_baseline: delete it" in capsys.readouterr().err
    assert len(executed) == 1


def test_make_run_executes_quietly(tmp_path, capfd):
    """The kernel is reached over local sockets: no 'Kernel is running over TCP without encryption' per notebook."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    launch.execute(notebook, str(tmp_path / "out.ipynb"), progress_bar=False)
    assert read(tmp_path / "out.ipynb").cells[0].outputs[0]["text"] == "hello\n"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err
