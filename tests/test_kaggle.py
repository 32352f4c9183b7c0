"""The Kaggle inference tool: input layouts, unsafe and broken files, the CSV, TTA and the command line."""
import csv
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import kaggle
from helpers.data import PROJECT_ROOT, synthetic_images
from helpers.models import ResNet, resnet_kaggle
from helpers.safe_pickle import UnsafePickleError

N = 6


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return synthetic_images(np.arange(N) % 10, seed=3)


@pytest.fixture(scope="module")
def ids() -> list[int]:
    return [1000 + 7 * i for i in range(N)][::-1]  # not sorted: the CSV must keep the input order


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = resnet_kaggle()
    with torch.no_grad():  # non-trivial running statistics, so predictions differ between images
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory) -> str:
    return str(kaggle.export_model(tmp_path_factory.mktemp("model") / "model.safetensors", model,
                                   "resnet_kaggle"))


def _write_pickle(path, data, ids) -> str:
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"ids": ids}, f)
    return str(path)


def _read_csv(path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_three_layouts_give_the_same_images_and_predictions(images, ids, model, exported, tmp_path, capsys):
    layouts = {"hwc": images, "chw": images.transpose(0, 3, 1, 2).copy(),
               "flat": images.transpose(0, 3, 1, 2).reshape(N, 3072).copy()}  # CIFAR batch rows (planar)
    rows = {}
    for name, data in layouts.items():
        unlabeled = kaggle.load_unlabeled(_write_pickle(tmp_path / f"{name}.pkl", data, ids))
        assert np.array_equal(unlabeled.images, images), name
        kaggle.make_submission(exported, tmp_path / f"{name}.pkl", tmp_path / f"{name}.csv", device="cpu")
        rows[name] = _read_csv(tmp_path / f"{name}.csv")
    assert rows["hwc"] == rows["chw"] == rows["flat"]
    assert "test-time augmentation (flip): off" in capsys.readouterr().out, "TTA is off by default"
    expected = kaggle.predict_probabilities(model, images, "cpu").argmax(1)
    assert [int(r[1]) for r in rows["hwc"][1:]] == expected.tolist()


def test_unknown_layout_is_described(tmp_path):
    path = _write_pickle(tmp_path / "bad.pkl", np.zeros((4, 32, 32), np.uint8), [0, 1, 2, 3])
    with pytest.raises(kaggle.KaggleInputError, match=r"uint8 data of shape \[4, 32, 32\].*expected uint8 images"):
        kaggle.load_unlabeled(path)
    path = _write_pickle(tmp_path / "float.pkl", np.zeros((4, 32, 32, 3), np.float32), [0, 1, 2, 3])
    with pytest.raises(kaggle.KaggleInputError, match="float32 data.*not normalized floats"):
        kaggle.load_unlabeled(path)
    path = _write_pickle(tmp_path / "ids.pkl", np.zeros((4, 32, 32, 3), np.uint8), [0, 1])
    with pytest.raises(kaggle.KaggleInputError, match="4 images but 2 ids"):
        kaggle.load_unlabeled(path)
    with open(tmp_path / "keys.pkl", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}, f)
    with pytest.raises(kaggle.KaggleInputError, match="missing ids"):
        kaggle.load_unlabeled(tmp_path / "keys.pkl")


