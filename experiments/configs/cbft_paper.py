"""Table 1 of the paper: CBFT against naive FT, LLRT and LPFT on CIFAR-10, CIFAR-100 and
Dominoes, θ_C trained on 60–90 % cued data, three seeds (mean ± std).

    python -m experiments.cbft --config=experiments/configs/cbft_paper.py:cifar10,vgg13,0.9 \
        --workdir=workdirs/table1/c10_vgg13_p0.9
    # one seed only, or θ_C from an experiments.train run (then shared by all seeds):
    ... --config.seeds="(0,)"    ... --config.cue_model_dir=workdirs/c10_vgg13_p0.9

The argument is ``dataset,model,cue_proportion`` as for ``paper.py`` (dataset in {cifar10,
cifar100, dominoes}, model in {vgg13, resnet18}, p in {0.6, 0.7, 0.8, 0.9}). θ_C is trained
with ``paper.py``'s settings (seed s for seed s of the sweep), then every method follows the
paper's code: 2,500 clean and 47,500 fully cued samples drawn with replacement, 20 epochs,
batch 256, SGD momentum 0.9, weight decay 1e-4, cosine; lr 0.001 (small) and 0.01 (medium,
LPFT, CBFT); LLRT 200 epochs at lr 30 without weight decay; CBFT in ``code`` mode. The four
test conditions carry the cue on every sample (the protocol Table 1's numbers imply). Needs
the TFDS data (docs/getting_started.md, "Real datasets").
"""

from experiments.configs import cbft, paper


def get_config(arg: str = "cifar10,vgg13,0.9"):
    config = cbft.get_config()
    config.cue_model = paper.get_config(arg)
    config.seeds = (0, 1, 2)
    config.data.n_clean = 2500
    config.data.n_cue = 47500
    config.finetune.llrt.learning_rate = 30.0
    config.path.bn_batches = 20
    return config
