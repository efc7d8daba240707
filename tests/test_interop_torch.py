"""PyTorch interop: state_dicts of the paper code's VGG-13 and ResNet-18 (its module and
parameter names, as ``mmc_jax.models.torch_reference`` builds them, the same modules the benchmarks
time) become mmc_jax variables computing the same logits."""

import numpy as np
import pytest

from mmc_jax import models
from mmc_jax.models import interop

torch = pytest.importorskip(
    "torch", reason="PyTorch interop tests need torch (pip install torch==2.13.0)"
)
from mmc_jax.models import torch_reference  # noqa: E402 (needs torch)

nn = torch.nn


@pytest.mark.parametrize(
    "architecture,module", [("vgg13", torch_reference.VGG), ("resnet18", torch_reference.ResNet18)]
)
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
