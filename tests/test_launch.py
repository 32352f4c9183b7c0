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
    """Record papermill calls instead of running them; quick runs land in tmp_path; the model timing is fixed."""
    import papermill

    calls = []
    monkeypatch.setattr(papermill, "execute_notebook",
                        lambda notebook, output, parameters=None, cwd=None, **kwargs: calls.append(
                            (notebook, output, parameters, cwd)))
    monkeypatch.setattr(launch, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(launch, "time_model", lambda model, device, **kwargs: CPU_TIMING)
    return calls


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


def test_forced_or_on_cuda_make_run_runs_the_full_notebook_in_place(executed, monkeypatch):
    nb = NOTEBOOKS[3]
    launch.main([str(nb), "--device", "cpu", "--force"])
    monkeypatch.setattr(launch, "select_device", lambda preferred=None: torch.device("cuda"))
    monkeypatch.setattr(launch, "device_name", lambda device: "a CUDA GPU")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a CUDA GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    launch.main([str(nb)])
    assert [(str(a), str(b), p) for a, b, p, _ in executed] == [(str(nb), str(nb), None)] * 2


def test_make_run_executes_quietly(tmp_path, capfd):
    """The kernel is reached over local sockets: no 'Kernel is running over TCP without encryption' per notebook."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hello')")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    launch.execute(notebook, str(tmp_path / "out.ipynb"), progress_bar=False)
    assert read(tmp_path / "out.ipynb").cells[0].outputs[0]["text"] == "hello\n"
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err
