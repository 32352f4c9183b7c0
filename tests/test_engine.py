import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import helpers as h
from helpers import transforms as T
from helpers.engine import l1_penalty


class TinyNet(nn.Module):
    """Small enough for many CPU epochs; dropout makes resume-determinism depend on RNG handling."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(4), nn.Dropout(0.2))
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    h.write_synthetic_cifar10(root, n_train=200, n_test=60)
    data = h.load_cifar10(root, download=False)
    return h.train_val_split(data.train_images, data.train_labels, 40), data


def loaders(tiny_data, augment=True, batch_size=32):
    split, data = tiny_data
    train_tf = T.build_transform(T.pad_and_crop(4), T.horizontal_flip()) if augment else T.build_transform()
    train = h.make_loader(split.train_images, split.train_labels, train_tf, batch_size, train=True)
    val = h.make_loader(split.val_images, split.val_labels, T.build_transform(), 64, train=False)
    test = h.make_loader(data.test_images, data.test_labels, T.build_transform(), 64, train=False)
    return train, val, test


class NotATensor:
    pass


def linear_model():
    """No BatchNorm: with a zero learning rate nothing at all changes between epochs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))


def new_run(lr=0.05, epochs=4, steps=5, factory=TinyNet):
    torch.manual_seed(0)
    model = factory()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps)
    return model, opt, sched


def metrics(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history.records]


def test_select_device():
    assert h.select_device("cpu") == torch.device("cpu")
    assert h.select_device().type in ("cuda", "mps", "cpu")


def test_fit_learns_and_records_history(tiny_data):
    train, val, test = loaders(tiny_data, augment=False)
    model, opt, sched = new_run(lr=0.05, epochs=6, steps=len(train))
    history = h.fit(model, train, opt, 6, val_loader=val, test_loader=test, scheduler=sched, progress=False)
    assert history["epoch"] == [1, 2, 3, 4, 5, 6]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history.final("test_acc") > 0.5  # synthetic classes are easy; chance is 0.1
    assert sched.last_epoch == 6 * len(train)  # OneCycle stepped once per batch
    assert math.isclose(history["lr"][0], 0.05 / 25, rel_tol=1e-6)  # OneCycle starts at max_lr / div_factor
    assert history.table().splitlines()[0].split() == ["train", "val", "test"]


def test_killed_and_resumed_run_ends_with_the_same_history(tiny_data, tmp_path):
    """With an EMA of the weights too: its state is in the checkpoint, so its columns and final weights match."""
    train, val, test = loaders(tiny_data)
    model, opt, sched = new_run(steps=len(train))
    ema = h.ModelEMA(model, decay=0.9, every=2)
    reference = h.fit(model, train, opt, 4, val_loader=val, test_loader=test, scheduler=sched, ema=ema,
                      early_stopping=h.EarlyStopping(patience=10), progress=False, seed=3)
    reference_ema = {k: v.clone() for k, v in ema.module.state_dict().items()}

    class Killed(Exception):
        pass

    def kill_after_second_epoch(epoch, history):
        if epoch == 2:
            raise Killed

    ckpt = tmp_path / "run.pt"
    model, opt, sched = new_run(steps=len(train))
    with pytest.raises(Killed):
        h.fit(model, train, opt, 4, val_loader=val, test_loader=test, scheduler=sched,
              ema=h.ModelEMA(model, decay=0.9, every=2), early_stopping=h.EarlyStopping(patience=10),
              checkpoint_path=ckpt, progress=False, seed=3, on_epoch_end=kill_after_second_epoch)
    model, opt, sched = new_run(steps=len(train))  # a fresh process would start from scratch objects
    ema = h.ModelEMA(model, decay=0.9, every=2)
    train, val, test = loaders(tiny_data)
    resumed = h.fit(model, train, opt, 4, val_loader=val, test_loader=test, scheduler=sched, ema=ema,
                    early_stopping=h.EarlyStopping(patience=10), checkpoint_path=ckpt, progress=False, seed=3)
    assert metrics(resumed) == metrics(reference)
    assert resumed.final_model == reference.final_model
    assert all(torch.equal(v, reference_ema[k]) for k, v in ema.module.state_dict().items())
    assert len({r["train_loss"] for r in reference.records}) == 4  # the runs did train, epochs differ
    assert all(r["val_acc_ema"] is not None and r["test_loss_ema"] is not None for r in reference.records)
    assert h.load_checkpoint(ckpt)["epoch"] == 4
    model, opt, sched = new_run(steps=len(train))
    h.fit(model, train, opt, 1, checkpoint_path=tmp_path / "plain.pt", progress=False)
    with pytest.raises(ValueError, match="without an EMA"):  # a checkpoint of a run without EMA cannot feed one
        h.fit(model, train, opt, 1, ema=h.ModelEMA(model), checkpoint_path=tmp_path / "plain.pt", progress=False)


