"""Model zoo: one file per family, factory functions returning ready-to-train modules for 32x32 inputs."""
from .resnet import BasicBlock, ResNet, resnet18, resnet34, resnet_kaggle
from .lightnet import LightNet, lightnet
from .resnet9 import ResNet9, resnet9

__all__ = ["BasicBlock", "LightNet", "ResNet", "ResNet9", "count_parameters", "resnet18", "resnet34", "resnet9",
           "resnet_kaggle", "lightnet", "FACTORIES"]


def count_parameters(model, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


FACTORIES = {"lightnet": lightnet, "resnet18": resnet18, "resnet34": resnet34, "resnet9": resnet9,
             "resnet_kaggle": resnet_kaggle}  # by name, for command-line tools and exported checkpoints
