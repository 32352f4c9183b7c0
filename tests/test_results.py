"""The results tables (the README's and docs/results.md's): generated from run records, refusing smoke runs, and in
step with results/."""
import json
import statistics

import pytest
import torch

import helpers as h
from helpers import results

COLUMNS_INDEX_TIME = results.COLUMNS.index("training time")
NOTEBOOKS = sorted((h.PROJECT_ROOT / "notebooks").glob("0*.ipynb"))


ORIGINAL = "CIFAR-10 downloaded by torchvision into data/cifar-10-batches-py"
JPEG_COPY = "CIFAR-10 batch files in /x (decoded from JPEG files: ...)"


def make_record(folder, name="04_resnet9_onecycle", seed=0, test_acc=0.9412, smoke=False, test_images=10_000,
                ema=0.9431, data_source=ORIGINAL):
    history = h.History()
    for epoch, acc in enumerate([0.80, 0.9420, test_acc], start=1):
        history.append({"epoch": epoch, "lr": 0.1, "train_loss": 1.0, "train_acc": acc, "test_loss": 0.3,
                        "test_acc": acc, "test_acc_ema": ema, "seconds": 10.0})
    history.final_model = {"epoch": 3, "epochs": 3, "test_acc": test_acc, "test_acc_tta": test_acc + 0.003,
                           "test_acc_ema": ema, "test_acc_ema_tta": ema + 0.002, "test_images": test_images}
    return h.save_run_record(name, torch.nn.Linear(4, 2), history, device="cpu", wall_seconds=90.0, seed=seed,
                             data_source=data_source, smoke=smoke,
                             results_dir=folder)


def rows(readme_text):
    """{notebook number: [cells]} of the generated table."""
    section = readme_text.split(results.BEGIN)[1].split(results.END)[0]
    lines = [line for line in section.splitlines() if line.startswith("| 0")]
    return {line.split(" | ")[0][2:]: [c.strip() for c in line.strip("| ").split(" | ")] for line in lines}


def stale_page(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# Title\n\nbefore\n\n{results.BEGIN}\nstale\n{results.END}\n\nafter\n")
    return path


@pytest.fixture
def readme(tmp_path):
    """A page of the full table (docs/results.md's kind) with a stale table between its markers."""
    return stale_page(tmp_path / "page.md")


def full_table(page, records):
    results.update_page(page, results.details_section, records)
    return rows(page.read_text())


@pytest.mark.parametrize("name", list(results.PAGES))
def test_both_tables_match_the_records_in_results(name):
    records = results.load_records(h.PROJECT_ROOT / "results")
    assert results.page_is_current(h.PROJECT_ROOT / name, results.PAGES[name], records), \
        f"{name}'s results table is out of date: run python -m helpers.results"


def test_table_round_trips_hand_made_records(tmp_path, readme):
    make_record(tmp_path / "results", "01_resnet18_baseline", test_acc=0.9512)
    records = results.load_records(tmp_path / "results")
    assert results.update_page(readme, results.details_section, records) is True
    assert results.update_page(readme, results.details_section, records) is False  # idempotent
    assert results.page_is_current(readme, results.details_section, records)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n") and "stale" not in text
    table = rows(text)
    assert list(table) == ["01", "02", "03", "04", "05"]
    cells = dict(zip(results.COLUMNS, table["01"]))
    assert cells["test acc. (raw model)"] == "95.12 %" and cells["best epoch"] == "95.12 %"
    assert cells["EMA weights"] == "94.31 %" and cells["flip TTA (raw / EMA)"] == "95.42 % / 94.51 %"
    assert cells["goal"] == "≥ 95.0 % in ≤ 30 epochs" and cells["verdict"] == "met"
    assert cells["reference"] == "87.66 % at 46 epochs" and cells["training time"] == "1.5 min"
    assert cells["data"] == "original CIFAR-10" and cells["epochs"] == "3" and cells["parameters"] == "10"
    assert cells["airbench94, same data"] == "94.01 % (its published mean)"
    assert dict(zip(results.COLUMNS, table["02"]))["test acc. (raw model)"] == "no full run recorded yet"
    # A record that changes afterwards no longer matches the README.
    path = tmp_path / "results" / "01_resnet18_baseline.json"
    record = json.loads(path.read_text())
    record["final_model"]["test_acc"] = 0.9490
    path.write_text(json.dumps(record))
    changed = results.load_records(tmp_path / "results")
    assert not results.page_is_current(readme, results.details_section, changed)
    verdict = dict(zip(results.COLUMNS, full_table(readme, changed)["01"]))["verdict"]
    assert verdict == "not met: accuracy short by 0.10%"


def test_several_seeds_give_mean_and_standard_deviation_and_the_verdict_on_the_mean(tmp_path, readme):
    accuracies = [0.9370, 0.9400, 0.9424]
    for seed, acc in enumerate(accuracies):
        make_record(tmp_path, seed=seed, test_acc=acc)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "04_resnet9_onecycle.json", "04_resnet9_onecycle_seed1.json", "04_resnet9_onecycle_seed2.json"]
    cells = dict(zip(results.COLUMNS, full_table(readme, results.load_records(tmp_path))["04"]))
    mean, sd = statistics.mean(accuracies), statistics.stdev(accuracies)
    assert cells["test acc. (raw model)"] == f"{mean:.2%} ± {sd * 100:.2f} % (3 seeds)".replace("%", " %", 1)
    assert cells["verdict"] == "not met: accuracy short by 0.02%"  # mean 93.98 %: seeds at 94 % do not make the mean


