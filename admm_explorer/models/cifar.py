"""CIFAR-10 networks: He et al.'s ResNet-20/32/56, ResNet-18, VGG-16 with BatchNorm, MobileNetV2.

The CIFAR ResNets use 1x1 conv + BN projection shortcuts where the shape changes (He et al.'s option B):
every residual-stream channel then has an explicit producer, which P-RM needs to reason about it.
"""
from __future__ import annotations

import torch
from torch import nn

from . import ModelSpec, register


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Three stages of n basic blocks at 16/32/64 channels (depth = 6n + 2), or ResNet-18's 4 stages."""

    def __init__(self, blocks: list[int], widths: list[int], num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        layers = []
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(BasicBlock(in_planes, w, stride if j == 0 else 1))
                in_planes = w
            layers.append(nn.Sequential(*stage))
        self.layers = nn.ModuleList(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for stage in self.layers:
            x = stage(x)
        return self.fc(self.flatten(self.pool(x)))


VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG16(nn.Module):
    """VGG-16 with BatchNorm for 32x32 inputs: 13 conv3x3-BN-ReLU, 5 max pools, one linear classifier."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                c = v
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class InvertedResidual(nn.Module):
    """expand 1x1 -> depthwise 3x3 -> project 1x1; identity skip when stride 1 and shapes agree."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        hidden = in_planes * expansion
        self.use_skip = stride == 1 and in_planes == out_planes
        self.conv1 = nn.Conv2d(in_planes, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + x if self.use_skip else out


# (expansion, out_planes, repeats, stride); stride 1 in the first two stages for 32x32 inputs
MOBILENETV2_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU6()
        blocks = []
        c = 32
        for expansion, out_planes, repeats, stride in MOBILENETV2_CFG:
            for i in range(repeats):
                blocks.append(InvertedResidual(c, out_planes, expansion, stride if i == 0 else 1))
                c = out_planes
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(self.blocks(x))))
        return self.fc(self.flatten(self.pool(x)))


CIFAR = (3, 32, 32)
for depth in (20, 32, 56):
    n = (depth - 2) // 6
    register(ModelSpec(f"resnet{depth}", lambda pretrained=False, n=n: CifarResNet([n] * 3, [16, 32, 64]),
                       CIFAR, 10, f"He et al. CIFAR ResNet-{depth} ({n} basic blocks per stage)"))
register(ModelSpec("resnet18-cifar", lambda pretrained=False: CifarResNet([2, 2, 2, 2], [64, 128, 256, 512]),
                   CIFAR, 10, "ResNet-18 for 32x32 inputs (3x3 stem, no max pool)"))
register(ModelSpec("vgg16-cifar", lambda pretrained=False: VGG16(), CIFAR, 10,
                   "VGG-16 with BatchNorm, one linear classifier"))
register(ModelSpec("mobilenetv2-cifar", lambda pretrained=False: MobileNetV2(), CIFAR, 10,
                   "MobileNetV2 for 32x32 inputs (stride 1 in the first stages)"))
