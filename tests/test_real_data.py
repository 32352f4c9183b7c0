"""Notebook 04's pipeline on a few thousand real images for a short CPU budget (skips without the offline copy)."""
import json
import os

import pytest

import helpers as h

papermill = pytest.importorskip("papermill")

NOTEBOOK = h.PROJECT_ROOT / "notebooks" / "04_resnet9_onecycle.ipynb"


def test_notebook04_pipeline_learns_real_cifar10(real_root, tmp_path):
    """Run the notebook itself (real batch files, augmentation, LR range test, ResNet-9, one-cycle SGD, fit,
    evaluation, run record) on 1,600 real training images for 2 epochs on the CPU (about 1.5 minutes on 2 cores);
    guessing would score 10%."""
    params = {"SMOKE": False, "EPOCHS": 2, "PEAK_EPOCH": 1, "BATCH_SIZE": 64, "TRAIN_SUBSET": 1600,
              "TEST_SUBSET": 500, "MAX_LR": 0.05, "DIV_FACTOR": 100, "LR_TEST_ITERATIONS": 17,
              "LR_TEST_BATCH_SIZE": 16,
              "DEVICE": "cpu", "DATA_ROOT": str(real_root), "CHECKPOINT": None, "RESULTS_DIR": str(tmp_path)}
    os.environ.setdefault("SMOKE", "0")
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters=params,
                               cwd=str(NOTEBOOK.parent), kernel_name="python3", progress_bar=False)
    record = json.loads((tmp_path / "04_resnet9_onecycle.json").read_text())
    print(f"real data, 2 CPU epochs on 1,600 images ({record['wall_seconds']:.0f} s of training): "
          f"{h.engine.describe_final_model(record['final_model'])}")
    assert record["data"].startswith("CIFAR-10 batch files") and "SYNTHETIC" not in record["data"]
    assert record["epochs"] == 2 and record["parameters"] == 6_573_130
    assert record["final_model"]["test_acc"] > 0.30
    assert {"test_acc_tta", "test_acc_ema", "test_acc_ema_tta"} <= set(record["final_model"])  # reported beside
