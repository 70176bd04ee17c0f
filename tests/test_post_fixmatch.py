"""The post-FixMatch algorithms (FlexMatch, FreeMatch, SoftMatch, AdaMatch, Dash, SimMatch): each distinctive
piece against a hand-worked example, their reference settings against USB's files, their running state
through a real training (checkpointed, resumed exactly, indexed by the right images).

Hand-worked values are written as the arithmetic a reader can redo on paper (fractions, ``math.exp``), not by
calling the code under test. Reference literals are copied from microsoft/Semi-supervised-learning
``config/classic_cv/<alg>/<alg>_cifar10_40_0.yaml`` (and ``_cifar100_400_0``), an independent source.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import metric_rows

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, build_algorithm, hyperparameters, loop_settings, setup_algorithm
from ssl_bench.config import RunConfig
from ssl_bench.run.build import build_training
from ssl_bench.run.checkpoint import load_checkpoint
from ssl_bench.run.loop import train

POST_FIXMATCH = ("flexmatch", "freematch", "softmatch", "adamatch", "dash", "simmatch")


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# --- shared running-statistics math ---------------------------------------------------------------------------


def test_ema_update_moves_by_momentum_and_starts_at_the_first_value():
    torch.testing.assert_close(SF.ema_update(t([1.0, 0.0]), t([0.0, 1.0]), 0.75), t([0.75, 0.25]))
    torch.testing.assert_close(SF.ema_update(t([1.0, 0.0]), t([0.2, 0.8]), 0.75, started=False), t([0.2, 0.8]))
    started = torch.tensor(False)
    torch.testing.assert_close(SF.ema_update(t([1.0, 0.0]), t([0.2, 0.8]), 0.75, started=started), t([0.2, 0.8]))


def test_scatter_last_writes_by_index_and_the_last_valid_repeat_wins():
    table = torch.tensor([10, 11, 12, 13])
    index = torch.tensor([2, 0, 2, 1])
    rows = torch.tensor([20, 21, 22, 23])
    assert SF.scatter_last(table, index, rows).tolist() == [21, 23, 22, 13]          # row 2 beats row 0 at [2]
    valid = torch.tensor([True, True, False, False])
    assert SF.scatter_last(table, index, rows, valid).tolist() == [21, 11, 20, 13]   # invalid rows write nothing
    bank = torch.zeros(3, 2)
    out = SF.scatter_last(bank, torch.tensor([1, 1]), t([[1, 1], [2, 2]]))
    assert out.tolist() == [[0, 0], [2, 2], [0, 0]]


def test_moving_alignment_averages_uniform_and_labelled_targets():
    uniform = t([0.5, 0.5])
    p_u, p_x = t([[0.8, 0.2], [0.6, 0.4]]), t([[1.0, 0.0], [0.0, 1.0]])
    p_model, p_target = SF.moving_alignment_averages(uniform, uniform, False, p_u, p_x, 0.5, "uniform")
    torch.testing.assert_close(p_model, t([0.7, 0.3]))          # the first batch's mean, not an EMA of 1/2
    torch.testing.assert_close(p_target, uniform)
    p_model, p_target = SF.moving_alignment_averages(t([0.7, 0.3]), t([0.5, 0.5]), True, p_u, t([[1.0, 0.0]] * 2),
                                                     0.5, "labelled")
    torch.testing.assert_close(p_model, t([0.7, 0.3]))          # 0.5 * 0.7 + 0.5 * 0.7
    torch.testing.assert_close(p_target, t([0.75, 0.25]))       # 0.5 * 0.5 + 0.5 * 1


# --- FlexMatch ------------------------------------------------------------------------------------------------

from ssl_bench_algorithms.flexmatch import FlexMatchState, learning_status, mapped_thresholds  # noqa: E402


def test_flexmatch_mapped_class_thresholds_for_a_given_status():
    # 8 unlabelled images, 3 classes: 2 never confident, 3 last seen as class 0, 1 as class 1, 2 as class 2.
    selected = torch.tensor([-1, -1, 0, 0, 0, 1, 2, 2])
    beta = learning_status(selected, 3, warmup=True)
    torch.testing.assert_close(beta, t([3 / 3, 1 / 3, 2 / 3]))          # divided by max(2, 3, 1, 2) = 3
    # convex M(x) = x / (2 - x), times tau = 0.95
    torch.testing.assert_close(mapped_thresholds(beta, 0.95), t([0.95 * 1.0, 0.95 * (1 / 3) / (5 / 3),
                                                                 0.95 * (2 / 3) / (4 / 3)]))
    torch.testing.assert_close(mapped_thresholds(beta, 0.95, "linear"), 0.95 * beta)


def test_flexmatch_warmup_divides_by_the_unused_count_while_it_dominates():
    selected = torch.tensor([-1, -1, -1, -1, -1, 0, 1, 1])   # 5 unused, class 0: 1, class 1: 2, class 2: 0
    torch.testing.assert_close(learning_status(selected, 3, warmup=True), t([1 / 5, 2 / 5, 0]))
    torch.testing.assert_close(learning_status(selected, 3, warmup=False), t([1 / 2, 1, 0]))
    torch.testing.assert_close(mapped_thresholds(learning_status(selected, 3, warmup=True), 0.95),
                               t([0.95 * (1 / 5) / (9 / 5), 0.95 * (2 / 5) / (8 / 5), 0]))


def test_flexmatch_records_confident_predictions_last_repeat_wins_and_status_waits_for_a_mixed_table():
    state = FlexMatchState(num_unlabeled=4, num_classes=2)
    # Nothing confident: every image is still -1 (all one label), the status stays 0 (USB: no update).
    state.record(torch.tensor([0, 1]), t([[0.6, 0.4], [0.5, 0.5]]), 0.95, warmup=True)
    assert state.selected_label.tolist() == [-1, -1, -1, -1] and state.beta.tolist() == [0, 0]
    # Image 1 twice in the batch: its last occurrence (class 1) is kept; image 0 confident as class 0.
    state.record(torch.tensor([0, 1, 1]), t([[0.96, 0.04], [0.97, 0.03], [0.02, 0.98]]), 0.95, warmup=True)
    assert state.selected_label.tolist() == [0, 1, -1, -1]
    torch.testing.assert_close(state.beta, t([1 / 2, 1 / 2]))   # 1 each, divided by the 2 unused


def test_flexmatch_first_step_masks_with_the_status_before_the_step():
    # At the start beta = 0, so every threshold is 0 and every pseudo-label counts (USB: mask before update).
    alg = build_algorithm("flexmatch")
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    model.num_features = 2
    setup_algorithm(alg, model, 2, num_labeled=1, num_unlabeled=3)
    u = t([[0.1, 0.0], [5.0, 0.0], [0.0, 0.2]])
    batch = Batch(x=t([[1.0, 0.0]]), y=torch.tensor([0]), u=(u, u), progress=0.5, num_classes=2,
                  x_index=torch.tensor([0]), u_index=torch.tensor([0, 1, 2]))
    losses = alg.loss(model, None, batch)
    assert float(losses.logs["mask_rate"]) == 1.0
    assert alg.state.selected_label.tolist() == [-1, 0, -1]   # only image 1 is >= 0.95 confident
    torch.testing.assert_close(alg.state.beta, t([1 / 2, 0]))  # 1 of class 0 / 2 unused


# --- FreeMatch ------------------------------------------------------------------------------------------------

from ssl_bench_algorithms.freematch import FreeMatchState, class_thresholds, fairness_loss  # noqa: E402


def test_freematch_thresholds_after_two_ema_updates():
    state = FreeMatchState(num_classes=2)      # tau = 1/2, p~ = h~ = (1/2, 1/2)
    state.update(t([[0.8, 0.2], [0.6, 0.4]]), momentum=0.5, quantile=False, clip=False)
    # tau = 0.5 * 0.5 + 0.5 * mean(0.8, 0.6); p~ = 0.5 * 0.5 + 0.5 * (0.7, 0.3); h~: both class 0
    torch.testing.assert_close(state.tau, torch.tensor(0.6))
    torch.testing.assert_close(state.p_model, t([0.6, 0.4]))
    torch.testing.assert_close(state.label_hist, t([0.75, 0.25]))
    torch.testing.assert_close(class_thresholds(state.tau, state.p_model), t([0.6, 0.6 * 0.4 / 0.6]))
    state.update(t([[0.1, 0.9], [0.3, 0.7]]), momentum=0.5, quantile=False, clip=False)
    torch.testing.assert_close(state.tau, torch.tensor(0.7))                # 0.5 * 0.6 + 0.5 * 0.8
    torch.testing.assert_close(state.p_model, t([0.4, 0.6]))               # 0.5 * (0.6, 0.4) + 0.5 * (0.2, 0.8)
    torch.testing.assert_close(state.label_hist, t([0.375, 0.625]))        # 0.5 * (0.75, 0.25) + 0.5 * (0, 1)
    torch.testing.assert_close(class_thresholds(state.tau, state.p_model), t([0.7 * 0.4 / 0.6, 0.7]))


def test_freematch_fairness_term_by_hand():
    p_model, label_hist = t([0.4, 0.6]), t([0.375, 0.625])
    target = [0.4 / 0.375, 0.6 / 0.625]
    target = [v / sum(target) for v in target]                              # SumNorm(p~ / h~)
    logits_s = torch.log(t([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]]))
    # Rows 0 and 1 pass: histogram (1/2, 1/2), mean prediction (0.55, 0.45) -> SumNorm(mean / hist) = same.
    got = fairness_loss(logits_s, t([1, 1, 0]), p_model, label_hist)
    expected = target[0] * math.log(0.55 + 1e-12) + target[1] * math.log(0.45 + 1e-12)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # Only row 0 passes: class 1 never predicted gets weight 0 (USB replace_inf_to_zero) -> SumNorm = (1, 0).
    got = fairness_loss(logits_s, t([1, 0, 0]), p_model, label_hist)
    assert float(got) == pytest.approx(target[0] * math.log(1 + 1e-12) + target[1] * math.log(1e-12), rel=1e-5)
    assert float(fairness_loss(logits_s, t([0, 0, 0]), p_model, label_hist)) == 0.0


# --- SoftMatch ------------------------------------------------------------------------------------------------

from ssl_bench_algorithms.softmatch import SoftMatchState, truncated_gaussian_weight  # noqa: E402


def test_softmatch_weights_for_a_given_mean_and_variance():
    # mu = 0.5, sigma^2 = 0.04, n_sigma = 2: weight exp(-(c - mu)^2 / (2 * 0.04 / 4)) below mu, 1 above.
    got = truncated_gaussian_weight(t([0.9, 0.5, 0.3, 0.4]), torch.tensor(0.5), torch.tensor(0.04), 2.0)
    torch.testing.assert_close(got, t([1.0, 1.0, math.exp(-0.04 / 0.02), math.exp(-0.01 / 0.02)]))


def test_softmatch_running_mean_and_unbiased_variance():
    state = SoftMatchState(num_classes=2)         # mu = 1/2, sigma^2 = 1
    state.update_gaussian(t([0.2, 0.4, 0.6]), momentum=0.5)
    # batch mean 0.4, unbiased variance (0.04 + 0 + 0.04) / 2 = 0.04
    torch.testing.assert_close(state.mean, torch.tensor(0.5 * 0.5 + 0.5 * 0.4))
    torch.testing.assert_close(state.variance, torch.tensor(0.5 * 1.0 + 0.5 * 0.04))
    state.align(t([[0.8, 0.2], [0.6, 0.4]]), t([[1.0, 0.0]]), 0.999, "uniform")
    torch.testing.assert_close(state.p_model, t([0.7, 0.3]))   # the first batch's mean
    torch.testing.assert_close(state.p_target, t([0.5, 0.5]))
    assert int(state.updates) == 1


# --- AdaMatch -------------------------------------------------------------------------------------------------

from ssl_bench_algorithms.adamatch import cosine_warmup, relative_threshold  # noqa: E402


def test_adamatch_relative_threshold_and_mask():
    probs_x = t([[0.9, 0.1], [0.6, 0.4]])
    torch.testing.assert_close(relative_threshold(probs_x, 0.95), torch.tensor(0.95 * (0.9 + 0.6) / 2))
    # With the model: W = I, the labelled row's softmax and two unlabelled rows, one above c_tau, one below.
    alg = build_algorithm("adamatch")
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    setup_algorithm(alg, model, 2, num_labeled=1, num_unlabeled=2)
    x = t([[math.log(0.8), math.log(0.2)]])                      # labelled confidence 0.8 -> c_tau = 0.76
    u = t([[math.log(0.9), math.log(0.1)], [math.log(0.4), math.log(0.6)]])
    losses = alg.loss(model, None, Batch(x=x, y=torch.tensor([0]), u=(u, u), progress=0.5, num_classes=2))
    torch.testing.assert_close(losses.logs["relative_threshold"], torch.tensor(0.95 * 0.8))
    # Alignment at step 1: p-hat_u = (0.65, 0.35) (the batch mean), p-hat_x = 0.999 * 1/2 + 0.001 * (0.8, 0.2).
    p_hat_x = (0.999 * 0.5 + 0.001 * 0.8, 0.999 * 0.5 + 0.001 * 0.2)
    aligned = [[p * q / r for p, q, r in zip(row, p_hat_x, (0.65, 0.35), strict=True)] for row in ([0.9, 0.1],
                                                                                                  [0.4, 0.6])]
    top = [max(row) / sum(row) for row in aligned]           # 0.829 and 0.736 around c_tau = 0.76
    assert top[0] >= 0.76 > top[1]
    assert float(losses.logs["mask_rate"]) == 0.5


def test_adamatch_paper_warmup_is_half_a_cosine_over_half_the_run():
    assert cosine_warmup(0.0) == 0.0
    assert cosine_warmup(0.25) == pytest.approx(0.5)
    assert cosine_warmup(0.5) == cosine_warmup(0.9) == 1.0


# --- Dash -----------------------------------------------------------------------------------------------------

from ssl_bench_algorithms.dash import dash_threshold, decays_done  # noqa: E402


def test_dash_schedule_by_hand():
    warmup, every = 2048 / 2**20, 10 / 1024
    assert decays_done(0.0, warmup, every) == 0
    assert decays_done(warmup, warmup, every) == 0
    assert decays_done(warmup + every - 1e-9, warmup, every) == 0
    assert decays_done(warmup + every, warmup, every) == 1
    assert decays_done(warmup + 3.5 * every, warmup, every) == 3
    assert float(dash_threshold(2.0, 0, 1.0001, 1.27, 0.05)) == pytest.approx(1.0001 * 2.0)
    assert float(dash_threshold(2.0, 1, 1.0001, 1.27, 0.05)) == pytest.approx(1.0001 * 2.0 / 1.27)
    assert float(dash_threshold(2.0, 3, 1.0001, 1.27, 0.05)) == pytest.approx(1.0001 * 2.0 / 1.27 ** 3)
    # 1.27^-14 * 2 = 0.07 > 0.05 > 1.27^-16 * 2 = 0.044: the floor from the 16th decay on
    assert float(dash_threshold(2.0, 14, 1.0001, 1.27, 0.05)) > 0.05
    assert float(dash_threshold(2.0, 16, 1.0001, 1.27, 0.05)) == pytest.approx(0.05)


def test_dash_warmup_trains_on_labels_only_then_measures_rho_hat_once():
    alg = build_algorithm("dash")
    model = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    setup_algorithm(alg, model, 2, num_labeled=1, num_unlabeled=2)
    x, y = t([[1.0, 0.0]]), torch.tensor([0])
    u = t([[2.0, 0.0], [0.0, 0.1]])
    warm = alg.loss(model, None, Batch(x=x, y=y, u=(u, u), progress=0.0, num_classes=2))
    assert set(warm.terms) == {"supervised"} and float(alg.state.rho_hat) == -1.0
    ce_x = math.log(math.exp(1) + 1) - 1                        # CE of logits (1, 0) at label 0
    after = alg.loss(model, None, Batch(x=x, y=y, u=(u, u), progress=alg.warmup, num_classes=2))
    assert float(alg.state.rho_hat) == pytest.approx(ce_x)
    assert float(after.logs["rho"]) == pytest.approx(1.0001 * ce_x)
    # Soft targets (T = 0.5) while rho > rho_min: row 0's weak-view loss against softmax(2z) is below rho,
    # row 1's (nearly uniform) is above.
    soft_ce = [-(sum(q * math.log(p) for q, p in zip(sm([2 * v for v in row]), sm(row), strict=True)))
               for row in ([2.0, 0.0], [0.0, 0.1])]
    assert soft_ce[0] <= 1.0001 * ce_x < soft_ce[1]
    assert float(after.logs["mask_rate"]) == 0.5
    alg.loss(model, None, Batch(x=t([[0.0, 3.0]]), y=y, u=(u, u), progress=0.9, num_classes=2))
    assert float(alg.state.rho_hat) == pytest.approx(ce_x)     # measured once


def sm(row: list[float]) -> list[float]:
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


# --- SimMatch -------------------------------------------------------------------------------------------------

from ssl_bench_algorithms.simmatch import SimMatchState, propagate  # noqa: E402


def test_simmatch_propagated_targets_on_a_three_row_bank():
    # Bank labels (0, 1, 1); one unlabelled image: similarities (0.5, 0.3, 0.2), class prediction (0.6, 0.4).
    probs, similarity, labels = t([[0.6, 0.4]]), t([[0.5, 0.3, 0.2]]), torch.tensor([0, 1, 1])
    instance, classes = propagate(probs, similarity, labels, alpha=0.9)
    # Unfolding: (0.5 * 0.6, 0.3 * 0.4, 0.2 * 0.4) = (0.30, 0.12, 0.08), / 0.5
    torch.testing.assert_close(instance, t([[0.6, 0.24, 0.16]]))
    # Aggregation: class 0 gets 0.5, class 1 gets 0.3 + 0.2; 0.9 * (0.6, 0.4) + 0.1 * (0.5, 0.5)
    torch.testing.assert_close(classes, t([[0.59, 0.41]]))
    _, unsmoothed = propagate(probs, similarity, labels, alpha=1.0)
    torch.testing.assert_close(unsmoothed, probs)


def test_simmatch_bank_update_momentum_normalised_last_repeat_wins():
    state = SimMatchState(num_features=2, num_classes=2, num_labeled=3, proj_size=2, heads=1, da_window=4)
    state.bank.copy_(t([[1, 0], [0, 1], [1, 0]]))
    state.update_bank(t([[0, 1], [0, 1], [1, 0]]), torch.tensor([1, 1, 0]), torch.tensor([2, 0, 2]), 0.7)
    norm = math.hypot(0.7, 0.3)
    torch.testing.assert_close(state.bank, t([[0.7 / norm, 0.3 / norm], [0, 1], [1, 0]]))
    assert state.bank_labels.tolist() == [1, 0, 0]       # entry 2: its last occurrence's label 0
    assert torch.allclose(state.p_model_history, torch.zeros(4, 2))   # USB's queue starts at zeros


# --- reference settings, pinned to USB's files -----------------------------------------------------------------

# (mu, lr, weight_decay) from config/classic_cv/<alg>/<alg>_cifar10_40_0.yaml (uratio, lr, weight_decay) and the
# cifar100_400_0 file's weight_decay; identical for all six.
USB_LOOP = {"cifar10": {"mu": 7, "lr": 0.03, "weight_decay": 0.0005},
            "cifar100": {"mu": 7, "lr": 0.03, "weight_decay": 0.001}}
USB_HYPERPARAMETERS = {
    "flexmatch": {"threshold": 0.95, "lambda_u": 1.0, "warmup": True, "mapping": "convex"},
    "freematch": {"ema_p": 0.999, "lambda_u": 1.0, "lambda_f": 0.001, "quantile": False, "clip": False},
    "softmatch": {"ema_p": 0.999, "n_sigma": 2.0, "lambda_u": 1.0, "dist_align": True, "da_target": "uniform"},
    "adamatch": {"threshold": 0.95, "lambda_u": 1.0, "ema_p": 0.999, "weight_warmup": "none"},
    "dash": {"gamma": 1.27, "C": 1.0001, "rho_min": 0.05, "temperature": 0.5, "lambda_u": 1.0,
             "warmup": 2048 / 1048576, "decay_every": 10 * (1048576 // 1024) / 1048576},
    "simmatch": {"temperature": 0.1, "threshold": 0.95, "alpha": 0.9, "lambda_u": 1.0, "lambda_in": 1.0,
                 "proj_size": 128, "heads": 3, "da_window": 32, "bank_momentum": 0.7,
                 "warmup": (1048576 // 1024) / 1048576},
}


@pytest.mark.parametrize("name", POST_FIXMATCH)
def test_defaults_are_usb_classic_cv_settings(name):
    assert hyperparameters(build_algorithm(name)) == USB_HYPERPARAMETERS[name]
    for family, expected in USB_LOOP.items():
        assert loop_settings(name, family) == expected, family


# --- through the training loop ----------------------------------------------------------------------------------


def smoke(tmp_path, **changes) -> RunConfig:
    base = dict(dataset="digits", labels=20, profile="smoke", steps=6, eval_every=2, smooth="tma",
                results_dir=str(tmp_path), device="cpu")
    return RunConfig(**{**base, **changes})


@pytest.mark.parametrize("name", POST_FIXMATCH)
def test_resume_equals_uninterrupted_with_the_algorithm_state(tmp_path, name):
    _, straight = train(smoke(tmp_path / "a", algorithm=name), progress=False)
    record, stopped = train(smoke(tmp_path / "b", algorithm=name), stop_at=3, progress=False)
    assert record["status"] == "interrupted"
    record, resumed = train(smoke(tmp_path / "b", algorithm=name), resume=True, progress=False)
    assert record["status"] == "finished" and resumed == stopped
    assert metric_rows(resumed) == metric_rows(straight)
    a, b = (load_checkpoint(d / "checkpoint.pt")["algorithm_module"] for d in (straight, resumed))
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_batches_carry_the_split_positions_and_the_bank_learns_the_labels(tmp_path):
    from ssl_bench.run.loop import next_batch, training_step

    run = build_training(smoke(tmp_path, algorithm="simmatch", steps=8))
    drawn: dict[str, list[torch.Tensor]] = {"labeled": [], "unlabeled": []}
    for name in drawn:   # record the training-set indices each stream hands out
        stream = getattr(run.streams, name)
        stream.next = (lambda nxt, log: lambda n: log.append(nxt(n)) or log[-1])(stream.next, drawn[name])
    labeled, unlabeled = torch.as_tensor(run.split.labeled), torch.as_tensor(run.split.unlabeled)
    for step in range(8):        # 8 steps x 8 labelled images: every one of the 20 is drawn
        batch = next_batch(run)
        assert torch.equal(labeled[batch.x_index], drawn["labeled"][step])
        assert torch.equal(unlabeled[batch.u_index], drawn["unlabeled"][step])
        training_step(run, batch)
    # The bank holds, at each labelled position, the label of that image.
    assert torch.equal(run.algorithm_module.bank_labels, run.y_train[labeled])


# --- USB's published numbers ------------------------------------------------------------------------------------


def test_usb_table_turns_error_rates_into_accuracy_and_names_its_source():
    from ssl_bench.report.paper_usb import load_usb_table, usb_columns, usb_number

    table = load_usb_table()
    assert table["source"]["file"] == "results/classic_cv.csv" and len(table["source"]["file_commit"]) == 40
    assert "WRN-28-2" in table["note"] and table["protocol"]["model"]["cifar100"] == "wrn_28_2"
    assert usb_columns("cifar10") == [40, 250, 4000] and usb_columns("cifar100") == [400, 2500, 10000]
    assert usb_columns("digits") == []
    # classic_cv.csv: flexmatch cifar10_40 "5.21±0.36", freematch cifar100_400 "49.24±2.16", dash cifar10_40
    # "15.01±3.7".
    assert usb_number("flexmatch", "cifar10", 40) == pytest.approx((100 - 5.21, 0.36))
    assert usb_number("freematch", "cifar100", 400) == pytest.approx((100 - 49.24, 2.16))
    assert usb_number("dash", "cifar10", 40) == pytest.approx((100 - 15.01, 3.7))
    assert usb_number("flexmatch", "cifar10", 20) is None and usb_number("mixmatch", "cifar10", 40) is None
    for row in table["rows"]:
        for family in ("cifar10", "cifar100"):
            for cell in row[family].values():
                assert cell["accuracy"] == pytest.approx(100 - cell["error"]) and cell["std"] == cell["error_std"]
    assert set(POST_FIXMATCH) <= {row["algorithm"] for row in table["rows"]}
