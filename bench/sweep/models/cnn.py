"""The seed guide's SimpleCNN: a CIFAR-10 classifier for 32x32x3 images."""

from __future__ import annotations

import torch
from torch import nn

from bench.sweep.models.spec import ModelSpec, image_batch


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SimpleCNN(nn.Module):
    """Two blocks of (conv3x3-BN-ReLU) x2 + maxpool + dropout, then FC 4096 -> 512 -> classes."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(3, 32), *conv_bn_relu(32, 32), nn.MaxPool2d(2, 2), nn.Dropout2d(0.25),
            *conv_bn_relu(32, 64), *conv_bn_relu(64, 64), nn.MaxPool2d(2, 2), nn.Dropout2d(0.25),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 8 * 8, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


SPEC = ModelSpec(
    name="cnn",
    build=lambda size, attn: SimpleCNN(),
    batch=image_batch({"quick": 32, "full": 32}, 10),  # the FC layer fixes 32x32 inputs
    batch_sizes={"quick": (8, 32), "full": (128, 512)},
    convolutional=True,
)
