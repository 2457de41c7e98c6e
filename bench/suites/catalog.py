"""Suites: named grids of runs (datasets x methods x forget sets x seeds), registered by name.

Each dataset has default architecture and pretraining recipe (``DATASET_DEFAULTS``): the
paper recipes for CIFAR/ImageNet (spec section 1.7), small ones for the embedded data.
"""

from __future__ import annotations

import dataclasses

from bench.core.spec import DataSpec, ForgetSpec, Recipe
from bench.suites.grid import (  # noqa: F401 - re-exported: their home before bench.suites.grid
    CHEAP_METRICS,
    DATASET_DEFAULTS,
    EXPENSIVE_METRICS,
    MAX_RUNS,
    SUITES,
    Composite,
    Grid,
    check_size,
    dataset_defaults,
    register_composite,
    register_suite,
)

# L2UL (Cha et al., AAAI 2024): instance-wise unlearning with D_f only (spec section 1).
L2UL_METHODS = (
    "finetune",
    "neggrad",
    "random_labels",
    "adv_only",
    "mas_only",
    "adv_mas",
    "retrain",
)
# digits: 8x8x1 = 64 pixels instead of CIFAR's 3072. Scaling CIFAR's eps 4 by sqrt(64/3072)
# (eps 0.6) was measured to be far too small for the digits model: only 17 % of the targeted
# examples reached their target (adv_success), so the adversarial term pushed towards labels
# the model does not predict and collapsed it. eps 1.5 with 50 steps of 0.1 reaches ~100 %
# (measured: eps 1.0 -> 85 %, 1.5 -> 100 %, 2.0 -> 100 %), as the paper's attack does on CIFAR.
# N_adv 10 keeps the suite (84 runs) within minutes on 2 CPU cores.
L2UL_DIGITS_ADV = {"n_adv": 10, "eps": 1.5, "step": 0.1, "iters": 50, "max_epochs": 100}
L2UL_DIGITS_HP = {
    "neggrad": {"max_epochs": 300},
    "random_labels": {"max_epochs": 300},
    "mas_only": {"max_epochs": 300},
    "adv_only": L2UL_DIGITS_ADV,
    "adv_mas": L2UL_DIGITS_ADV,
}
L2UL_DIGITS_FORGETS = tuple(ForgetSpec("instance", k=k) for k in (8, 32, 64, 128))
L2UL_PAPER_FORGETS = tuple(ForgetSpec("instance", k=k) for k in (16, 64, 128, 256))
# The paper-scale suites draw adversarial targets as the published runs did (the first-commit
# utils.adv_attack of csm9493/L2UL: uniform on {0..9} for every dataset, a hit on y replaced
# by class 5), not with the project's default ("all": uniform over the other classes)
L2UL_PAPER_TARGETS = {"target_label_range": "first10"}

