"""PyTorch counterparts of every mmc_jax preset (same layers and widths): the paper code's
VGG-13 and ResNet-18 with its module names (their state_dicts load with
``mmc_jax.models.interop.load_torch_checkpoint``), and the other presets, for side-by-side
comparisons on one machine. Needs ``torch`` (the ``torch`` extra; not a dependency)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmc_jax.models.vgg import VGG13_BLOCKS  # the same (channels, stride) blocks


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class BlockVGG(nn.Module):
    """conv–BN–ReLU, as the paper code's VGG block (``conv1``, ``bn1``)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x)))


class VGG(nn.Module):
    """The paper code's VGG-13: ten blocks with stride-2 convs (``layers.<i>``), GAP and
    ``linear``; its state_dict loads with ``interop.load_torch_checkpoint(..., "vgg13")``."""

    def __init__(self, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        blocks, channels = [], 3
        for out, stride in VGG13_BLOCKS:
            blocks.append(BlockVGG(channels, _scaled(out, width), stride))
            channels = _scaled(out, width)
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.linear(self.layers(x).mean(dim=(2, 3)))


def vgg13(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """:class:`VGG` (mmc_jax's ``vgg13``; ``width=0.125``: ``vgg13_small``)."""
    return VGG(num_classes, width)


class BasicBlock(nn.Module):
    """The paper code's ResNet block: two 3×3 conv–BN layers, and a 1×1 conv–BN shortcut
    (``shortcut_conv``, ``shortcut_bn``) where the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.use_shortcut = stride != 1 or in_planes != planes
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut_conv = nn.Sequential()
        if self.use_shortcut:
            self.shortcut_conv = nn.Conv2d(in_planes, planes, 1, stride, bias=False)
            self.shortcut_bn = nn.BatchNorm2d(planes)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = self.shortcut_conv(x)
        if self.use_shortcut:
            shortcut = self.shortcut_bn(shortcut)
        return F.relu(out + shortcut)


class ResNet18(nn.Module):
    """The paper code's CIFAR ResNet-18 (3×3 stem, no max-pool, ``layer1``–``layer4`` of two
    BasicBlocks, GAP, ``linear``); loads with ``interop.load_torch_checkpoint(...,
    "resnet18")``; ``width=0.125``: mmc_jax's ``resnet18_small``."""

    def __init__(self, num_classes: int = 10, width: float = 1.0):
        super().__init__()
        stem = _scaled(64, width)
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        channels, stages = stem, []
        for base, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            planes = _scaled(base, width)
            stages.append(
                nn.Sequential(BasicBlock(channels, planes, stride), BasicBlock(planes, planes, 1))
            )
            channels = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def cnn4(num_classes: int = 10, width: float = 1.0) -> nn.Module:
    """The demo model: four bias-free 3×3 conv–BN–ReLU layers (16/32/64/128 channels), a
    2×2 max-pool after all but the last, GAP and one linear layer."""
    layers, channels = [], 3
    for i, out in enumerate((16, 32, 64, 128)):
        out = _scaled(out, width)
        layers += [
            nn.Conv2d(channels, out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU(inplace=True),
        ]
        if i < 3:
            layers.append(nn.MaxPool2d(2))
        channels = out
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
    )


def mlp(num_classes: int = 10, hidden=(512, 256), image=(3, 32, 32)) -> nn.Module:
    """Flatten → [Linear → LayerNorm → ReLU] per hidden layer → Linear."""
    layers, features = [nn.Flatten()], image[0] * image[1] * image[2]
    for out in hidden:
        layers += [nn.Linear(features, out), nn.LayerNorm(out), nn.ReLU(inplace=True)]
        features = out
    return nn.Sequential(*layers, nn.Linear(features, num_classes))


class ViT(nn.Module):
    """Patch embedding, position embeddings, pre-LayerNorm attention + GELU MLP blocks,
    final LayerNorm, mean over tokens, linear (mmc_jax's ``vit_tiny``)."""

    def __init__(
        self,
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: int = 2,
        patch: int = 4,
        image: int = 32,
    ):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.position = nn.Parameter(torch.zeros(1, (image // patch) ** 2, dim))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                dim * mlp_ratio,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x).mean(1))


class PreActBlock(nn.Module):
    """norm → ReLU → conv, twice, with a 1×1 projection where the shape changes."""

    def __init__(self, channels_in: int, channels: int, stride: int, norm):
        super().__init__()
        self.norm1, self.norm2 = norm(channels_in), norm(channels)
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.project = (
            nn.Conv2d(channels_in, channels, 1, stride, bias=False)
            if stride != 1 or channels_in != channels
            else None
        )

    def forward(self, x):
        y = F.relu(self.norm1(x))
        shortcut = x if self.project is None else self.project(y)
        y = F.relu(self.norm2(self.conv1(y)))
        return shortcut + self.conv2(y)


def wrn(
    num_classes: int = 10, stages=(32, 64, 128), group_norm: bool = False, groups: int = 8
) -> nn.Module:
    """mmc_jax's ``wrn`` (BatchNorm) or ``wrn_gn`` (GroupNorm with ``groups`` groups)."""
    norm = (lambda c: nn.GroupNorm(groups, c)) if group_norm else nn.BatchNorm2d
    layers, channels = [nn.Conv2d(3, stages[0], 3, 1, 1, bias=False)], stages[0]
    for s, out in enumerate(stages):
        layers.append(PreActBlock(channels, out, 2 if s else 1, norm))
        channels = out
    return nn.Sequential(
        *layers,
        norm(channels),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels, num_classes),
    )


#: mmc_jax preset name → PyTorch constructor.
PRESETS = {
    "cnn4": lambda: cnn4(),
    "vgg13": lambda: vgg13(),
    "vgg13_small": lambda: vgg13(width=0.125),
    "resnet18": lambda: ResNet18(),
    "resnet18_small": lambda: ResNet18(width=0.125),
    "mlp": lambda: mlp(),
    "vit_tiny": lambda: ViT(),
    "wrn": lambda: wrn(),
    "wrn_gn": lambda: wrn(group_norm=True),
}
