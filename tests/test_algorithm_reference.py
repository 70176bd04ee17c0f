"""Each algorithm's reference settings come from its own file and equal google-research/fixmatch's.

The expected values below are literals copied from the reference repository (file and flag beside each),
an independent source: a test fails if an algorithm file, the fallback, or the family resolution drifts
from the code that produced the published numbers (e.g. if every algorithm got FixMatch's mu = 7).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_bench.algorithm import (
    DEFAULT_LOOP_SETTINGS,
    LOOP_SETTINGS,
    Batch,
    build_algorithm,
    hyperparameters,
    load_algorithm_class,
    loop_settings,
    reference_configuration,
)

# (mu, lr, weight_decay) of a default run on CIFAR-10, from google-research/fixmatch: mu from the flag uratio
# or the shape of y_in, lr from FLAGS.set_default('lr', ...), weight decay from the flag wd.
REFERENCE_LOOP = {
    "fixmatch": (7, 0.03, 5e-4),        # fixmatch.py: uratio 7
    "uda": (7, 0.03, 5e-4),             # uda.py: uratio 7
    "mixmatch": (1, 0.03, 5e-4),        # mixmatch.py: y_in [batch, nu]
    "remixmatch": (1, 0.002, 0.02),     # cta/cta_remixmatch.py: y_in [batch, K + 1]; lr 0.002; wd 0.02
    "mean_teacher": (1, 0.03, 5e-4),    # mean_teacher.py: y_in [batch, 2]
    "pi_model": (1, 0.03, 5e-4),        # pi_model.py: y_in [batch, 2]
    "pseudo_label": (1, 0.03, 5e-4),    # pseudo_label.py: y_in [batch]
}

# Hyper-parameters of a default run, from google-research/fixmatch (file: flags, in field order).
REFERENCE_HYPERPARAMETERS = {
    # fixmatch.py: confidence, wu
    "fixmatch": {"threshold": 0.95, "lambda_u": 1.0},
    # uda.py: confidence, temperature, wu, tsa 'no', tsa_pos 8 (2^14 << 8 of 2^26 images)
    "uda": {"threshold": 0.95, "temperature": 1.0, "lambda_u": 1.0, "tsa": "none", "tsa_end": 2**22 / 2**26},
    # mixmatch.py: T=0.5, beta, w_match, warmup_kimg 1024 of train_kimg 1 << 16, layers.interleave
    "mixmatch": {"temperature": 0.5, "alpha": 0.5, "lambda_u": 100.0, "rampup_end": 1024 / 65536,
                 "bn_groups": "interleaved"},
    # cta_remixmatch.py: T, beta, w_match, w_kl, w_rot, warmup_kimg, dbuf, PData (balanced), augment.py K
    "remixmatch": {"temperature": 0.5, "alpha": 0.75, "lambda_u": 1.5, "lambda_u1": 0.5, "lambda_rot": 0.5,
                   "rampup_end": 1024 / 65536, "da_window": 128, "da_target": "uniform", "k": 1,
                   # cta/lib/train.py gen_labeled_fn: the labelled batch is CTAugment'ed; layers.interleave
                   "labeled_view": "strong", "bn_groups": "interleaved"},
    # mean_teacher.py, pi_model.py: consistency_weight, warmup_pos (linear)
    "mean_teacher": {"lambda_u": 50.0, "rampup_end": 0.4, "rampup": "linear"},
    "pi_model": {"lambda_u": 10.0, "rampup_end": 0.4, "rampup": "linear"},
    # pseudo_label.py: threshold, consistency_weight, warmup_pos
    "pseudo_label": {"threshold": 0.95, "lambda_u": 1.0, "rampup_end": 0.4},
}

# The unlabelled views each reference feeds (augment flags and y_in shapes).
REFERENCE_VIEWS = {
    "fixmatch": ("weak", "strong"), "uda": ("weak", "strong"), "mixmatch": ("weak", "weak"),
    "remixmatch": ("weak", "strong"), "mean_teacher": ("weak", "weak"), "pi_model": ("weak", "weak"),
    "pseudo_label": ("weak",), "supervised": (),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_LOOP))
def test_loop_settings_are_the_references_and_come_from_the_algorithm_file(name):
    mu, lr, weight_decay = REFERENCE_LOOP[name]
    assert loop_settings(name, "cifar10") == {"mu": mu, "lr": lr, "weight_decay": weight_decay}
    assert loop_settings(name, None) == loop_settings(name, "cifar10")
    # The value lives in the algorithm's own class, not in a profile or a shared table.
    cls = load_algorithm_class(name)
    assert cls.reference["*"]["mu"] == mu
    assert loop_settings(build_algorithm(name), "cifar10") == loop_settings(cls, "cifar10")


@pytest.mark.parametrize("name", sorted(REFERENCE_HYPERPARAMETERS))
def test_default_hyperparameters_and_views_are_the_references(name):
    algorithm = build_algorithm(name, None, "cifar10")
    assert hyperparameters(algorithm) == pytest.approx(REFERENCE_HYPERPARAMETERS[name])
    assert algorithm.unlabeled_views == REFERENCE_VIEWS[name]


def test_cifar100_changes_only_fixmatchs_weight_decay():
    # FixMatch paper (arXiv 2001.07685), Sec. 4: weight decay 0.001 for CIFAR-100.
    assert loop_settings("fixmatch", "cifar100") == {"mu": 7, "lr": 0.03, "weight_decay": 1e-3}
    assert reference_configuration("fixmatch", "cifar100") == {"threshold": 0.95, "lambda_u": 1.0, "mu": 7,
                                                               "lr": 0.03, "weight_decay": 1e-3}
    for name in set(REFERENCE_LOOP) - {"fixmatch"}:
        assert loop_settings(name, "cifar100") == loop_settings(name, "cifar10"), name


def test_the_fallback_for_a_plugin_is_fixmatchs_settings():
    assert DEFAULT_LOOP_SETTINGS == loop_settings("fixmatch", "cifar10")
    assert tuple(DEFAULT_LOOP_SETTINGS) == LOOP_SETTINGS


def test_reference_configuration_is_hyperparameters_plus_loop_settings():
    assert reference_configuration("mixmatch", "cifar10") == {**REFERENCE_HYPERPARAMETERS["mixmatch"],
                                                              "mu": 1, "lr": 0.03, "weight_decay": 5e-4}


def test_remixmatch_k_sets_the_number_of_strong_views():
    assert build_algorithm("remixmatch", {"k": "8"}).unlabeled_views == ("weak",) + ("strong",) * 8


# --- the supervised baseline --------------------------------------------------------------------------------


def test_supervised_takes_fixmatchs_optimizer_settings_for_every_family():
    for family in (None, "cifar10", "cifar100"):
        ours, fixmatch = loop_settings("supervised", family), loop_settings("fixmatch", family)
        assert (ours["lr"], ours["weight_decay"]) == (fixmatch["lr"], fixmatch["weight_decay"])


def test_supervised_is_the_labelled_cross_entropy_alone():
    algorithm = build_algorithm("supervised")
    assert algorithm.targets_from == "student" and algorithm.unlabeled_views == ()
    assert hyperparameters(algorithm) == {}
    model = torch.nn.Linear(3, 2)
    x, y = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]]), torch.tensor([1, 0])
    losses = algorithm.loss(model, None, Batch(x=x, y=y, u=(), progress=0.3, num_classes=2))
    torch.testing.assert_close(losses.total, F.cross_entropy(model(x), y))
    assert set(losses.terms) == {"supervised"}