register_suite(
    Grid(
        name="l2ul-digits",
        description="L2UL family + baselines on the embedded digits, k in {8,32,64,128}, 3 seeds, "
        "shared pretraining (CPU, under 10 minutes)",
        data=DataSpec("digits"),
        methods=L2UL_METHODS,
        forgets=L2UL_DIGITS_FORGETS,
        seeds=(0, 1, 2),
        hparams=L2UL_DIGITS_HP,
        share_pretraining=True,
    )
)
register_suite(
    Grid(
        name="l2ul-cifar10",
        description="L2UL on CIFAR-10 + ResNet-18, paper hyperparameters (N_adv 20, eps 4, "
        "100 PGD iterations, 1000 epochs cap), k in {16,64,128,256}, 5 seeds (GPU)",
        data=DataSpec("cifar10"),
        arch="resnet18_cifar",
        methods=L2UL_METHODS,
        forgets=L2UL_PAPER_FORGETS,
        seeds=(0, 1, 2, 3, 4),
        hparams={"adv_only": L2UL_PAPER_TARGETS, "adv_mas": L2UL_PAPER_TARGETS},
        share_pretraining=True,
    )
)
# CPU-sized CIFAR-10 evidence (the paper's grid needs a GPU): a 5,000-image train subset and a
# 2,000-image test subset, a BatchNorm MLP pretrained without augmentation so that it fits its
# train set as the paper's ResNet-18 does (the small CNN only reached 64 % train accuracy in 30
# epochs: a model that has not memorised D_f cannot forget it instance-wise), the paper's
# attack (N_adv 20, eps 4, step 0.1, 100 iterations) and 1000-epoch cap, 5 seeds; D_f-only
# methods (retraining excluded: it costs a full pretraining per run).
register_suite(
    Grid(
        name="l2ul-cifar10-cpu",
        description="L2UL on a CIFAR-10 subset (5k train, 2k test) + BatchNorm MLP, k in "
        "{16,64}, 5 seeds, the paper's attack, D_f-only methods (CPU)",
        data=DataSpec("cifar10", train_subset=5000, test_subset=2000),
        arch="mlp",
        recipe=Recipe(epochs=40, batch_size=128, lr=0.05, weight_decay=5e-4),
        methods=("neggrad", "random_labels", "adv_only", "mas_only", "adv_mas"),
        forgets=(ForgetSpec("instance", k=16), ForgetSpec("instance", k=64)),
        seeds=(0, 1, 2, 3, 4),
        hparams={
            "neggrad": {"max_epochs": 300},
            "random_labels": {"max_epochs": 300},
            "mas_only": {"max_epochs": 300},
        },
        share_pretraining=True,
    )
)
# The CIFAR-scale L2UL evidence that runs on 2 CPU cores (issue #16): a converged CNN with
# BatchNorm on all of CIFAR-10, the CIFAR ResNet-20 fitted to the JPEG copy (88.6 % test, 95.9 %
# train; ../shared/data/weights/PROVENANCE.txt), instead of the MLP proxy above. Full 50k train
# split for the methods; D_r accuracy scored on a fixed seeded 10k sample of D_r (the full D_r
# costs ~60 s per evaluation on 2 cores); the paper's attack (N_adv 20, eps 4, step 0.1, 100
# iterations, targets as the published runs drew them) and the paper's 1000-epoch cap; D_f-only
# methods (retraining a ResNet-20 from scratch costs hours per run on a CPU).
register_suite(
    Grid(
        name="l2ul-cifar10-r20",
        description="L2UL on all of CIFAR-10 (JPEG copy) from the shared ResNet-20 checkpoint, "
        "k in {16,64}, 3 seeds, the paper's attack and cap, D_f-only methods (CPU; needs "
        "--data-root ../shared/data)",
        data=DataSpec("cifar10", retain_eval=10_000),
        arch="resnet20_cifar",
        checkpoint="weights/resnet20_cifar10_jpeg.pt",
        methods=("neggrad", "random_labels", "mas_only", "adv_only", "adv_mas"),
        forgets=(ForgetSpec("instance", k=16), ForgetSpec("instance", k=64)),
        seeds=(0, 1, 2),
        hparams={"adv_only": L2UL_PAPER_TARGETS, "adv_mas": L2UL_PAPER_TARGETS},
        share_pretraining=True,
    )
)
register_suite(
    Grid(
        name="l2ul-cifar100",
        description="L2UL on CIFAR-100 + ResNet-50, paper hyperparameters (N_adv 200, 100 "
        "epochs cap), k in {16,64,128,256}, 5 seeds (GPU)",
        data=DataSpec("cifar100"),
        arch="resnet50_cifar",
        methods=L2UL_METHODS,
        forgets=L2UL_PAPER_FORGETS,
        seeds=(0, 1, 2, 3, 4),
        hparams={
            "neggrad": {"max_epochs": 100},
            "random_labels": {"max_epochs": 100},
            "mas_only": {"max_epochs": 100},
            "adv_only": {"n_adv": 200, "max_epochs": 100, **L2UL_PAPER_TARGETS},
            "adv_mas": {"n_adv": 200, "max_epochs": 100, **L2UL_PAPER_TARGETS},
        },
        share_pretraining=True,
    )
)
_L2UL_IMAGENET_HP = {"forget_batch": 16, "max_epochs": 100}
_L2UL_IMAGENET_ADV = {
    **_L2UL_IMAGENET_HP,
    "adv_batch": 128,
    "n_adv": 200,
    "attack_batch": 256,
    **L2UL_PAPER_TARGETS,
}
register_suite(
    Grid(
        name="l2ul-imagenet",
        description="L2UL on ImageNet-1K + torchvision ResNet-50 (pretrained), paper "
        "hyperparameters (forget batch 16, adversarial batch 128, N_adv 200, 100 epochs cap), "
        "k in {16,64,128,256}, 5 seeds (GPU; retrain needs a from-scratch recipe)",
        data=DataSpec("imagenet"),
        arch="tv_resnet50",
        methods=L2UL_METHODS[:-1],
        forgets=L2UL_PAPER_FORGETS,
        seeds=(0, 1, 2, 3, 4),
        hparams={
            "neggrad": _L2UL_IMAGENET_HP,
            "random_labels": _L2UL_IMAGENET_HP,
            "mas_only": {**_L2UL_IMAGENET_HP, "mas_batch": 16},
            "adv_only": _L2UL_IMAGENET_ADV,
            "adv_mas": {**_L2UL_IMAGENET_ADV, "mas_batch": 16},
        },
        share_pretraining=True,
    )
)