def test_resume_refuses_a_checkpoint_of_another_run_length(tiny_data, tmp_path):
    train, val, _ = loaders(tiny_data, augment=False)
    model, opt, _ = new_run()
    h.fit(model, train, opt, 1, checkpoint_path=tmp_path / "c.pt", progress=False)
    with pytest.raises(ValueError, match="1-epoch run, not 3"):
        h.fit(model, train, opt, 3, checkpoint_path=tmp_path / "c.pt", progress=False)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    h.save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})

    def crash(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        h.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    monkeypatch.undo()
    assert h.load_checkpoint(path)["epoch"] == 1


def test_checkpoints_load_with_weights_only(tmp_path):
    torch.save({"evil": NotATensor()}, tmp_path / "bad.pt")
    with pytest.raises(h.CheckpointError, match="other than tensors and plain data, which a safe"):
        h.load_checkpoint(tmp_path / "bad.pt")


def test_nan_loss_stops_naming_epoch_and_batch(tiny_data):
    train, _, _ = loaders(tiny_data, augment=False)
    calls = {"n": 0}

    def loss_fn(logits, y):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(logits, y)
        return loss * float("nan") if calls["n"] == len(train) + 3 else loss

    model, opt, _ = new_run()
    with pytest.raises(h.TrainingDiverged, match="epoch 2, batch 3"):
        h.fit(model, train, opt, 3, loss_fn=loss_fn, progress=False)


def test_early_stopping_keeps_the_best_weights():
    model = nn.Linear(2, 1)
    stopper = h.EarlyStopping(patience=2)
    states = {}
    for epoch, val_loss in enumerate([1.0, 0.5, 0.7, 0.8], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        states[epoch] = model.weight.clone()
        stop = stopper.update(val_loss, epoch, model)
        assert stop == (epoch == 4)
    assert stopper.best_epoch == 2 and torch.equal(stopper.best_state["weight"], states[2])


def test_early_stopping_in_fit_stops_and_needs_validation(tiny_data):
    train, val, _ = loaders(tiny_data, augment=False)
    model, opt, _ = new_run(factory=linear_model)
    for group in opt.param_groups:
        group["lr"] = 0.0  # nothing changes: the validation loss never improves after epoch 1
    history = h.fit(model, train, opt, 10, val_loader=val, early_stopping=2, progress=False)
    assert len(history) == 3
    with pytest.raises(ValueError, match="val_loader"):
        h.fit(model, train, opt, 2, early_stopping=2, progress=False)


def test_the_bar_shows_the_lr_its_last_batch_trained_with(tiny_data, capsys):
    """After a one-cycle schedule's last step the LR is extrapolated past the cycle's end (notebook 04's bar ended on
    lr=-1.08e-02): the bar shows the LR each batch was trained with."""
    train, _, _ = loaders(tiny_data, augment=False, batch_size=80)
    model = linear_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = h.linear_one_cycle(optimizer, 0.1, 2, len(train), peak_epoch=1, div_factor=10)
    h.fit(model, train, optimizer, 2, scheduler=scheduler)
    shown = [float(lr) for lr in re.findall(r"lr=(-?\d\.\d+e[+-]\d+)", capsys.readouterr().err)]
    assert shown and min(shown) > 0, shown
    assert shown[-1] == pytest.approx(0.01), "the cycle ends at max_lr / div_factor"
    assert optimizer.param_groups[0]["lr"] < 0, "where the scheduler has left the optimizer after its last step"


def test_reduce_on_plateau_steps_on_validation_loss(tiny_data):
    train, val, _ = loaders(tiny_data, augment=False)
    model, opt, _ = new_run(factory=linear_model)
    for group in opt.param_groups:
        group["lr"] = 1e-9  # a plateau: the validation loss stays (almost) where it is
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=1e-3, eps=0)
    history = h.fit(model, train, opt, 4, val_loader=val, scheduler=plateau, progress=False)
    # Epoch 1 sets the best loss, epoch 2 fails to beat it: the LR halves from epoch 3 on (lr is logged at start).
    assert history["lr"] == pytest.approx([1e-9, 1e-9, 0.5e-9, 0.25e-9], abs=1e-13)


@pytest.mark.parametrize("mode, metric", [("min", "val_loss"), ("max", "val_acc")])
def test_reduce_on_plateau_watches_the_validation_metric_its_mode_names(tiny_data, mode, metric):
    train, val, _ = loaders(tiny_data, augment=False)
    model, opt, _ = new_run()
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode=mode, patience=1)
    seen = []
    step = plateau.step
    plateau.step = lambda value: (seen.append(value), step(value))
    history = h.fit(model, train, opt, 3, val_loader=val, scheduler=plateau, progress=False)
    assert seen == pytest.approx(history[metric])


