"""The CPU as a training device, checked with its capabilities faked both ways (no AMX needed): the precision rule,
the fp32 override, channels-last and the tensor pipeline in `fit`, the range test in the training precision, resume
across precisions, and what `make run` times for its estimate and when it starts a full run by itself."""
from __future__ import annotations

import nbformat
import numpy as np
import pytest
import torch
from torch import nn

import helpers as h
from helpers import devices, launch
from helpers.lr_finder import find_lr

CPU = torch.device("cpu")


def fake_cpu(monkeypatch, engine: str | None, vendor: str = "AuthenticAMD") -> None:
    """torch's CPU probes answer as on a CPU with `engine`: 'AMX' (which has AVX512-BF16 too), 'AVX512-BF16' or
    None (neither), made by `vendor` (CPUID's name: 'AuthenticAMD', 'GenuineIntel')."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: engine == "AMX")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: engine in ("AMX", "AVX512-BF16"))
    monkeypatch.setattr(devices, "cpu_vendor", lambda: vendor)
    monkeypatch.delenv(devices.FORCE_FP32, raising=False)


@pytest.mark.parametrize("engine, vendor, dtype, described", [
    ("AMX", "GenuineIntel", torch.bfloat16, "bf16 (cpu: AMX)"),
    ("AVX512-BF16", "AuthenticAMD", torch.bfloat16, "bf16 (cpu: AVX512-BF16, AMD)"),
    ("AVX512-BF16", "GenuineIntel", None, "fp32 (cpu: AVX512-BF16 without AMX, GenuineIntel: measured no faster)"),
    (None, "AuthenticAMD", None, "fp32 (cpu: no bf16 instructions)"),
    (None, "GenuineIntel", None, "fp32 (cpu: no bf16 instructions)"),
])
def test_cpu_precision_follows_its_measured_bf16_speed(monkeypatch, engine, vendor, dtype, described):
    fake_cpu(monkeypatch, engine, vendor)
    assert devices.cpu_bf16_engine() == engine
    assert h.autocast_dtype(CPU) == dtype and h.describe_precision(CPU) == described
    assert h.autocast_dtype(CPU, enabled=False) is None and h.describe_precision(CPU, enabled=False) == "fp32 (cpu)"
    assert h.autocast_dtype("mps") is None and h.describe_precision("mps") == "fp32 (mps)"


def test_a_torch_without_the_cpu_probes_trains_in_fp32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delenv(devices.FORCE_FP32, raising=False)
    assert devices.cpu_bf16_engine() is None and h.autocast_dtype(CPU) is None


def test_helpers_fp32_forces_fp32_on_every_device(monkeypatch):
    fake_cpu(monkeypatch, "AMX")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setenv(devices.FORCE_FP32, "1")
    assert h.autocast_dtype(CPU) is None and h.autocast_dtype("cuda") is None
    assert h.describe_precision(CPU) == "fp32 (HELPERS_FP32=1)"
    monkeypatch.setenv(devices.FORCE_FP32, "0")
    assert h.autocast_dtype(CPU) == torch.bfloat16 and h.autocast_dtype("cuda") == torch.bfloat16


def test_the_cpu_is_named_with_its_model_and_threads():
    name = h.device_name(CPU)
    assert name.startswith("cpu (") and name.endswith(f", {torch.get_num_threads()} threads)")
    assert devices.cpu_model() in name and devices.cpu_model()
    assert set(devices.cpu_flags().split()) <= set(devices.MATRIX_FLAGS)


def test_channels_last_on_cuda_and_the_cpu_not_on_mps():
    assert devices.channels_last_default("cpu") and devices.channels_last_default("cuda")
    assert not devices.channels_last_default("mps")


def test_a_dilated_depthwise_net_trains_nchw_in_bf16_on_a_cpu_only():
    lightnet, resnet9 = h.models.lightnet(), h.models.resnet9()
    assert devices.has_dilated_grouped_conv(lightnet) and not devices.has_dilated_grouped_conv(resnet9)
    assert not devices.channels_last_default(CPU, lightnet, torch.bfloat16)
    assert devices.channels_last_default(CPU, lightnet, None), "fp32 channels-last is right: it stays"
    assert devices.channels_last_default(CPU, resnet9, torch.bfloat16)
    assert devices.channels_last_default("cuda", lightnet, torch.bfloat16)


def test_the_memory_format_fit_picks_gives_a_dilated_depthwise_convolution_its_fp32_gradient():
    """oneDNN's channels-last bf16 weight gradient of this convolution is wrong on some CPUs (relative error 1.4
    or NaN on an AVX512-BF16 Xeon, torch 2.14.1); in the format `channels_last_default` picks it is bf16-close."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
    x, upstream = torch.randn(4, 8, 32, 32), torch.randn(4, 8, 32, 32)

    def weight_gradient(amp_dtype):
        channels_last = devices.channels_last_default(CPU, conv, amp_dtype)
        model = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False)
        model.load_state_dict(conv.state_dict())
        model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        batch, _ = devices.to_device(x.contiguous(memory_format=torch.channels_last), torch.zeros(4), CPU,
                                     channels_last)
        with devices.autocast(CPU, amp_dtype):
            output = model(batch)
        (output.float() * upstream).sum().backward()
        return model.weight.grad

    reference, bf16 = weight_gradient(None), weight_gradient(torch.bfloat16)
    assert torch.isfinite(bf16).all() and (bf16 - reference).norm() / reference.norm() < 0.02