def _continual(base: str, description: str, requests: int = 5) -> Grid:
    """The continual-unlearning variant of a registered suite: the same grid, run as a stream
    of ``requests`` requests of k instances each (spec section 5)."""
    grid = dataclasses.replace(
        SUITES.get(base),
        name=f"{base}-continual",
        description=description,
        scenario="continual",
        requests=requests,
    )
    return register_suite(grid)


_continual(
    "l2ul-digits",
    "continual L2UL on the embedded digits: 5 requests of k in {8,32,64,128} each, 3 seeds (CPU)",
)
_continual(
    "l2ul-cifar10",
    "continual L2UL on CIFAR-10 + ResNet-18: 5 requests of k in "
    "{16,64,128,256} each, paper hyperparameters, 5 seeds (GPU)",
)


#: the metrics every suite can afford (the smoke suite records all of them)
NABLATAU_FORGETS = tuple(ForgetSpec("fraction", fraction=f) for f in (0.03, 0.15, 0.30))
NABLATAU_METRICS = ("accuracy", "ua", "ra", "ta", "mia_loss", "mia_entropy")
NABLATAU_METHODS = ("nabla_tau", "nabla_tau_ft", "retrain")
#: the notebooks' SEED, which seeds their test / validation split
NABLATAU_SPLIT_SEEDS = {"digits": 0, "cifar10": 42, "cifar100": 44}


def nablatau_data(name: str) -> DataSpec:
    """All of train; half of the test set as D_v, the other half as the test set."""
    return DataSpec(name, val_fraction=0.5, val_from="test", split_seed=NABLATAU_SPLIT_SEEDS[name])


register_suite(
    Grid(
        name="nablatau-digits",
        description="Nabla-tau vs its notebooks' fine-tuning and retraining on the embedded "
        "digits, random 3/15/30 % forget sets, D_v = half of the test set, 3 seeds (CPU)",
        data=nablatau_data("digits"),
        methods=NABLATAU_METHODS,
        forgets=NABLATAU_FORGETS,
        seeds=(0, 1, 2),
        metrics=NABLATAU_METRICS,
    )
)
# ResNet-18 (torchvision layout) trained from scratch: 50 epochs, SGD 0.1, linear decay, batch
# 256 (CIFAR-10) / 128 (CIFAR-100), crop + flip (spec section 3.3)
_NABLATAU_RECIPE = Recipe(
    epochs=50, batch_size=256, lr=0.1, weight_decay=5e-4, schedule="linear", augment="crop_flip"
)
for _name in ("cifar10", "cifar100"):
    register_suite(
        Grid(
            name=f"nablatau-{_name}",
            description="Nabla-tau vs its notebooks' fine-tuning and retraining on "
            f"{_name.upper()} + ResNet-18 (torchvision layout), random 3/15/30 % forget sets, "
            "D_v = half of the test set, 3 seeds (GPU)",
            data=nablatau_data(_name),
            arch="resnet18_tv",
            recipe=_NABLATAU_RECIPE
            if _name == "cifar10"
            else dataclasses.replace(_NABLATAU_RECIPE, batch_size=128),
            methods=NABLATAU_METHODS,
            forgets=NABLATAU_FORGETS,
            seeds=(0, 1, 2),
            metrics=NABLATAU_METRICS,
        )
    )

