"""Data parallelism: training and CBFT over 8 simulated CPU devices equal one device."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from mmc_jax.runtime import parallel

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Trains a tiny θ_C (batches of 64, and a last one of 36 that cannot be split over 8
# devices), then one CBFT epoch from it, and saves both models' parameters.
SCRIPT = r"""
import sys
import jax, numpy as np
from experiments.configs import demo
from mmc_jax import finetune, training

devices, out = int(sys.argv[1]), sys.argv[2]
assert jax.device_count() == devices, jax.devices()
config = demo.get_config()
config.model.width, config.eval_batch_size = 0.25, 100
config.data.update(num_train=320, num_test=100, cue_proportion=0.9)
config.optim.update(batch_size=64, epochs=2)
run = training.train_and_evaluate(config, out + "/theta_c", progress=False)
state = run["state"]
train, _ = training.load_data(config)
clean, cued = finetune.draw_subsets(train, 100, 200, 0)
iterator = finetune.paired_iterator(train, clean, cued, 32, 0)
ft = finetune.FinetuneConfig.of(optim={"epochs": 2, "batch_size": 32}, warmup_epochs=1)
cbft, _ = finetune.cbft(state.apply_fn, state.variables, state.variables, iterator, train.cue,
                        10, ft, out + "/cbft", progress=False)
leaves = {f"theta_c_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(state.variables))}
leaves.update({f"cbft_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(cbft))})
np.savez(out + "/leaves.npz", **leaves)
"""


def _run(devices: int, out: pathlib.Path) -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(devices), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out / "leaves.npz"))


@pytest.mark.slow
def test_training_and_cbft_on_8_devices_equal_one_device(tmp_path):
    one, eight = _run(1, tmp_path / "one"), _run(8, tmp_path / "eight")
    assert one.keys() == eight.keys() and any(k.startswith("cbft_") for k in one)
    for name in one:
        np.testing.assert_allclose(eight[name], one[name], rtol=2e-4, atol=2e-5, err_msg=name)


def test_batch_sharding_splits_what_divides_and_replicates_the_rest():
    mesh = parallel.data_mesh()
    n = mesh.devices.size
    batch = {"images": np.zeros((4 * n, 2)), "labels": np.zeros(4 * n + 1), "scalar": 1.0}
    shardings = parallel.batch_sharding(batch, mesh)
    assert shardings["images"].spec == jax.sharding.PartitionSpec("data")
    expected_labels = () if n > 1 else ("data",)
    assert tuple(shardings["labels"].spec) == expected_labels
    assert tuple(shardings["scalar"].spec) == ()
    placed = next(parallel.shard_batches([batch], mesh))
    np.testing.assert_array_equal(placed["images"], batch["images"])
