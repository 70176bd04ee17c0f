"""BatchNorm running statistics move only with the passes the reference updates them with.

google-research/fixmatch runs, of each step's BatchNorm update ops, only its ``post_ops``:

* fixmatch.py, uda.py: the one call over labelled + weak + strong images.
* mixmatch.py: the first interleaved sub-batch of the mixed batch; the label-guessing calls come before
  ``skip_ops`` and update nothing.
* cta/cta_remixmatch.py (remixmatch_no_cta.py's model): the last interleaved sub-batch of the mixed batch;
  the guess calls, the pre-mixup logits and the rotation call update nothing.
* mean_teacher.py, pi_model.py, pseudo_label.py: "Take only first call to update batch norm", the labelled
  images; Mean Teacher's EMA pass does not update anything either.

For each built-in, one loss call on a small BatchNorm network must leave exactly the running statistics that
one training-mode forward of that batch, and nothing else, gives a copy of the initial network.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench import functional as SF
from ssl_bench.algorithm import Batch, build_algorithm, setup_algorithm

NUM_CLASSES = 3
SEED = 7


class TinyBNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.num_features = 6
        self.classifier = nn.Linear(6, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def mixed_batch(batch: Batch, alpha: float) -> torch.Tensor:
    """The mixed inputs MixMatch / ReMixMatch build, re-drawn from a generator seeded as the batch's."""
    inputs = torch.cat([batch.x, *batch.u])
    lam, perm = SF.mixup_sample(len(inputs), alpha, torch.Generator().manual_seed(SEED))
    return SF.mixup(inputs, torch.zeros(len(inputs), 1), lam, perm)[0]


# The images whose statistics the reference's post_ops fold into the running statistics, per algorithm.
UPDATED_BY = {
    "fixmatch": lambda batch, alg: torch.cat([batch.x, *batch.u]),
    "uda": lambda batch, alg: torch.cat([batch.x, *batch.u]),
    "mixmatch": lambda batch, alg: SF.interleave(list(mixed_batch(batch, alg.alpha).split(len(batch.x))))[0],
    "remixmatch": lambda batch, alg: SF.interleave(list(mixed_batch(batch, alg.alpha).split(len(batch.x))))[-1],
    "mean_teacher": lambda batch, alg: batch.x,
    "pi_model": lambda batch, alg: batch.x,
    "pseudo_label": lambda batch, alg: batch.x,
    "supervised": lambda batch, alg: batch.x,
    # USB (use_cat: True): one call over labelled + weak + strong images; Dash after its warm-up (progress 1).
    **{name: (lambda batch, alg: torch.cat([batch.x, *batch.u]))
       for name in ("flexmatch", "freematch", "softmatch", "adamatch", "dash", "simmatch")},
}


def running_stats(model: nn.Module) -> dict[str, torch.Tensor]:
    return {"mean": model.bn.running_mean.clone(), "var": model.bn.running_var.clone(),
            "count": model.bn.num_batches_tracked.clone()}


@pytest.mark.parametrize("name", sorted(UPDATED_BY))
def test_one_step_updates_running_statistics_only_from_the_reference_pass(name):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)   # module initialisation only
    student = TinyBNNet().train()
    teacher = copy.deepcopy(student).requires_grad_(False)
    # Running statistics away from their initial values, so a stray update is visible.
    with torch.no_grad():
        student.bn.running_mean.normal_(generator=gen)
        teacher.bn.running_mean.normal_(generator=gen)
    initial, teacher_before = copy.deepcopy(student), running_stats(teacher)

    thresholded = name in ("fixmatch", "uda", "pseudo_label")
    algorithm = build_algorithm(name, {"threshold": "0"} if thresholded else None)
    n = 4
    setup_algorithm(algorithm, student, NUM_CLASSES, num_labeled=n, num_unlabeled=n)
    batch = Batch(x=torch.randn(n, 3, 6, 6, generator=gen),
                  y=torch.randint(0, NUM_CLASSES, (n,), generator=gen),
                  u=tuple(torch.randn(n, 3, 6, 6, generator=gen) for _ in algorithm.unlabeled_views),
                  progress=1.0, num_classes=NUM_CLASSES, generator=torch.Generator().manual_seed(SEED),
                  x_index=torch.arange(n), u_index=torch.arange(n))
    algorithm.loss(student, teacher, batch).total.backward()

    initial(UPDATED_BY[name](batch, algorithm))   # the one pass the reference keeps
    expected, got = running_stats(initial), running_stats(student)
    assert got["count"].item() == expected["count"].item(), f"{name}: BatchNorm updated by more than one pass"
    torch.testing.assert_close(got["mean"], expected["mean"])
    torch.testing.assert_close(got["var"], expected["var"])
    for key, value in running_stats(teacher).items():   # the teacher's statistics belong to the smoother
        assert torch.equal(value, teacher_before[key]), f"{name}: the loss moved the teacher's {key}"