# Mnemonic-code one-shot unlearning (Yamashita et al., ACML 2024; spec section 2): class
# removal from a model pretrained with one mnemonic code per class (t_mix of the samples
# replaced by their class's code). Digits: lambda1/lambda2 picked on digits (the paper's MNIST
# values were for an MLP); measured over classes 0-9 at t_mix 0.3: E_F 98.3 %, A_R 96.5 %.
MNEMONIC_DIGITS_HP = {"t_mix": 0.3, "lambda1": 5e-4, "lambda2": 1.0}
register_suite(
    Grid(
        name="mnemonic-digits",
        description="mnemonic-code one-shot class removal vs retraining on the embedded digits, "
        "each class 0-9 forgotten in turn, 3 seeds (CPU)",
        data=DataSpec("digits"),
        methods=("mnemonic", "retrain"),
        forgets=tuple(ForgetSpec("class", classes=(c,)) for c in range(10)),
        seeds=(0, 1, 2),
        metrics=("accuracy", "per_class_accuracy", "ua", "ra", "ta", "mia_loss"),
        hparams={"mnemonic": MNEMONIC_DIGITS_HP},
        share_pretraining=False,  # the paper trains one model per run
    )
)
# CIFAR-10, ResNet-18, the paper's lambda1 1e-5, lambda2 1e4, t_mix 0.3 with codes in the
# model's input space (the reference code's CIFAR codes): Tables 2/3 (class 0) and 7 (1-9).
# The reference's kuangliu ResNet-18 (no max-pool, spec 2.2), for which lambda was calibrated,
# not L2UL's resnet18_cifar (max-pool kept)
MNEMONIC_CIFAR_HP = {"t_mix": 0.3, "lambda1": 1e-5, "lambda2": 1e4, "code_space": "input"}
register_suite(
    Grid(
        name="mnemonic-cifar10",
        description="mnemonic-code one-shot class removal on CIFAR-10 + ResNet-18, paper "
        "hyperparameters, classes 0-9 (Tables 2/3/7), 3 seeds (GPU)",
        data=DataSpec("cifar10"),
        arch="resnet18_kuangliu",
        methods=("mnemonic", "retrain"),
        forgets=tuple(ForgetSpec("class", classes=(c,)) for c in range(10)),
        seeds=(0, 1, 2),
        metrics=("accuracy", "per_class_accuracy", "ua", "ra", "ta", "mia_loss"),
        hparams={"mnemonic": MNEMONIC_CIFAR_HP},
        share_pretraining=False,
    )
)
# CPU-sized CIFAR-10 evidence: the l2ul-cifar10-cpu data and MLP (5k train / 2k test JPEG
# images), class 0 removed, the paper's CIFAR-10 hyperparameters
register_suite(
    Grid(
        name="mnemonic-cifar10-cpu",
        description="mnemonic-code class removal on a CIFAR-10 subset (5k train, 2k test) + "
        "BatchNorm MLP, class 0, paper hyperparameters, 3 seeds (CPU)",
        data=DataSpec("cifar10", train_subset=5000, test_subset=2000),
        arch="mlp",
        recipe=Recipe(epochs=40, batch_size=128, lr=0.05, weight_decay=5e-4),
        methods=("mnemonic", "retrain"),
        forgets=(ForgetSpec("class", classes=(0,)),),
        seeds=(0, 1, 2),
        metrics=("accuracy", "per_class_accuracy", "ua", "ra", "ta", "mia_loss"),
        hparams={"mnemonic": MNEMONIC_CIFAR_HP},
        share_pretraining=False,
    )
)
# Table 5: the t_mix sweep (each value has its own cached pretraining), class 0
for _t in (0.1, 0.3, 0.5, 0.8):
    register_suite(
        Grid(
            name=f"mnemonic-cifar10-tmix{_t:g}",
            description=f"mnemonic on CIFAR-10 with t_mix {_t:g} (Table 5), class 0, 3 seeds (GPU)",
            data=DataSpec("cifar10"),
            arch="resnet18_kuangliu",
            methods=("mnemonic",),
            forgets=(ForgetSpec("class", classes=(0,)),),
            seeds=(0, 1, 2),
            metrics=("accuracy", "per_class_accuracy"),
            hparams={"mnemonic": {**MNEMONIC_CIFAR_HP, "t_mix": _t}},
            share_pretraining=False,
        )
    )

