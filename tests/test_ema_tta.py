"""The EMA of the weights (ModelEMA on swa_utils.AveragedModel) and flip test-time augmentation."""
import pytest
import torch
from torch import nn

import helpers as h
from helpers.engine import describe_final_model, measure_final_model


def test_ema_follows_its_formula_with_warmup_and_averages_batchnorm_buffers():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = h.ModelEMA(model, decay=0.9, every=2)
    expected = None
    for step in range(1, 9):
        with torch.no_grad():
            model[0].weight.fill_(step)
            model[1].running_mean.fill_(10 * step)
        ema.step(model)
        if step % 2 == 0:
            update = step // 2 - 1
            decay = min(0.9**2, (1 + update) / (10 + update))
            assert ema.update_decay(update) == pytest.approx(decay)
            expected = step if expected is None else decay * expected + (1 - decay) * step  # first update: a copy
        if expected is not None:
            assert torch.allclose(ema.module[0].weight, torch.full((2, 2), float(expected)))
            assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 10.0 * expected))
    assert expected != pytest.approx(8) and expected != pytest.approx(2)  # an average, not a copy of either end
    assert h.ModelEMA(model, decay=0.9, every=2, warmup=False).update_decay(0) == pytest.approx(0.81)
    with pytest.raises(ValueError, match="decay"):
        h.ModelEMA(model, decay=1.0)


def test_ema_in_fit_is_evaluated_every_epoch_and_differs_from_the_raw_weights(tmp_path):
    h.seed_everything(0)
    data = h.load_cifar10(h.write_synthetic_cifar10(tmp_path, n_train=120, n_test=40).parent, download=False)
    train = h.make_loader(data.train_images, data.train_labels, h.transforms.build_transform(), 20, train=True)
    test = h.make_eval_loader(data.test_images, data.test_labels, 40, device="cpu", backend="dataloader")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(16, 10))
    ema = h.ModelEMA(model, decay=0.95, every=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    history = h.fit(model, train, optimizer, 3, test_loader=test, ema=ema, progress=False)
    assert all(v is not None for v in history["test_acc_ema"] + history["test_loss_ema"])
    assert history["test_loss_ema"] != history["test_loss"]  # EMA changes the reported numbers
    assert not torch.equal(ema.module[0].weight, model[0].weight)
    final = history.final_model
    assert set(final) == {"epoch", "epochs", "test_acc", "test_acc_tta", "test_acc_ema", "test_acc_ema_tta",
                          "test_images"}
    assert final["test_images"] == 40 and final["test_acc"] == pytest.approx(history.final("test_acc"))
    assert "test EMA" in history.table().splitlines()[0]


def test_flip_tta_accuracy_equals_the_mean_softmax_over_each_image_and_its_mirror():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 8 * 8, 10)).eval()
    images = torch.randn(24, 3, 8, 8)
    with torch.no_grad():
        by_hand = (model(images).softmax(1) + model(images.flip(-1)).softmax(1)) / 2
        plain = model(images).argmax(1)
    tta_pred = by_hand.argmax(1)
    assert (tta_pred != plain).any(), "the test needs images where the mirror changes the prediction"
    labels = tta_pred.clone()
    labels[::2] = plain[::2]  # half the labels agree with the plain prediction, half with the TTA one
    loader = [(images[:10], labels[:10]), (images[10:], labels[10:])]
    measured = measure_final_model(model, loader, torch.device("cpu"))
    assert measured["test_acc_tta"] == pytest.approx((tta_pred == labels).float().mean().item())
    assert measured["test_acc"] == pytest.approx((plain == labels).float().mean().item())
    assert measured["test_acc"] != measured["test_acc_tta"] and measured["test_images"] == 24
    assert "test_acc_tta" not in measure_final_model(model, loader, torch.device("cpu"), flip_tta=False)


def test_final_model_line_names_the_weights_it_measured():
    final = {"epoch": 7, "epochs": 9, "test_acc": 0.9, "test_acc_tta": 0.91, "test_acc_ema": 0.92,
             "test_images": 10_000}
    line = describe_final_model(final)
    assert line == ("Final model (weights of epoch 7 of 9) on 10,000 test images: raw weights 90.00% (flip TTA "
                    "91.00%) · EMA weights (epoch 9) 92.00%")
