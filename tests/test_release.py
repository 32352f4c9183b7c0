"""Released weights (`helpers.release`, `helpers.verify`, the Kaggle tool's default model, `PRETRAINED`), tested on
models exported on the CPU into temporary folders, never committed as releases; and, when `weights/` holds a
released model and the real data is present, that model against the figure its run recorded."""
from __future__ import annotations

import json
import pickle

import nbformat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import helpers as h
from helpers import kaggle, release, verify
from helpers.notebook import execute

LIGHT = "02_light_dilated_net"  # the smallest network: most tests release this one
KAGGLE = "05_kaggle_resnet"


def _trained_looking(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BatchNorm statistics, so that predictions differ between images (an untrained net predicts one
    class)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def _history(test_acc: float) -> h.History:
    return h.History(records=[{"epoch": 1, "test_acc": test_acc, "seconds": 1.0}],
                     final_model={"epoch": 1, "epochs": 1, "test_acc": test_acc, "test_images": 40})


@pytest.fixture
def store(tmp_path, monkeypatch, synthetic_root):
    """Empty weights/ and results/ folders in tmp_path (as $WEIGHTS_DIR and $RESULTS_DIR), the synthetic data as
    a full run's (100 training / 40 test images), and a function that runs notebook `name`'s release step."""
    weights, results = tmp_path / "weights", tmp_path / "results"
    monkeypatch.setenv("WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("RESULTS_DIR", str(results))
    # Only these folders: the project's committed records (results/) vouch for files in the project's weights/.
    monkeypatch.setattr(release, "_record_folders", lambda folder=None: [Path(folder or results)])
    monkeypatch.setattr(release, "FULL_TRAIN", 100)
    monkeypatch.setattr(release, "FULL_TEST", 40)
    data = h.load_cifar10(synthetic_root, download=False)

    def release_run(name: str, model=None, test_acc: float = 0.5, smoke: bool = False, seed: int = 0):
        model = model or _trained_looking(h.models.FACTORIES[h.ASSIGNMENTS[name].model](), seed)
        history = _history(test_acc)
        learning_rates = {"max_lr": 0.4, "div_factor": 100.0, "start_lr": 0.05}  # what 03 and 04 record
        path = h.save_run_record(name, model, history, data_source=data.source, device="cpu", wall_seconds=1.0,
                                 seed=seed, smoke=smoke, results_dir=results, extra=learning_rates)
        entry = h.release_model(name, model, data, "cpu", history, record=path, smoke=smoke)
        return model, entry, path

    release_run.weights, release_run.results, release_run.data = weights, results, data
    return release_run


def _one_line(err: Exception) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# --- export -------------------------------------------------------------------------------------------------------

def test_a_full_run_releases_half_precision_safetensors_with_its_metadata(store, capsys):
    model, entry, record_path = store(LIGHT, test_acc=0.61)
    path = store.weights / f"{LIGHT}.safetensors"
    assert entry["released"] and path.is_file()
    assert f"Released {path}" in capsys.readouterr().out
    with safe_open(str(path), framework="pt") as f:
        floats = [f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()]
        metadata = f.metadata()
    assert floats and set(floats) == {torch.float16}
    assert metadata["model"] == "lightnet" and metadata["format"] == release.FORMAT
    assert json.loads(metadata["run_test_acc"]) == 0.61 and json.loads(metadata["device"]).startswith("cpu")
    assert "git_commit" in metadata and json.loads(metadata["data"]) == store.data.source
    record = json.loads(record_path.read_text())
    assert record["release"] == entry
    assert entry["sha256"] == release.sha256_of(path) and entry["bytes"] == path.stat().st_size
    fp32 = sum(v.numel() * 4 for v in model.state_dict().values() if v.is_floating_point())
    assert entry["bytes"] < 0.55 * fp32, "half precision"
    # what the run recorded is what the released (fp16) weights measure
    again = release.measure(h.load_pretrained(LIGHT), store.data.test_images, store.data.test_labels)
    assert again["test_acc"] == entry["test_acc"] and again["subset_correct"] == entry["subset_correct"]


def test_smoke_and_partial_runs_release_nothing(store, capsys):
    _, entry, record_path = store(LIGHT, smoke=True)
    assert entry == {"released": False, "why": "a smoke run"}
    assert json.loads(record_path.read_text())["release"] == entry
    assert not store.weights.exists()
    partial = store.data.subset(50, 20)
    history = _history(0.5)
    path = h.save_run_record(LIGHT, h.models.lightnet(), history, data_source="x", device="cpu", wall_seconds=1,
                             seed=0, smoke=False, results_dir=store.results)
    entry = h.release_model(LIGHT, h.models.lightnet(), partial, "cpu", history, record=path)
    assert not entry["released"] and "50 training / 20 test images" in entry["why"]
    assert "Weights not released" in capsys.readouterr().out


def test_a_release_is_replaced_only_by_a_run_that_beats_it(store):
    first, entry, _ = store(LIGHT, test_acc=0.60, seed=1)
    digest = entry["sha256"]
    _, worse, _ = store(LIGHT, test_acc=0.55, seed=2)
    assert not worse["released"] and "not beaten" in worse["why"]
    assert release.sha256_of(store.weights / f"{LIGHT}.safetensors") == digest
    h.load_pretrained(LIGHT)  # the seed-1 record still vouches for the file
    _, better, _ = store(LIGHT, test_acc=0.70, seed=3)
    assert better["released"] and better["sha256"] != digest
    assert release.check_release(LIGHT)[1]["seed"] == 3
    h.load_pretrained(LIGHT)


# --- load ---------------------------------------------------------------------------------------------------------

def test_a_newer_run_that_does_not_beat_the_release_keeps_the_record_that_vouches_for_it(store):
    _, first, _ = store(LIGHT, test_acc=0.61)
    _, second, record = store(LIGHT, test_acc=0.55)  # the same notebook and seed: the same record path
    assert not second["released"]
    kept = list(store.results.glob(f"{LIGHT}_*.json"))
    assert len(kept) == 1, "the first run's record is kept beside, marked as replaced"
    content = json.loads(kept[0].read_text())
    assert content["superseded_by"] == json.loads(record.read_text())["finished"]
    assert release.check_release(LIGHT)[1]["release"]["sha256"] == first["sha256"], "the weights stay checkable"
    other = _trained_looking(h.models.FACTORIES[h.ASSIGNMENTS[LIGHT].model](), seed=5)
    _, third, _ = store(LIGHT, model=other, test_acc=0.70)
    assert third["released"] and not list(store.results.glob(f"{LIGHT}_*.json")), "replaced weights need no voucher"


def test_load_pretrained_gives_the_released_weights_in_eval_mode(store):
    model, _, _ = store(LIGHT)
    loaded = h.load_pretrained(LIGHT, "cpu")
    assert not loaded.training and type(loaded) is type(model)
    for (key, original), restored in zip(model.state_dict().items(), loaded.state_dict().values()):
        expected = original.half().float() if original.is_floating_point() else original
        assert torch.equal(restored, expected), key


def test_a_missing_truncated_or_altered_file_stops_with_one_line(store):
    path = store.weights / f"{LIGHT}.safetensors"
    with pytest.raises(h.ReleaseError) as err:
        h.load_pretrained(LIGHT)
    assert "does not exist" in _one_line(err.value) and "no released model yet" in str(err.value)
    store(LIGHT)
    whole = path.read_bytes()
    cases = {"truncated": whole[: len(whole) // 2],
             "altered": whole[:-100] + bytes(b ^ 1 for b in whole[-100:])}  # same size, other bytes
    for fault, content in cases.items():
        path.write_bytes(content)
        with pytest.raises(h.ReleaseError) as err:
            h.load_pretrained(LIGHT)
        message = _one_line(err.value)
        assert message.startswith(f"{path} is {fault}") and "git checkout" in message, message
    path.unlink()
    with pytest.raises(h.ReleaseError) as err:
        h.load_pretrained(LIGHT)
    assert "is missing, though" in _one_line(err.value) and "released it" in str(err.value)


def test_a_file_of_another_architecture_is_named_in_one_line(store, capsys, synthetic_root):
    store(LIGHT)
    path = store.weights / f"{LIGHT}.safetensors"
    release.save_weights(path, h.models.resnet9(), "resnet9")  # someone copied the ResNet-9 over it
    with pytest.raises(h.ReleaseError) as err:
        h.load_pretrained(LIGHT)
    assert "holds resnet9 weights, not lightnet" in _one_line(err.value)
    assert verify.main([LIGHT, "--data-root", str(synthetic_root)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "holds resnet9 weights, not lightnet" in out


def test_pretrained_run_says_so_when_there_is_no_release(store, capsys):
    assert h.pretrained_run(LIGHT, "cpu") is None
    assert capsys.readouterr().out.strip() == (f"PRETRAINED: no released model for {LIGHT} yet "
                                               f"({store.weights / LIGHT}.safetensors); training as usual.")


# --- verify -------------------------------------------------------------------------------------------------------

def test_verify_measures_every_release_against_its_record(store, capsys, tmp_path, synthetic_root):
    store(LIGHT)
    assert verify.main(["--data-root", str(synthetic_root), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "All released models agree" in out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines() if line.startswith("| 0")}
    assert set(rows) == set(h.ASSIGNMENTS) and "| ok |" in rows[LIGHT]
    assert "no released model yet" in rows[KAGGLE]
    assert verify.main([LIGHT, "--quick", "--data-root", str(synthetic_root)]) == 0
    capsys.readouterr()
    # a record whose figure the file does not reproduce fails
    record_path = store.results / f"{LIGHT}.json"
    record = json.loads(record_path.read_text())
    record["release"]["test_acc"] += 0.05
    record_path.write_text(json.dumps(record))
    assert verify.main([LIGHT, "--data-root", str(synthetic_root)]) == 1
    assert "DIFFERS by more than 0.2 %" in capsys.readouterr().out
    # other images: measured, not compared
    other = tmp_path / "other"
    h.write_synthetic_cifar10(other, n_train=100, n_test=40, seed=5)
    assert verify.main([LIGHT, "--data-root", str(other)]) == 0
    assert "not compared: recorded on other data" in capsys.readouterr().out


def test_verify_without_data_says_where_to_put_it(store, tmp_path, capsys):
    assert verify.main(["--data-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "make data" in err and "cifar-10-batches-py" in err


# --- the Kaggle tool's default model, and PRETRAINED in a notebook ----------------------------------------------

def test_the_kaggle_tool_uses_the_released_model_by_default(store, tmp_path, capsys):
    unlabeled = tmp_path / "test.pkl"
    with open(unlabeled, "wb") as f:
        pickle.dump({b"data": store.data.test_images[:8], b"ids": list(range(8))}, f)
    output = tmp_path / "submission.csv"
    assert kaggle.main([str(unlabeled), "-o", str(output)]) == 2  # nothing released yet
    assert "no released model yet" in capsys.readouterr().err and not output.exists()
    model, _, _ = store(KAGGLE)
    assert kaggle.main([str(unlabeled), "-o", str(output), "--device", "cpu"]) == 0
    assert f"{KAGGLE}.safetensors (released)" in capsys.readouterr().out
    expected = kaggle.predict_probabilities(h.load_pretrained(KAGGLE), store.data.test_images[:8], "cpu").argmax(1)
    assert output.read_text().splitlines()[1:] == [f"{i},{label}" for i, label in enumerate(expected)]
    assert kaggle.main([str(unlabeled), "--model", "resnet18", "-o", str(tmp_path / "x.csv")]) == 2
    assert "is a resnet_kaggle, not resnet18" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(h.ASSIGNMENTS))
def test_a_pretrained_notebook_shows_the_release_and_trains_nothing(store, tmp_path, name):
    store(name, test_acc=0.5)
    records_before = sorted(p.name for p in store.results.iterdir())
    out = tmp_path / f"{name}.ipynb"
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SMOKE", "1")
        environment.setenv("MPLBACKEND", "Agg")
        execute(h.PROJECT_ROOT / "notebooks" / f"{name}.ipynb", out, progress_bar=False,
                cwd=str(h.PROJECT_ROOT / "notebooks"),
                parameters={"PRETRAINED": True, "CHECKPOINT": str(tmp_path / "checkpoint.pt"),
                            "RESULTS_DIR": str(store.results), "KAGGLE_DIR": str(tmp_path / "kaggle")})
    text = "\n".join(o.get("text", "") for c in nbformat.read(out, 4).cells if c.cell_type == "code"
                     for o in c.outputs if o.get("output_type") == "stream")
    assert f"PRETRAINED: released weights {store.weights / name}.safetensors" in text
    assert "Final model (weights of epoch" not in text, "fit() did not run"
    if name in ("03_resnet18_lrfinder_gradcam", "04_resnet9_onecycle"):  # the notebooks with a range test
        assert "Released weights: no range test" in text
    assert "Goal " in text  # the verdict of the run that made the weights
    assert not (tmp_path / "checkpoint.pt").exists(), "no checkpoint"
    assert sorted(p.name for p in store.results.iterdir()) == records_before, "no run record, no curves"
    if name == KAGGLE:
        assert "(released)" in text and (tmp_path / "kaggle" / "submission.csv").exists()


# --- the committed releases (CI, when the real data is present) -------------------------------------------------

@pytest.mark.parametrize("name", list(h.ASSIGNMENTS))
def test_a_committed_release_reproduces_its_recorded_subset_figure(name, monkeypatch):
    monkeypatch.delenv("WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("RESULTS_DIR", raising=False)
    path = release.release_path(name)
    if not path.exists():
        pytest.skip(f"no released model in {path.parent} for {name}")
    try:
        data = h.load_cifar10(download=False)
    except h.DataError:
        pytest.skip("no CIFAR-10 in data/ (make data, or set CIFAR10_ROOT)")
    model = h.load_pretrained(name, "cpu", results=h.PROJECT_ROOT / "results")
    recorded = release.check_release(name, results=h.PROJECT_ROOT / "results")[1]["release"]
    n = recorded["subset_images"]
    measured = release.measure(model, data.test_images[:n], data.test_labels[:n], "cpu", subset=n)
    if measured["test_set"] != recorded["subset_set"]:
        pytest.skip(f"data/ holds other images than the run's ({data.source})")
    assert abs(measured["subset_correct"] - recorded["subset_correct"]) <= release.TOLERANCE * n