def test_a_run_on_the_jpeg_copy_is_judged_beside_airbench94_on_the_same_copy(tmp_path, readme):
    reference = h.goals.JPEG_COPY
    lowered = 0.94 - reference.offset
    make_record(tmp_path, test_acc=round(lowered + 0.0005, 4), data_source=JPEG_COPY)  # misses 94 %, meets the rule
    cells = dict(zip(results.COLUMNS, full_table(readme, results.load_records(tmp_path))["04"]))
    assert cells["data"] == "re-encoded JPEG copy"
    assert cells["airbench94, same data"] == f"{reference.accuracy:.2%} (2 runs; 94.01 % on the original)".replace(
        "%", " %", 1)
    assert cells["verdict"] == f"met (goal {lowered:.2%} on this data)".replace("%", " %")
    corrected = round(lowered + 0.0005, 4) + reference.offset  # the accuracy as measured, and on the original's terms
    assert cells["test acc. (raw model)"] == f"{lowered + 0.0005:.2%} (≈ {corrected:.2%} on the original)".replace(
        "%", " %")
    make_record(tmp_path, test_acc=round(lowered - 0.0100, 4), data_source=JPEG_COPY)
    verdict = dict(zip(results.COLUMNS, full_table(readme, results.load_records(tmp_path))["04"]))["verdict"]
    assert verdict.startswith("not met: accuracy short by 1.00%") and verdict.endswith("on this data)"), verdict


def test_smoke_and_partial_records_never_enter_the_table(tmp_path):
    make_record(tmp_path / "smoke", smoke=True)
    with pytest.raises(ValueError, match="smoke run"):
        results.load_records(tmp_path / "smoke")
    make_record(tmp_path / "partial", test_images=500)
    with pytest.raises(ValueError, match="500 images, not the full 10,000"):
        results.load_records(tmp_path / "partial")
    make_record(tmp_path / "unknown", name="99_other")
    with pytest.raises(ValueError, match="belongs to no notebook"):
        results.load_records(tmp_path / "unknown")


def test_the_readme_table_is_narrow_and_links_the_details_and_the_weights(tmp_path):
    record = make_record(tmp_path / "results", "01_resnet18_baseline", test_acc=0.9512)
    device = json.loads(record.read_text())["device"]
    page = stale_page(tmp_path / "README.md")
    results.update_page(page, results.readme_section, results.load_records(tmp_path / "results"))
    table = rows(page.read_text())
    assert list(table) == ["01", "02", "03", "04", "05"]
    cells = dict(zip(results.SUMMARY_COLUMNS, table["01"]))
    assert cells["test acc. (raw model)"] == "95.12 %" and cells["verdict"] == "met"
    assert cells["goal"] == "≥ 95.0 % in ≤ 30 epochs"
    assert cells["run"] == f"{device}, original CIFAR-10, 1.5 min of training; [details](docs/results.md)"
    assert dict(zip(results.SUMMARY_COLUMNS, table["02"]))["test acc. (raw model)"] == "no full run yet"
    assert "[the full table](docs/results.md)" in page.read_text()


