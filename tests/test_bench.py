"""helpers.bench: a tiny CPU run end to end, the old and new training paths, airbench94 on a CPU and its data files."""
from __future__ import annotations

import json
import re

import pytest
import torch

import helpers as h
from helpers import bench


def test_bench_runs_on_cpu_and_writes_the_markdown_table(synthetic_root, tmp_path):
    out = tmp_path / "bench.md"
    report = bench.main(["--device", "cpu", "--data-root", str(synthetic_root), "--images", "64",
                         "--batch-size", "16", "--steps", "1", "--data-steps", "2", "--repeats", "1",
                         "--warmup", "0", "--path-models", "resnet9", "--path-steps", "1", "--eval-images", "8",
                         "--eval-batches", "8", "16", "--no-airbench", "--out", str(out)])
    assert out.read_text() == report
    for path in ("(a) torchvision DataLoader", "(b) albumentations DataLoader", "(c) TensorLoader"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {path} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1].replace(",", "")) > 0 and float(cells[3].replace(",", "")) > 0
    assert str(synthetic_root) in report and "torch " in report and "cpu" in report
    assert "airbench94: skipped (--no-airbench)." in report
    row = next(line for line in report.splitlines() if line.startswith("| resnet9 (04), 64 |"))
    new_path, *figures = [c.strip() for c in row.strip("|").split("|")[1:]]
    assert new_path == f"{h.devices.precision_name(h.autocast_dtype('cpu'))}, channels-last"
    cells = [float(c.replace(",", "")) for c in figures]
    assert len(cells) == 6 and all(c > 0 for c in cells), "old and new training and evaluation, their ratios"
    assert f"precision {h.describe_precision('cpu')}" in report and h.device_name("cpu") in report
    for pipeline in bench.PIPELINES:  # the notebooks' augmentations: both paths measured, training only on CUDA
        row = next(line for line in report.splitlines() if line.startswith(f"| {pipeline.name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1].replace(",", "")) > 0 and float(cells[2].replace(",", "")) > 0
        assert cells[5:] == ["-", "-", "-"]
    assert "whole epochs of 64 images" in report


def test_pipeline_training_compares_with_crop_and_flip_only(synthetic_root):
    data = h.load_cifar10(synthetic_root)
    pipeline = bench.NotebookPipeline("05-like", bench.PIPELINES[-1].augment, "lightnet", 16)
    row = bench.measure_pipeline(pipeline, data.train_images[:32], data.train_labels[:32], torch.device("cpu"),
                                 repeats=1, num_workers=0, train=True, compile=False)
    assert row.dataloader_images_per_s > 0 and row.tensor_images_per_s > 0
    assert row.train_images_per_s > 0 and row.crop_flip_train_images_per_s > 0
    cells = bench.pipelines_table([row]).splitlines()[-1].strip("|").split("|")
    ratio = row.crop_flip_train_images_per_s / row.train_images_per_s
    assert cells[0].strip() == "05-like" and cells[-1].strip() == f"{ratio:.2f}"


def test_the_old_and_new_paths_are_what_they_say(synthetic_root, monkeypatch):
    """Old: fp32, NCHW, the albumentations DataLoader; new: fit's precision and format, the TensorLoader."""
    data = h.load_cifar10(synthetic_root)
    used = []
    monkeypatch.setattr(bench, "train_throughput", lambda make_model, loader, *args, amp_dtype, channels_last, **kw:
                        used.append((type(loader).__name__, amp_dtype, channels_last)) or 1.0)
    row = bench.measure_paths(bench.ModelPath("resnet9", 16, "04"), data.train_images[:32], data.train_labels[:32],
                              torch.device("cpu"), steps=1, repeats=1, eval_images=8, eval_batches=[8])
    assert used == [("DataLoader", None, False), ("TensorLoader", h.autocast_dtype("cpu"), True)]
    assert row.old_eval > 0 and row.new_eval > 0 and list(row.new_eval_by_batch) == [8]
    assert "**" in bench.eval_batches_table([row])


def test_airbench94_trains_on_a_cpu(tmp_path):
    """airbench 0.1.8's own loop, network and evaluation, on the CPU through `airbench_on_cpu` (shortened: 20
    steps on 500 synthetic images)."""
    pytest.importorskip("airbench")
    h.write_synthetic_cifar10(tmp_path / "data", n_train=500, n_test=100)
    data = h.load_cifar10(tmp_path / "data")
    result = bench.run_airbench94(data, tmp_path, torch.device("cpu"), seed=0, epochs=2, batch_size=50)
    assert 0 <= result["test_acc_plain"] <= 1 and 0 <= result["test_acc"] <= 1 and result["seconds"] > 0
    assert result["precision"] == h.devices.precision_name(h.autocast_dtype("cpu"))
    assert result["test_acc"] > 0.5, "synthetic classes are easy; chance is 0.1"
    assert not torch.cuda.is_initialized()


def test_data_only_mode_skips_the_model(synthetic_root, tmp_path):
    report = bench.main(["--device", "cpu", "--data-root", str(synthetic_root), "--images", "64",
                         "--batch-size", "16", "--data-steps", "2", "--repeats", "1", "--warmup", "0",
                         "--data-only", "--no-paths", "--no-airbench", "--out", str(tmp_path / "b.md")])
    assert "| (c) TensorLoader |" in report and "| - | - |" in report
    assert "training: not measured here" in report


def test_airbench_data_files_have_its_cifar_loader_format(synthetic_root, tmp_path):
    data = h.load_cifar10(synthetic_root)
    folder = bench.write_airbench_data(data, tmp_path / "cifar10")
    train = torch.load(folder / "train.pt", weights_only=True)  # airbench's torch.load must accept them
    test = torch.load(folder / "test.pt", weights_only=True)
    assert train["images"].dtype == torch.uint8 and train["images"].shape == (100, 32, 32, 3)
    assert train["labels"].dtype == torch.int64 and train["classes"] == list(data.classes)
    assert torch.equal(test["images"], torch.from_numpy(data.test_images))


@pytest.mark.parametrize("pipeline", bench.PIPELINES, ids=lambda pipeline: pipeline.name[:2])
def test_bench_pipelines_are_the_notebooks_own(pipeline, monkeypatch):
    """The augmentation, model and batch size benchmarked are those of the notebook's full run."""
    monkeypatch.delenv("SMOKE", raising=False)
    path = next((h.PROJECT_ROOT / "notebooks").glob(f"{pipeline.name[:2]}_*.ipynb"))
    code = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    parameters = {"h": h}
    exec(next(cell for cell in code if cell.startswith("SMOKE = h.smoke_mode()")), parameters)
    augment = re.search(r"h\.Augmentation\(.*?\)\n", "\n".join(code), re.S).group(0)
    assert eval(augment, parameters) == pipeline.augment
    assert parameters["BATCH_SIZE"] == pipeline.batch_size
    assert re.search(r"h\.models\.(\w+)\(", "\n".join(code)).group(1) == pipeline.model


def test_airbench_training_time_in_seconds_on_a_gpu_and_minutes_on_a_cpu():
    assert bench.duration(2.9) == "2.9 s" and bench.duration(89.94) == "89.9 s" and bench.duration(90) == "1.5 min"
    assert bench.duration(1530) == "25.5 min"


def test_compile_models_writes_the_eager_against_compiled_table_alone(synthetic_root, tmp_path, monkeypatch):
    """The plumbing of `--compile-models` (torch.compile itself is left out: compiling on 2 CPU cores takes
    minutes): one row per chosen model, its batch size, both rates and their ratio; nothing else measured."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    out = tmp_path / "compile.md"
    report = bench.main(["--device", "cpu", "--data-root", str(synthetic_root), "--images", "256", "--steps", "1",
                         "--repeats", "1", "--warmup", "0", "--compile-models", "--path-models", "lightnet",
                         "--out", str(out)])
    assert out.read_text() == report and len(compiled) == 1
    assert "| lightnet (02), 128 | " in report and "Input pipelines" not in report and "airbench" not in report
