"""Reference fidelity (issue 20): the EMA teacher by default, ReMixMatch's strongly augmented labelled images,
MixMatch / ReMixMatch's interleaved BatchNorm groups, ReMixMatch's labelled-distribution EMA, the `last`
statistic beside the paper's own FixMatch rows."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from ssl_bench_algorithms.remixmatch import P_DATA_DECAY, ReMixMatchState
from torch import nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import build_algorithm, labeled_view_of
from ssl_bench.augment import strong_augment, weak_augment
from ssl_bench.cli import main
from ssl_bench.config import PROFILES, RunConfig
from ssl_bench.report import leaderboard as lb
from ssl_bench.report import render
from ssl_bench.report.paper import paper_statistic
from ssl_bench.run.build import build_training
from ssl_bench.run.loop import next_batch
from ssl_bench.run.sampling import to_device


def smoke(tmp_path, **changes) -> RunConfig:
    base = dict(algorithm="fixmatch", dataset="digits", labels=20, profile="smoke",
                results_dir=str(tmp_path / "results"), device="cpu")
    return RunConfig(**{**base, **changes})


# ------------------------------------------------------------------ the reference teacher by default

def test_a_plain_run_trains_the_reference_ema_teacher(capsys):
    assert RunConfig().smooth == "tma"
    assert main(["--alg", "mixmatch", "--labels", "250", "--dataset", "cifar10", "--profile", "full",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "teacher: tma-m0.999-copy" in out and "bn_groups=interleaved" in out
    assert main(["--alg", "remixmatch", "--labels", "250", "--dataset", "cifar10", "--profile", "full",
                 "--dry-run"]) == 0
    assert "labeled_view=strong" in capsys.readouterr().out


# ------------------------------------------------------------------ the labelled view

@pytest.mark.parametrize("algorithm, view", [("remixmatch", "strong"), ("fixmatch", "weak")])
def test_the_labelled_batch_is_the_declared_view_of_the_same_draws(tmp_path, algorithm, view):
    training = build_training(smoke(tmp_path, algorithm=algorithm))
    assert labeled_view_of(training.algorithm) == view
    saved = copy.deepcopy(training.streams.state_dict())
    batch = next_batch(training)
    training.streams.load_state_dict(saved)   # replay the same draws through the named pipeline
    s, flip = training.streams, training.dataset.hflip
    images = training.x_train[to_device(s.labeled.next(len(batch.x)), training.device)]
    if view == "strong":
        expected = strong_augment(images, s.augment, flip=flip, policy=training.config.strong_augment)
    else:
        expected = weak_augment(images, s.augment, flip=flip)
    assert torch.equal(batch.x, training.prepare(expected))


def test_remixmatch_offers_the_weak_labelled_view_by_name():
    assert labeled_view_of(build_algorithm("remixmatch", {"labeled_view": "weak"}, "cifar10")) == "weak"


# ------------------------------------------------------------------ interleaved BatchNorm groups

def test_interleave_offsets_put_the_larger_slices_last():
    # libml/layers.py interleave_offsets(5, 2): groups [1, 1, 1] + 2 left over -> [1, 2, 2]
    assert SF.interleave_offsets(5, 3) == [0, 1, 3, 5]
    assert SF.interleave_offsets(64, 3) == [0, 21, 42, 64]


def test_interleave_swaps_slices_with_the_labelled_chunk_and_is_its_own_inverse():
    x, u1, u2 = torch.arange(0, 5), torch.arange(10, 15), torch.arange(20, 25)
    a, b, c = SF.interleave([x, u1, u2])   # slices [0:1], [1:3], [3:5]
    assert a.tolist() == [0, 11, 12, 23, 24]       # x keeps slice 0, takes slice 1 of u1 and slice 2 of u2
    assert b.tolist() == [10, 1, 2, 13, 14]        # u1 gives its slice 1, gets x's
    assert c.tolist() == [20, 21, 22, 3, 4]
    assert [t.tolist() for t in SF.interleave([a, b, c])] == [x.tolist(), u1.tolist(), u2.tolist()]


class _SizeRecordingBN(nn.Module):
    """BatchNorm over a flat input that remembers the batch size of every forward."""

    def __init__(self, features: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(features)
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(len(x))
        return self.bn(x)


def test_each_batchnorm_sees_one_reference_sized_sub_batch_and_only_one_updates_the_statistics():
    torch.manual_seed(0)
    batch, groups = 64, 3
    chunks = [torch.randn(batch, 4) + i for i in range(groups)]   # labelled rows, then two unlabelled views
    for keep in (0, -1):   # MixMatch keeps the first call's updates, ReMixMatch the last's
        model = _SizeRecordingBN(4)
        out = SF.interleaved_forward(model, chunks, update_bn_from=keep)
        assert model.sizes == [batch] * groups
        # outputs come back in the chunks' order: row r of chunk i was normalised within its own sub-batch
        sub_batches = SF.interleave(chunks)
        normalised = [nn.functional.batch_norm(s, None, None, training=True, eps=model.bn.eps) for s in sub_batches]
        for got, want in zip(out, SF.interleave(normalised), strict=True):
            assert torch.allclose(got, want, atol=1e-6)
        # running statistics moved by the kept sub-batch alone (momentum 0.1 from mean 0)
        kept = sub_batches[keep]
        assert torch.allclose(model.bn.running_mean, 0.1 * kept.mean(0), atol=1e-6)
        assert int(model.bn.num_batches_tracked) == 1


def test_one_batch_form_is_one_forward_over_every_row():
    model = _SizeRecordingBN(4)
    SF.mixed_batch_forward(model, torch.randn(96, 4), 32, "one_batch", update_bn_from=0)
    assert model.sizes == [96]


def test_mixmatch_and_remixmatch_run_their_mixed_batch_in_interleaved_groups(tmp_path):
    for algorithm, groups in (("mixmatch", 3), ("remixmatch", 3)):   # mu = 1: x + 2 views (ReMixMatch: weak, strong)
        training = build_training(smoke(tmp_path, algorithm=algorithm))
        batch = next_batch(training)
        sizes: list[int] = []
        first_bn = next(m for m in training.student.modules() if isinstance(m, nn.BatchNorm2d))
        hook = first_bn.register_forward_pre_hook(lambda m, args, sizes=sizes: sizes.append(len(args[0])))
        try:
            training.algorithm.loss(training.student, training.teacher, batch)
        finally:
            hook.remove()
        b = len(batch.x)
        assert sizes.count(b) >= groups, (algorithm, sizes)   # the mixed batch as `groups` sub-batches of B
        assert (1 + len(batch.u)) * b not in sizes             # never the whole mixed batch at once


# ------------------------------------------------------------------ ReMixMatch's labelled distribution

def test_labelled_distribution_is_the_references_ema_from_uniform():
    state = ReMixMatchState(num_features=8, num_classes=4, window=128)
    assert torch.allclose(state.p_labelled, torch.full((4,), 0.25))
    onehot_mean = torch.tensor([1.0, 0.0, 0.0, 0.0])
    state.record(torch.full((4,), 0.25), onehot_mean)
    # PData.update: p * 0.999 + entry * 0.001
    want = torch.tensor([0.25 * P_DATA_DECAY + (1 - P_DATA_DECAY), 0.25 * P_DATA_DECAY, 0.25 * P_DATA_DECAY,
                         0.25 * P_DATA_DECAY])
    assert torch.allclose(state.p_labelled, want, atol=1e-7)
    assert P_DATA_DECAY == 0.999


# ------------------------------------------------------------------ the `last` statistic

def _record(results, run_id, *, algorithm="fixmatch", smooth="tma", median=40.0, last=45.0, seed=0, full=False):
    run_dir = results / run_id
    run_dir.mkdir(parents=True)
    prof = PROFILES["full" if full else "cpu"]
    settings = {"algorithm": algorithm, "alg_args": {}, "dataset": "cifar10" if full else "digits", "labels": 40,
                "seed": seed, "split_seed": seed, "profile": prof.name, "model": "wrn28_2" if full else "small",
                "strong_augment": "ramc", "smooth": smooth, "p": 0.5, "m": 0.999, "granularity": "layer",
                "buffers": "copy", "steps": prof.steps, "eval_every": prof.eval_every, "batch_size": prof.batch_size,
                "mu": 7, "lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4, "amp": False, "channels_last": False,
                "compile": False}
    record = {"schema": 3, "run_id": run_id, "status": "finished", "error": None, "algorithm": algorithm,
              "alg_args": {"threshold": 0.95, "lambda_u": 1.0}, "alg_overrides": {}, "targets_from": "student",
              "settings": settings, "training": None, "teacher": None,
              "dataset": settings["dataset"], "dataset_kind": "full" if full else "embedded",
              "dataset_family": "cifar10" if full else None, "dataset_fingerprint": "f", "train_size": 50000,
              "split_hash": "h", "steps_done": prof.steps, "hflip": True, "algorithm_sha256": None,
              "results": {"num_evals": 20, "teacher_median_last20": median, "teacher_best": last + 1,
                          "teacher_last": last, "student_median_last20": median, "student_best": last,
                          "student_last": last},
              "versions": {}, "device": "cpu", "commit": None, "command": "x", "started": "2026-12-01T00:00:00+00:00",
              "finished": "2026-12-01T01:00:00+00:00", "wall_seconds": 1.0, "data_parallel": []}
    (run_dir / "record.json").write_text(json.dumps(record))


def test_leaderboard_stat_last_reads_the_final_teacher(tmp_path):
    _record(tmp_path, "a", median=40.0, last=45.0)
    board = lb.build_leaderboard(tmp_path, stat="last")
    (cell,) = board.sections[0].rows[0].cells.values()
    assert cell.values == [45.0] and board.stat == "teacher_last"
    assert main(["leaderboard", "--results-dir", str(tmp_path), "--stat", "last", "--no-write"]) == 0


def test_the_papers_fixmatch_rows_are_compared_with_the_final_teacher_and_the_note_says_so(tmp_path):
    assert paper_statistic("fixmatch", "sts") == paper_statistic("fixmatch", "tma") == "teacher_last"
    assert paper_statistic("mixmatch", "tma") == "teacher_median_last20"
    _record(tmp_path, "fm", median=90.0, last=92.5, full=True)
    board = lb.build_leaderboard(tmp_path)   # the default statistic: the median of the last 20
    (cell,) = board.sections[0].rows[0].cells.values()
    assert cell.paper is not None and cell.stat == "teacher_last" and cell.values == [92.5]
    text = render.render_markdown(board)
    assert "92.5 (n=1, last) \\| 92.06" in text   # the cell's pipe escaped inside the markdown table
    assert "| FixMatch (STS) | fixmatch · sts | last |" in text and "| MixMatch | mixmatch · tma | median |" in text
