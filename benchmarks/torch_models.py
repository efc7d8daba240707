"""PyTorch counterparts of mmc_jax's cnn4, VGG-13 and ResNet-18 (same layers and widths), for
throughput comparisons on the same machine. Needs ``torch`` (not a dependency of mmc_jax)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

VGG13_BLOCKS = ((64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2),
                (512, 1), (512, 1))


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def vgg13(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """Ten conv–BN–ReLU blocks with stride-2 convs, GAP and one linear layer."""
    layers, channels = [], 3
    for out, stride in VGG13_BLOCKS:
        out = _scaled(out, width)
        layers += [nn.Conv2d(channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True)]
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, num_classes))


class BasicBlock(nn.Module):
    """Two 3×3 conv–BN layers and a 1×1 conv–BN shortcut where the shape changes."""

    def __init__(self, channels_in: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18: 3×3 stem, no max-pool, BasicBlocks [2, 2, 2, 2], GAP, linear."""

    def __init__(self, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        stem = _scaled(64, width)
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks, channels = [], stem
        for stage, base in enumerate((64, 128, 256, 512)):
            for block in range(2):
                out = _scaled(base, width)
                blocks.append(BasicBlock(channels, out, 2 if stage and not block else 1))
                channels = out
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def cnn4(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """The demo model: four bias-free 3×3 conv–BN–ReLU layers (16/32/64/128 channels), a
    2×2 max-pool after all but the last, GAP and one linear layer."""
    layers, channels = [], 3
    for i, out in enumerate((16, 32, 64, 128)):
        out = _scaled(out, width)
        layers += [nn.Conv2d(channels, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out),
                   nn.ReLU(inplace=True)]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        channels = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(channels, num_classes))


#: mmc_jax preset name → PyTorch constructor.
PRESETS = {
    "cnn4": lambda: cnn4(),
    "vgg13": lambda: vgg13(),
    "vgg13_small": lambda: vgg13(width=0.125),
    "resnet18": lambda: ResNet18(),
    "resnet18_small": lambda: ResNet18(width=0.125),
}
