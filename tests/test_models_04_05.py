"""Models and augmentation of notebooks 04 (ResNet-9) and 05 (ResNet under 5M parameters, RandAugment)."""
import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from helpers import transforms as T
from helpers.data import CIFAR10_MEAN, CIFAR10_STD, synthetic_images
from helpers.loaders import ArrayDataset
from helpers.models import count_parameters, resnet9, resnet_kaggle


def test_resnet9_parameters_and_output():
    model = resnet9().eval()
    assert count_parameters(model) == 6_573_130
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_resnet_kaggle_is_a_343_resnet_under_5m_parameters_with_8x8_pooling():
    model = resnet_kaggle().eval()
    assert count_parameters(model) == 4_916_284 < 5_000_000
    assert [len(model.layer1), len(model.layer2), len(model.layer3)] == [3, 4, 3]
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [66, 132, 264]
    final_maps = []
    model.layer3.register_forward_hook(lambda module, args, out: final_maps.append(out))
    x = torch.randn(1, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (1, 10)
    assert final_maps[0].shape == (1, 264, 8, 8), "the global pool is an 8x8 average pool"
    # atol: the model's own pooling sums in another order than avg_pool2d here, by thread count (1e-8 seen)
    assert torch.allclose(model.linear(torch.nn.functional.avg_pool2d(final_maps[0], 8).flatten(1)), logits,
                          atol=1e-6)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_images(np.array([3]), seed=1)[0]


def _normalized(image: np.ndarray) -> torch.Tensor:
    return T.build_transform()(image=image)["image"]


def test_torchvision_adapter_matches_albumentations_normalization(image):
    adapter = T.TorchvisionTransform(v2.Compose([v2.ToDtype(torch.float32, scale=True),
                                                 v2.Normalize(CIFAR10_MEAN, CIFAR10_STD)]))
    out = adapter(image=image)["image"]
    assert out.dtype == torch.float32 and out.shape == (3, 32, 32)
    assert torch.allclose(out, _normalized(image), atol=1e-5)
    x, label = ArrayDataset(image[None], np.array([3]), adapter)[0]
    assert torch.equal(x, out) and label == 3


def test_randaugment_transform_without_augmentations_is_normalize_or_flip(image):
    transform = T.randaugment_transform(num_ops=0, erasing_p=0.0, padding=0)
    expected = _normalized(image)
    outputs = [transform(image=image)["image"] for _ in range(20)]
    flips = [torch.allclose(o, expected.flip(-1), atol=1e-5) for o in outputs]
    assert all(torch.allclose(o, expected, atol=1e-5) or f for o, f in zip(outputs, flips))
    assert 0 < sum(flips) < 20, "mirrors about half the images"


def test_randaugment_changes_images_and_is_seeded(image):
    transform = T.randaugment_transform(num_ops=2, magnitude=9, erasing_p=0.0, padding=0)
    expected = _normalized(image)
    torch.manual_seed(0)
    outputs = [transform(image=image)["image"] for _ in range(20)]
    changed = [not (torch.allclose(o, expected, atol=1e-5) or torch.allclose(o, expected.flip(-1), atol=1e-5))
               for o in outputs]
    assert sum(changed) >= 15, "RandAugment with 2 ops at magnitude 9 alters almost every image"
    torch.manual_seed(0)
    assert all(torch.equal(o, transform(image=image)["image"]) for o in outputs), "torch's seed fixes it"


def test_random_crop_shifts_and_random_erasing_fills_a_rectangle_with_the_mean(image):
    crop = T.randaugment_transform(num_ops=0, erasing_p=0.0, padding=4)
    expected = _normalized(image)
    shifted = [not (torch.allclose(o, expected, atol=1e-5) or torch.allclose(o, expected.flip(-1), atol=1e-5))
               for o in (crop(image=image)["image"] for _ in range(20))]
    assert sum(shifted) >= 15, "pad 4 + random 32x32 crop moves most images"
    erase = T.randaugment_transform(num_ops=0, erasing_p=1.0, padding=0)
    for _ in range(10):
        out = erase(image=image)["image"]
        erased = (out == 0).all(0)
        rows, cols = erased.any(1).nonzero().flatten(), erased.any(0).nonzero().flatten()
        assert len(rows) and len(cols), "one rectangle is erased"
        box = erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all(), "the erased pixels form a rectangle"
        assert 0.02 <= box.numel() / 1024 <= 0.34, "of 2%-33% of the image (torchvision's default scale)"