# The main job: every registered method on the embedded digits with the cheap metrics.
# Adversarial methods use the digits-sized L2UL radius (eps 1.5) with a shorter attack (20
# steps of 0.15, a path of twice the radius; 5 examples per instance) and a short epoch cap, so
# that the suite stays within two minutes on 2 CPU cores (the l2ul-digits suite keeps the full
# attack).
SMOKE_ADV = {"n_adv": 5, "iters": 20, "step": 0.15, "max_epochs": 30}
SMOKE_HP = {
    **{m: {**hp, **SMOKE_ADV} if "n_adv" in hp else hp for m, hp in L2UL_DIGITS_HP.items()},
    "mnemonic": MNEMONIC_DIGITS_HP,
    "boundary_shrink": {"lr": 3e-3, "epochs": 5},
    # Retain-set passes scaled to the smoke's 10-epoch pretraining: their 10-epoch defaults
    # were set against CIFAR's 200 (5 %); 10 of 10 would cost as much as retraining itself.
    **{m: {"epochs": 5} for m in ("finetune", "cf_k", "eu_k", "l1_sparse", "salun", "rl")},
    "unsir": {"noise_batch": 64, "noise_steps": 20, "noise_repeats": 4, "samples_per_class": 100},
}
register_suite(
    Grid(
        name="smoke",
        description="every registered method on the embedded digits, 2 seeds x 2 forget sizes, "
        "every cheap metric (CPU, a few minutes)",
        # a 10 % validation split, for the methods that need one (nabla_tau)
        data=DataSpec("digits", val_fraction=0.1),
        # 10 epochs instead of the digits default 20: the same 100 % train / 99.2 % test
        # accuracy (measured), in half the pretraining and retraining time
        recipe=Recipe(epochs=10, batch_size=64, lr=0.02, weight_decay=5e-4),
        # instances, and one whole class (what class-removal methods such as mnemonic do)
        forgets=(ForgetSpec("instance", k=32), ForgetSpec("class", classes=(0,))),
        seeds=(0, 1),
        metrics=CHEAP_METRICS,
        hparams=SMOKE_HP,
    )
)

# The evaluation suite on the embedded digits: the cheap metrics plus the expensive tier (the
# oracle pool of 4 retrained models and 4 unlearned replicas per run, KLOM, challenge score,
# population-epsilon FQS, relearn time, representation diagnostics), retrain as the reference
# for the gaps of the aggregation layer.
register_suite(
    Grid(
        name="metrics-digits",
        description="every metric incl. the oracle-pool tier (pool of 4) on the embedded digits: "
        "retrain, finetune, neggrad, adv_mas, k=32, 2 seeds (CPU)",
        data=DataSpec("digits"),
        methods=("retrain", "finetune", "neggrad", "adv_mas"),
        forgets=(ForgetSpec("instance", k=32),),
        seeds=(0, 1),
        metrics=(*CHEAP_METRICS, *EXPENSIVE_METRICS),
        hparams=SMOKE_HP,
        pool_size=4,
    )
)

# Equal-budget tuning (python -m bench.tune --suite tune-digits, 20 trials per method and forget
# set): six methods at their paper defaults and tuned, beside retraining (the reference of the
# gaps); a 10 % validation split held out of train is the selection data of the search.
TUNE_METHODS = ("neggrad", "random_labels", "scrub", "salun", "l1_sparse", "nabla_tau")
register_suite(
    Grid(
        name="tune-digits",
        description="paper defaults vs equal-budget tuned hyperparameters (python -m bench.tune, "
        "20 trials each) for neggrad, random_labels, scrub, salun, l1_sparse, nabla_tau, with "
        "retrain, on the embedded digits, k=32 and class 0, 2 seeds (CPU)",
        data=DataSpec("digits", val_fraction=0.1),
        recipe=Recipe(epochs=10, batch_size=64, lr=0.02, weight_decay=5e-4),
        methods=(*TUNE_METHODS, "retrain"),
        forgets=(ForgetSpec("instance", k=32), ForgetSpec("class", classes=(0,))),
        seeds=(0, 1),
        metrics=CHEAP_METRICS,
    )
)


# SalUn's Table 1 protocol (salun-cifar10, salun-cifar10-cpu, salun-digits): its own module,
# which registers them on import and needs the definitions above
import bench.suites.salun  # noqa: E402, F401  (registers the salun-* suites)

# Every paper suite at paper scale as one plan, for a cluster (bench.execution.cluster).
register_composite(
    Composite(
        name="full",
        description="every paper suite at paper scale as one plan: L2UL (CIFAR-10, CIFAR-100, "
        "ImageNet, continual), Mnemonic (CIFAR-10, t_mix sweep), Nabla-tau (CIFAR-10/100), "
        "SalUn's Table 1 (CIFAR-10) (GPU cluster: --executor slurm)",
        parts=(
            "l2ul-cifar10",
            "l2ul-cifar10-continual",
            "l2ul-cifar100",
            "l2ul-imagenet",
            "mnemonic-cifar10",
            "mnemonic-cifar10-tmix0.1",
            "mnemonic-cifar10-tmix0.3",
            "mnemonic-cifar10-tmix0.5",
            "mnemonic-cifar10-tmix0.8",
            "nablatau-cifar10",
            "nablatau-cifar100",
            "salun-cifar10",
        ),
    )
)
