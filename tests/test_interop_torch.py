"""PyTorch interop: state_dicts of the paper code's VGG-13 and ResNet-18 (its module and
parameter names, rebuilt here) become mmc_jax variables computing the same logits."""

import numpy as np
import pytest

from mmc_jax import interop, models

# The paper code's modules (its models.py, same parameter and buffer names), built here.
torch = pytest.importorskip("torch", reason="PyTorch interop tests need torch "
                                            "(pip install torch==2.13.0)")
nn, F = torch.nn, torch.nn.functional


class BlockVGG(nn.Module):
    def __init__(self, in_planes, out_planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_planes)

    def forward(self, x):
        return F.relu(self.bn1(self.conv1(x)))


class VGG(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        cfg = [64, (64, 2), 128, (128, 2), 256, (256, 2), 512, (512, 2), 512, 512]
        blocks, in_planes = [], 3
        for x in cfg:
            out, stride = (x, 1) if isinstance(x, int) else x
            blocks.append(BlockVGG(in_planes, out, stride))
            in_planes = out
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.linear(self.layers(x).mean(dim=(2, 3)))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
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
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes, stages = 64, []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride),
                                        BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@pytest.mark.parametrize("architecture,module", [("vgg13", VGG), ("resnet18", ResNet18)])
def test_paper_checkpoints_give_the_same_logits(architecture, module, tmp_path):
    torch.manual_seed(0)
    net = module(num_classes=7)
    with torch.no_grad():  # trained-looking BN statistics and affine parameters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    net.eval()
    torch.save({"state_dict": net.state_dict(), "epoch": 100}, tmp_path / "ckpt.pt")
    variables = interop.load_torch_checkpoint(tmp_path / "ckpt.pt", architecture)
    images = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    logits = models.create(architecture, 7).apply(variables, images, train=False)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=1e-4)
