"""torchvision's ImageNet models. Pretrained weights are fetched only when the user asks for them."""
from __future__ import annotations

from . import ModelSpec, register

IMAGENET = (3, 224, 224)
for name in ("resnet18", "resnet50", "alexnet", "vgg16", "mobilenet_v2"):
    def build(pretrained: bool = False, name: str = name):
        import torchvision  # 1.7 s to import: only when such a model is built

        return torchvision.models.get_model(name, weights="DEFAULT" if pretrained else None)
    register(ModelSpec(name, build, IMAGENET, 1000, f"torchvision {name} (ImageNet)", pretrained_available=True))
