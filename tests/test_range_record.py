"""range_record: a notebook's own range test run for several seeds, recorded with its cycle bounds."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest

from helpers.range_record import main, notebook_cells, parse_override, run_range_test, summarize

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def write_notebook(path: Path) -> Path:
    cells = [nbformat.v4.new_code_cell("import math"),
             nbformat.v4.new_code_cell("SEED = 0\nSCALE = 1.0", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("find_lr = lambda seed, scale: {'seed': seed, 'scale': scale}"),
             nbformat.v4.new_code_cell("lr_test = find_lr(SEED, SCALE)"),
             nbformat.v4.new_code_cell("raise RuntimeError('training: never reached')")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)
    return path


def test_runs_the_cells_up_to_the_range_test_with_the_overrides(tmp_path) -> None:
    path = write_notebook(tmp_path / "nb.ipynb")
    assert len(notebook_cells(path)) == 4
    namespace = run_range_test(path, {"SEED": 2, "SCALE": 0.5})
    assert namespace["lr_test"] == {"seed": 2, "scale": 0.5}


def test_a_notebook_without_a_range_test_is_refused(tmp_path) -> None:
    path = tmp_path / "nb.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), path)
    with pytest.raises(ValueError, match="no cell that calls find_lr"):
        notebook_cells(path)


@pytest.mark.parametrize("name", ["03_resnet18_lrfinder_gradcam", "04_resnet9_onecycle"])
def test_the_notebooks_range_test_cell_is_found_before_training(name) -> None:
    cells = notebook_cells(NOTEBOOKS / f"{name}.ipynb")
    assert "find_lr(" in cells[-1] and not any("h.fit(" in cell for cell in cells)
    assert sum(cell.startswith("# parameters\n") for cell in cells) == 1


def test_summarize_adds_bounds_and_their_spread_and_the_figure_shows_every_seed(tmp_path) -> None:
    lrs = np.logspace(-4, 1, 60)
    runs = []
    for seed, centre in enumerate((-2.0, -1.8)):
        turn = 10 ** (centre + 1)  # the loss stops falling a decade past the centre of its fall
        losses = (2.3 - 0.4 / (1 + np.exp(-4 * (np.log10(lrs) - centre)))
                  + np.where(lrs > turn, 3 * np.log10(lrs / turn), 0))
        runs.append({"seed": seed, "steepest_descent_lr": 0.01, "lrs": lrs.tolist(), "losses": losses.tolist()})
    record = summarize({"notebook": "nb.ipynb", "device": "cpu", "runs": runs})
    assert record["cycle_lr_max_range"][0] < record["cycle_lr_max_range"][1]
    assert all(run["cycle_lr_min"] < run["cycle_lr_max"] for run in record["runs"])
    out = tmp_path / "record.json"
    out.write_text(json.dumps(record))
    main(["nb.ipynb", "--out", str(out), "--summarize-only"])
    assert json.loads(out.read_text())["cycle_lr_max_range"] == record["cycle_lr_max_range"]
    assert out.with_suffix(".png").stat().st_size > 0
    plt.close("all")


def test_overrides_are_python_literals() -> None:
    assert parse_override("LR_TEST_ITERATIONS=50") == ("LR_TEST_ITERATIONS", 50)
    assert parse_override("DEVICE='cpu'") == ("DEVICE", "cpu")
    with pytest.raises(Exception):
        parse_override("no value")