def test_l1_penalty_shrinks_weights(tiny_data):
    train, _, _ = loaders(tiny_data, augment=False)
    layer = nn.Linear(3, 2)
    assert torch.isclose(l1_penalty(layer), layer.weight.abs().sum() + layer.bias.abs().sum())
    norms = []
    for l1 in (0.0, 0.5):
        model, opt, _ = new_run(lr=0.01)
        h.fit(model, train, opt, 2, l1_lambda=l1, progress=False)
        norms.append(l1_penalty(model).item())
    assert norms[1] < 0.7 * norms[0]


def test_predict_returns_labels_and_probabilities(tiny_data):
    _, _, test = loaders(tiny_data, augment=False)
    model = TinyNet()
    y_pred, y_true, probs = h.predict(model, test, torch.device("cpu"))
    assert y_pred.shape == y_true.shape == (60,) and probs.shape == (60, 10)
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and np.array_equal(probs.argmax(1), y_pred)


def worker_loader(images, labels, batch_size=32):
    """Crop + flip in 2 persistent worker processes, as `LOADER = "cpu"` runs on a GPU machine."""
    return h.make_loader(images, labels, T.build_transform(T.pad_and_crop(4), T.horizontal_flip()), batch_size,
                         train=True, num_workers=2)


def test_worker_augmentations_depend_on_seed_and_epoch_only(tiny_data):
    """What a resumed run needs: epoch 3 of a loader that ran epochs 1 and 2 equals epoch 3 of a fresh one."""
    from helpers.engine import _seed_epoch

    split, _ = tiny_data

    def epoch(loader, number):
        _seed_epoch(loader, 7, number)
        return [(x, y) for x, y in loader]

    ran = worker_loader(split.train_images, split.train_labels)
    first, _, third = epoch(ran, 1), epoch(ran, 2), epoch(ran, 3)
    resumed = epoch(worker_loader(split.train_images, split.train_labels), 3)
    assert all(torch.equal(x, rx) and torch.equal(y, ry) for (x, y), (rx, ry) in zip(third, resumed))
    assert not torch.equal(first[0][0], third[0][0])
    # The two workers draw different augmentations: one image repeated, so only the draws tell batches apart.
    same = np.repeat(split.train_images[:1], 64, axis=0)
    loader = worker_loader(same, np.zeros(64, dtype=np.int64), batch_size=16)
    batches = epoch(loader, 1)
    assert not torch.equal(batches[0][0], batches[1][0])


def test_killed_and_resumed_run_with_worker_processes_ends_with_the_same_history(tiny_data, tmp_path):
    split, data = tiny_data

    def run(checkpoint=None, stop_after=None):
        train = worker_loader(split.train_images, split.train_labels)
        model, opt, sched = new_run(steps=len(train))

        def stop(epoch, history):
            if epoch == stop_after:
                raise KeyboardInterrupt

        try:
            return h.fit(model, train, opt, 4, scheduler=sched, checkpoint_path=checkpoint, progress=False, seed=3,
                         on_epoch_end=stop)
        except KeyboardInterrupt:
            return None

    reference = run()
    run(tmp_path / "run.pt", stop_after=2)
    resumed = run(tmp_path / "run.pt")
    assert metrics(resumed) == metrics(reference)
    assert len({r["train_loss"] for r in reference.records}) == 4
