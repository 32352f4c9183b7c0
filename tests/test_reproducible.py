"""Same seed, same notebook: two runs of notebook 03 (augmentation preview, LR range test, training) agree."""
import json

import pytest

import helpers as h

papermill = pytest.importorskip("papermill")

NOTEBOOK = h.PROJECT_ROOT / "notebooks" / "03_resnet18_lrfinder_gradcam.ipynb"


def run(tmp_path, name: str) -> tuple[dict, list[str]]:
    """Execute the notebook's smoke run; return its run record and every image it drew (PNG, base64)."""
    folder = tmp_path / name
    folder.mkdir()
    executed = papermill.execute_notebook(str(NOTEBOOK), str(folder / "out.ipynb"), cwd=str(NOTEBOOK.parent),
                                          parameters={"RESULTS_DIR": str(folder)}, kernel_name="python3",
                                          progress_bar=False)
    record = json.loads((folder / "03_resnet18_lrfinder_gradcam.json").read_text())
    images = [o["data"]["image/png"] for c in executed.cells if c.cell_type == "code"
              for o in c.outputs if "image/png" in o.get("data", {})]
    return record, images


def test_two_runs_with_the_same_seed_are_the_same(tmp_path, monkeypatch):
    """Every random stream before and outside `fit` (the augmentation preview's and the range test's albumentations
    draws, shuffling, initialization) is seeded from SEED, so the suggestion, the history and every plot agree."""
    monkeypatch.setenv("SMOKE", "1")
    first, first_images = run(tmp_path, "first")
    second, second_images = run(tmp_path, "second")
    assert first["suggested_lr"] == second["suggested_lr"]
    drop_time = [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in first["history"]]
    assert drop_time == [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in second["history"]]
    assert len(first_images) >= 6 and first_images == second_images
