"""LeNet-5 (the Caffe variant of papers 1-3) and LeNet-300-100."""
from __future__ import annotations

import torch
from torch import nn

from . import ModelSpec, register


class LeNet5(nn.Module):
    """conv 1->20 5x5, maxpool, conv 20->50 5x5, maxpool, fc 800->500, ReLU, fc 500->10 (430,500 weights)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(800, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))  # (N, 20, 12, 12): Caffe's LeNet has no ReLU after the convs
        x = self.pool2(self.conv2(x))  # (N, 50, 4, 4)
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


class LeNet300(nn.Module):
    """784-300-100-10 fully connected network."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.flatten(x)))
        return self.fc3(self.relu(self.fc2(x)))


register(ModelSpec("lenet5", lambda pretrained=False: LeNet5(), (1, 28, 28), 10,
                   "Caffe LeNet-5 of the ADMM papers: 2 conv + 2 fc, 430,500 weights"))
register(ModelSpec("lenet300", lambda pretrained=False: LeNet300(), (1, 28, 28), 10,
                   "LeNet-300-100 MLP: 784-300-100-10, 266,200 weights"))