class _RunsCommand:
    """Pickles as a call to os.system: loading it with plain pickle would run the command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_unsafe_pickle_is_refused_without_running_anything(tmp_path, exported):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({b"data": _RunsCommand(f"touch {marker}"), b"ids": [0]}, f)
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*refused to load.*system.*Nothing was executed"):
        kaggle.load_unlabeled(path)
    assert not marker.exists()
    assert kaggle.main([exported, str(path), "-o", str(tmp_path / "out.csv")]) == 2
    assert not marker.exists() and not (tmp_path / "out.csv").exists()


def test_truncated_files_give_a_clear_error(images, ids, exported, tmp_path):
    whole = open(_write_pickle(tmp_path / "whole.pkl", images, ids), "rb").read()
    (tmp_path / "cut.pkl").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(kaggle.KaggleInputError, match=r"cut\.pkl is truncated or corrupt"):
        kaggle.load_unlabeled(tmp_path / "cut.pkl")
    weights = open(exported, "rb").read()
    (tmp_path / "cut.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(kaggle.KaggleInputError, match=r"cut\.safetensors is not a readable safetensors file "
                                                      r"\(truncated or damaged"):
        kaggle.load_model(tmp_path / "cut.safetensors")


def test_checkpoint_formats(model, exported, tmp_path):
    loaded, name = kaggle.load_model(exported)
    assert name == "resnet_kaggle"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    training = tmp_path / "fit.pt"
    torch.save({"epoch": 1, "model": model.state_dict()}, training)  # what fit() writes (among other keys)
    with pytest.raises(kaggle.KaggleInputError, match="pass --model"):
        kaggle.load_model(training)
    assert kaggle.load_model(training, "resnet_kaggle")[1] == "resnet_kaggle"
    with pytest.raises(kaggle.KaggleInputError, match="unknown model 'nope'"):
        kaggle.export_model(tmp_path / "x.safetensors", model, "nope")
    assert kaggle.is_safetensors(exported)


def test_weights_of_another_architecture_stop_with_one_line_naming_both(model, exported, tmp_path, capsys):
    """Tried as a new user would: a fit() checkpoint with the wrong --model printed torch's load_state_dict error
    with every missing and unexpected key; now one line names what the file holds and what was asked for."""
    images = _write_pickle(tmp_path / "in.pkl", np.zeros((2, 32, 32, 3), np.uint8), [0, 1])
    training = tmp_path / "fit.pt"
    torch.save({"epoch": 1, "model": model.state_dict()}, training)
    output = tmp_path / "out.csv"
    for weights, asked in ((training, "resnet18"), (training, "resnet9"), (exported, "resnet9")):
        assert kaggle.main([str(weights), images, "--model", asked, "-o", str(output)]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and f"resnet_kaggle weights, not {asked}" in error, error
        assert not output.exists()
    assert kaggle.fitting_architectures(model.state_dict()) == ["resnet_kaggle"]
    assert kaggle.fitting_architectures({"x": torch.zeros(1)}) == []


def test_a_pickle_without_images_stops_with_one_line(exported, tmp_path, capsys):
    """It used to end in a 23-line traceback (torch.cat(): expected a non-empty list of Tensors)."""
    empty = _write_pickle(tmp_path / "empty.pkl", np.zeros((0, 32, 32, 3), np.uint8), [])
    assert kaggle.main([exported, empty, "-o", str(tmp_path / "out.csv")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "empty.pkl holds no images" in error
    assert not (tmp_path / "out.csv").exists()


def test_csv_header_and_order(tmp_path):
    path = kaggle.write_submission(tmp_path / "s.csv", [np.int64(5), b"b", "a"], np.array([3, 0, 9]))
    assert path.read_text().splitlines() == ["ID,Labels", "5,3", "b,0", "a,9"]


def test_tta_averages_the_mirror_image(images, ids, exported, tmp_path, capsys):
    torch.manual_seed(0)
    small = ResNet([1], widths=(8,)).eval()  # the averaging itself, on a model small enough to be quick
    plain = kaggle.predict_probabilities(small, images, "cpu")
    mirrored = kaggle.predict_probabilities(small, images[:, :, ::-1].copy(), "cpu")
    tta = kaggle.predict_probabilities(small, images, "cpu", tta=True)
    assert np.allclose(tta, (plain + mirrored) / 2, atol=1e-6)
    assert not np.allclose(plain, mirrored, atol=1e-4), "the mirror image is a different input"
    kaggle.make_submission(exported, _write_pickle(tmp_path / "in.pkl", images, ids), tmp_path / "on.csv",
                           tta=True, device="cpu")
    assert "test-time augmentation (flip): ON" in capsys.readouterr().out


def test_command_line_end_to_end(images, ids, exported, tmp_path):
    path = _write_pickle(tmp_path / "test.pkl", images.transpose(0, 3, 1, 2).reshape(N, -1).copy(), ids)
    output = tmp_path / "submission.csv"
    result = subprocess.run([sys.executable, "-m", "helpers.kaggle", exported, path, "-o", str(output), "--tta",
                             "--device", "cpu"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"Read {N} images ([N, 3072] CIFAR rows)" in result.stdout
    assert "test-time augmentation (flip): ON" in result.stdout
    rows = _read_csv(output)
    assert rows[0] == ["ID", "Labels"]
    assert [int(r[0]) for r in rows[1:]] == ids
    assert all(0 <= int(r[1]) <= 9 for r in rows[1:])


def test_command_line_reports_a_missing_file(exported, tmp_path, capsys):
    assert kaggle.main([exported, str(tmp_path / "absent.pkl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "absent.pkl" in err