class Recorder(nn.Module):
    """A small convolutional net that records, for every training forward pass, whether autocast was on and to
    which dtype, and whether the input arrived channels-last."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.Linear(8 * 8 * 8, 10)
        self.seen: list[tuple[bool, torch.dtype, bool]] = []

    def forward(self, x):
        if self.training:
            self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                              x.is_contiguous(memory_format=torch.channels_last)))
        return self.head(self.conv(x).relu().flatten(1))


@pytest.fixture(scope="module")
def data():
    return h.synthetic_cifar10(n_train=96, n_test=32)


@pytest.mark.parametrize("engine", ["AVX512-BF16", None])
def test_fit_on_a_cpu_trains_channels_last_from_the_tensor_pipeline_in_its_precision(monkeypatch, data, engine):
    fake_cpu(monkeypatch, engine)
    loader = h.make_train_loader(data.train_images, data.train_labels, h.Augmentation(), 32, device=CPU)
    assert isinstance(loader, h.TensorLoader), "auto: the tensor pipeline on a CPU"
    torch.manual_seed(0)
    model = Recorder()
    history = h.fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.05), 2, device=CPU, progress=False,
                    test_loader=h.make_eval_loader(data.test_images, data.test_labels, 32, device=CPU))
    assert np.isfinite(history.final("train_loss")) and history.final_model["test_images"] == 32
    assert [(enabled, channels_last) for enabled, _, channels_last in model.seen] == [(engine is not None, True)] * 6
    assert engine is None or {dtype for _, dtype, _ in model.seen} == {torch.bfloat16}
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fit_with_amp_off_trains_in_fp32_on_a_bf16_cpu(monkeypatch, data):
    fake_cpu(monkeypatch, "AMX")
    loader = h.make_train_loader(data.train_images, data.train_labels, h.Augmentation(), 32, device=CPU)
    model = Recorder()
    h.fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.05), 1, device=CPU, amp=False, progress=False)
    assert [enabled for enabled, _, _ in model.seen] == [False] * 3


@pytest.mark.parametrize("engine, amp", [("AMX", True), ("AMX", False), (None, True)])
def test_the_range_test_runs_in_the_training_precision_and_format(monkeypatch, data, engine, amp):
    fake_cpu(monkeypatch, engine)
    loader = h.make_train_loader(data.train_images, data.train_labels, h.Augmentation(), 16, device=CPU)
    torch.manual_seed(0)
    model = Recorder()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    test = find_lr(model, optimizer, loader, start_lr=1e-4, end_lr=1.0, num_iter=17, device=CPU, amp=amp)
    bf16 = engine is not None and amp
    assert len(model.seen) == len(test.lrs) == 17
    assert all(enabled == bf16 and (dtype == torch.bfloat16 or not bf16) and channels_last
               for enabled, dtype, channels_last in model.seen)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "reset() restores the weights"
    assert np.isfinite(test.losses).all() and test.lrs[0] <= test.suggested_lr <= test.lrs[-1]


def test_a_bf16_cpu_checkpoint_resumes_in_fp32_on_a_cpu_without_bf16(monkeypatch, data, tmp_path, capsys):
    checkpoint = tmp_path / "run.pt"
    loader = h.make_train_loader(data.train_images, data.train_labels, h.Augmentation(), 32, device=CPU)

    def run(stop_after=None):
        torch.manual_seed(0)
        model = Recorder()

        def stop(epoch, history):
            if epoch == stop_after:
                raise KeyboardInterrupt

        try:
            return h.fit(model, loader, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), 3, device=CPU,
                         checkpoint_path=checkpoint, progress=False, on_epoch_end=stop), model
        except KeyboardInterrupt:
            return None, model

    fake_cpu(monkeypatch, "AMX")
    run(stop_after=1)
    assert h.load_checkpoint(checkpoint)["precision"] == "bf16"
    fake_cpu(monkeypatch, None)
    history, model = run()
    assert history["epoch"] == [1, 2, 3] and all(np.isfinite(history["train_loss"]))
    assert {enabled for enabled, _, _ in model.seen} == {False}, "the resumed epochs run in fp32"
    assert ("The checkpoint was written in bf16 on cpu; training goes on in fp32 on cpu."
            in capsys.readouterr().out)
    assert h.load_checkpoint(checkpoint)["precision"] == "fp32"


# --- make run: the estimate's inputs and the full run it starts by itself --------------------------------------

def test_the_estimate_times_the_training_precision_format_and_batch(monkeypatch):
    fake_cpu(monkeypatch, "AVX512-BF16")
    model = Recorder()
    batches = []
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda x: batches.append((len(x), model.training)) or original(x))
    timing = launch.time_model(model, CPU, batch_size=12, steps=2)
    assert timing.train > 0 and timing.eval > 0
    assert model.seen == [(True, torch.bfloat16, True)] * 3, "warm-up and timed steps: bf16, channels-last"
    assert batches == [(12, True)] * 3 + [(h.loaders.CPU_EVAL_BATCH, False)] * 2, \
        "training at the run's batch size, evaluation at the CPU's evaluation batch (after a warm-up pass)"


@pytest.fixture
def executed(monkeypatch, tmp_path):
    """papermill calls recorded instead of run; `timed` sets what the model timing returns."""
    import papermill

    calls, timing = [], {}

    def time_model(model, device, **kwargs):
        timing["asked"] = kwargs
        return timing["value"]

    def execute_notebook(notebook, output, parameters=None, cwd=None, **kwargs):
        calls.append((notebook, output, parameters))
        node = notebook if isinstance(notebook, nbformat.NotebookNode) else nbformat.read(notebook, as_version=4)
        nbformat.write(node, output)

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    monkeypatch.setattr(launch, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(launch, "time_model", time_model)
    return calls, timing


NB04 = next((h.PROJECT_ROOT / "notebooks").glob("04_*.ipynb"))


def test_make_run_starts_a_full_run_estimated_within_the_threshold(executed, capsys, tmp_path, monkeypatch):
    calls, timing = executed
    timing["value"] = launch.Timing(train=0.005, eval=0.001)  # 24 epochs of 50,000, EMA on: about 1.9 h
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CACHE_HOME")  # the default cache, ~/.cache, in the test's home
    notebook = tmp_path / "notebooks" / NB04.name
    notebook.parent.mkdir()
    notebook.write_text(NB04.read_text())
    assert launch.main([str(notebook), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    partial = tmp_path / "runs" / "partial" / NB04.name
    assert calls == [(str(notebook), str(partial), None)], "the full run, with its own defaults"
    assert notebook.exists() and not partial.exists(), "its executed copy moved over the notebook at the end"
    assert "would take about 1.9 h" in out and "at most 3 h, so the full run starts now" in out
    assert ("Checkpoint ~/.cache/cifar10-notebooks/checkpoints/04_resnet9.pt: none yet, the run starts fresh (one is "
            "written after every epoch; the same command resumes a stopped run from it)") in out
    assert str(h.PROJECT_ROOT) not in out and str(tmp_path) not in out, "no absolute path of this machine"
    assert timing["asked"] == {"batch_size": launch.TIMING_BATCH}, "timed at the run's batch (512), capped"


def test_make_run_runs_a_quick_run_above_the_threshold(executed, capsys):
    calls, timing = executed
    timing["value"] = launch.Timing(train=0.012, eval=0.003)  # about 4 h
    launch.main([str(NB04), "--device", "cpu"])
    out = capsys.readouterr().out
    [(notebook, output, parameters)] = calls
    assert parameters["EPOCHS"] == launch.QUICK_EPOCHS and "runs/quick" in str(output)
    assert f"More than {launch.FULL_RUN_HOURS:g} h: not starting it" in out
    assert "more than 3 h here" in notebook.cells[0].source
    assert nbformat.validate(notebook) is None
