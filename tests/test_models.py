import pytest
import torch

import helpers as h


def test_resnet18_has_the_cifar_stem_and_exact_parameter_count():
    model = h.models.resnet18()
    assert h.count_parameters(model) == 11_173_962
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


@pytest.mark.parametrize("factory", [h.models.resnet18, h.models.resnet34, h.models.resnet9])
def test_factories_run_on_one_cifar_image(factory):
    model = factory().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_resnet_rejects_mismatched_stage_widths():
    with pytest.raises(ValueError, match="one width per stage"):
        h.models.ResNet([2, 2], widths=(64, 128, 256))
