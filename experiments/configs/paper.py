"""The paper's base models (θ_C and θ_NC): CIFAR-10 / CIFAR-100 box cue and Dominoes.

    python -m experiments.train --config=experiments/configs/paper.py:cifar10,vgg13,0.9 \
        --workdir=workdirs/c10_vgg13_p0.9
    python -m experiments.train --config=experiments/configs/paper.py:cifar10,resnet18,0.0 ...
    python -m experiments.train --config=experiments/configs/paper.py:cifar100,vgg13,0.9 ...
    python -m experiments.train --config=experiments/configs/paper.py:dominoes,vgg13,0.9 ...

The argument is ``dataset,model,cue_proportion`` with dataset in {cifar10, cifar100,
dominoes}, model in {vgg13, resnet18} and p in {0.6, 0.7, 0.8, 0.9, 1.0} (0.0: no cue).
Settings from the paper's code: SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 256,
100 epochs, ×0.1 every 40 epochs, no augmentation. Needs the TFDS data
(docs/getting_started.md, "Real datasets"). GPU runtime not measured yet (5 million training
images per model).
"""

from experiments.configs import demo

DATASETS = ("cifar10", "cifar100", "dominoes")
MODELS = ("vgg13", "resnet18")


def get_config(arg: str = "cifar10,vgg13,0.9"):
    dataset, model, proportion = (arg.split(",") + ["", "", ""])[:3]
    if dataset not in DATASETS or model not in MODELS:
        raise ValueError(f"paper config argument must be 'dataset,model,p' with dataset in "
                         f"{DATASETS} and model in {MODELS}, got {arg!r}")
    config = demo.get_config()
    config.data.name = dataset
    config.data.cue_proportion = float(proportion or 0.9)
    config.model.name = model
    config.optim.update(epochs=100, batch_size=256, learning_rate=0.1, momentum=0.9,
                        weight_decay=1e-4, schedule="step", step_every_epochs=40,
                        step_factor=0.1)
    return config