def test_the_full_table_links_from_docs_and_the_readme_from_the_project(tmp_path):
    record = json.loads(make_record(tmp_path / "results").read_text())
    record["release"] = {"released": True, "file": "weights/04_resnet9_onecycle.safetensors", "bytes": 13_160_412}
    records = [record]
    full = dict(zip(results.COLUMNS, results.table_row(4, h.goals.ASSIGNMENTS[record["name"]], records, "../")))
    assert full["notebook"] == "[ResNet-9 one-cycle](../notebooks/04_resnet9_onecycle.ipynb)"
    assert full["weights"] == ("[04_resnet9_onecycle.safetensors](../weights/04_resnet9_onecycle.safetensors) "
                               "(13.2 MB)")
    summary = dict(zip(results.SUMMARY_COLUMNS, results.summary_row(4, h.goals.ASSIGNMENTS[record["name"]], records)))
    assert summary["run"].endswith("; [details](docs/results.md), [weights](weights/04_resnet9_onecycle.safetensors)")
    assert results.table_row(4, h.goals.ASSIGNMENTS[record["name"]], [{**record, "wall_seconds": 9351}],
                             "../")[COLUMNS_INDEX_TIME] == "2.6 h"


def test_command_line_check_and_rewrite(tmp_path, capsys):
    make_record(tmp_path / "results")
    for name in results.PAGES:
        stale_page(tmp_path / name)
    args = ["--results", str(tmp_path / "results"), "--root", str(tmp_path)]
    assert results.main([*args, "--check"]) == 1
    assert results.main(args) == 0 and capsys.readouterr().out.count("rewritten") == len(results.PAGES)
    assert results.main([*args, "--check"]) == 0
    (tmp_path / "docs" / "results.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        results.main(args)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_state_and_judge_their_goal_from_the_one_table_of_goals(path):
    cells = json.loads(path.read_text())["cells"]
    goal = h.GOALS[path.stem]
    intro = "".join(cells[0]["source"])
    assert f"**≥ {goal.accuracy * 100:.1f} % test accuracy" in intro
    if goal.max_epochs is not None:
        assert f"{goal.max_epochs}\nepochs**" in intro or f"{goal.max_epochs} epochs**" in intro
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert (f'h.report_goal(history, h.GOALS["{path.stem}"], parameters=n_parameters,\n'
            '                           data_source=data.source)') in code
    assert f'h.save_run_record("{path.stem}", model, history' in code.replace("\n    ", " ")
    assert "seed=SEED, smoke=SMOKE" in code


def test_a_run_replaced_by_a_newer_one_links_only_the_weights_it_released(tmp_path):
    """A record kept beside a newer run of the same notebook (`keep_released_record`) vouches for the released
    file: the row shows the newer run's figures, and the weights cell says which run the file came from."""
    kept = json.loads(make_record(tmp_path, test_acc=0.9128).read_text())
    kept.update(superseded_by="2026-12-04T14:50:20+0000", device="cpu (AMD EPYC, 2 threads)",
                release={"released": True, "file": "weights/04_resnet9_onecycle.safetensors", "bytes": 13_160_412})
    newer = {**json.loads(make_record(tmp_path, test_acc=0.9088).read_text()), "device": "NVIDIA H200",
             "release": {"released": False, "why": "not beaten"}}
    assignment = h.goals.ASSIGNMENTS["04_resnet9_onecycle"]
    full = dict(zip(results.COLUMNS, results.table_row(4, assignment, [kept, newer], "../")))
    assert full["test acc. (raw model)"] == "90.88 %" and full["device"] == "NVIDIA H200"
    assert full["weights"] == ("[04_resnet9_onecycle.safetensors](../weights/04_resnet9_onecycle.safetensors) "
                               f"(13.2 MB; from the run of {kept['finished'][:10]} on cpu (AMD EPYC, 2 threads), "
                               "91.28 %)")
    summary = dict(zip(results.SUMMARY_COLUMNS, results.summary_row(4, assignment, [kept, newer])))
    assert summary["test acc. (raw model)"] == "90.88 %"
    assert summary["run"].endswith("[weights](weights/04_resnet9_onecycle.safetensors)")
