"""Registry-wide gradient flow: every registered algorithm, one loss on a tiny random batch.

For each algorithm in ``available_algorithms()`` (so a new file is tested the moment it is added): every
weighted term in ``Losses.terms`` is finite and sends non-zero gradient into the student on its own; nothing
reaches the teacher (its outputs carry no graph, its parameters get no ``.grad`` and stay frozen); the terms
sum to ``total``. This is what catches USB's Mean Teacher bug (microsoft/Semi-supervised-learning issue
#226: the student's logits were taken from the teacher's no-grad outputs, so the consistency term trained
nothing) -- ``test_the_check_catches_usb_mean_teacher_bug`` runs that bug through the same check.

Set-up, so that every term is active: ``progress = 1`` (ramp-ups finished; a linear ramp is exactly 0 at the
start) and every hyper-parameter whose name ends in ``threshold`` set to 0 (a random tiny network is never
95 % confident, and a fully masked term has no gradient by design). Whether targets built from the student's
own outputs are detached is pinned per algorithm in ``test_algorithm_losses.py`` (gradient against a
hand-written loss with constant targets); here the teacher side is checked for every algorithm.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_bench.algorithm import (
    Batch,
    Losses,
    available_algorithms,
    build_algorithm,
    check_losses,
    load_algorithm_class,
    set_requires_grad,
    setup_algorithm,
    teacher_forward,
)

NUM_CLASSES = 3


class TinyBNNet(nn.Module):
    """conv3x3 -> BatchNorm -> ReLU -> global mean -> linear, with the suite's model interface."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.num_features = width
        self.classifier = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


# Thresholds that keep the rows whose *loss* lies below them (Dash's rho, floored at rho_min): set high.
LOSS_THRESHOLDS = {"dash": {"rho_min": "1e9"}}


def active_overrides(name: str) -> dict[str, str]:
    """Confidence thresholds to 0 so that every unlabelled row contributes on a random network."""
    fields = dataclasses.fields(load_algorithm_class(name))
    return {**{f.name: "0" for f in fields if f.name.endswith("threshold")}, **LOSS_THRESHOLDS.get(name, {})}


def tiny_setup(algorithm, seed: int = 0):
    torch.manual_seed(seed)   # module initialisation only; the data and the algorithm's draws use generators
    gen = torch.Generator().manual_seed(seed)
    student = TinyBNNet().train()
    teacher = copy.deepcopy(student).train()
    set_requires_grad(teacher, False)
    batch_size, mu = 4, 2
    module = setup_algorithm(algorithm, student, NUM_CLASSES, num_labeled=batch_size, num_unlabeled=batch_size * mu)
    batch = Batch(
        x=torch.randn(batch_size, 3, 6, 6, generator=gen),
        y=torch.randint(0, NUM_CLASSES, (batch_size,), generator=gen),
        u=tuple(torch.randn(batch_size * mu, 3, 6, 6, generator=gen) for _ in algorithm.unlabeled_views),
        progress=1.0,
        num_classes=NUM_CLASSES,
        generator=torch.Generator().manual_seed(seed + 1),
        x_index=torch.arange(batch_size),
        u_index=torch.arange(batch_size * mu),
    )
    return student, teacher, module, batch


def terms_without_gradient(losses: Losses, student: nn.Module) -> list[str]:
    """Names of the terms whose gradient w.r.t. every student parameter is zero (or absent)."""
    params = [p for p in student.parameters() if p.requires_grad]
    dead = []
    for name, term in losses.terms.items():
        if not term.requires_grad:
            dead.append(name)
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        if all(g is None or not g.abs().sum() > 0 for g in grads):
            dead.append(name)
    return dead


def record_outputs(module: nn.Module) -> list[torch.Tensor]:
    outputs: list[torch.Tensor] = []
    module.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    return outputs


@pytest.mark.parametrize("name", available_algorithms())
def test_every_term_trains_the_student_and_nothing_reaches_the_teacher(name):
    algorithm = build_algorithm(name, active_overrides(name))
    student, teacher, module, batch = tiny_setup(algorithm)
    teacher_outputs = record_outputs(teacher)

    losses = check_losses(algorithm.loss(student, teacher, batch), algorithm)

    assert losses.terms, f"{name}: Losses.terms is empty; list each weighted term"
    for term_name, term in losses.terms.items():
        assert term.dim() == 0 and torch.isfinite(term), f"{name}: term {term_name!r} = {term}"
    torch.testing.assert_close(sum(losses.terms.values()), losses.total)
    assert terms_without_gradient(losses, student) == [], f"{name}: terms sending no gradient to the student"

    # Targets from the teacher are constants: its outputs carry no graph.
    assert all(not out.requires_grad for out in teacher_outputs)
    losses.total.backward()
    for p in teacher.parameters():
        assert p.grad is None and not p.requires_grad
    # The loop trains the algorithm's own module with the student: it must receive gradient if it has any.
    if module is not None and any(True for _ in module.parameters()):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("name", available_algorithms())
def test_the_teacher_is_consulted_exactly_when_targets_from_says_so(name):
    # targets_from decides whether a smoothing strategy changes the targets; a loss that reads the teacher
    # while declaring "student" (or the reverse) would make the declaration, and the records, wrong.
    algorithm = build_algorithm(name, active_overrides(name))
    student, teacher, _, batch = tiny_setup(algorithm)
    teacher_outputs = record_outputs(teacher)
    algorithm.loss(student, teacher, batch)
    assert bool(teacher_outputs) == (algorithm.targets_from == "teacher"), (
        f"{name}: targets_from = {algorithm.targets_from!r} but the loss called the teacher "
        f"{len(teacher_outputs)} time(s)")


@pytest.mark.parametrize("name", available_algorithms())
def test_every_declared_view_is_used_by_the_loss(name):
    # The loop augments and sends every view unlabeled_views declares: each must change the loss.
    algorithm = build_algorithm(name, active_overrides(name))
    for i in range(len(algorithm.unlabeled_views)):
        totals = []
        for replace in (False, True):
            fresh = build_algorithm(name, active_overrides(name))   # fresh state (ReMixMatch's windows)
            student, teacher, _, batch = tiny_setup(fresh)
            if replace:
                views = list(batch.u)
                views[i] = torch.randn(views[i].shape, generator=torch.Generator().manual_seed(99))
                batch.u = tuple(views)
            totals.append(fresh.loss(student, teacher, batch).total.item())
        view = algorithm.unlabeled_views[i]
        assert totals[0] != totals[1], f"{name}: view {i} ({view}) does not affect the loss"


@dataclasses.dataclass
class UsbMeanTeacher:
    """USB's Mean Teacher bug, reproduced: the 'student' logits are the teacher's no-grad outputs."""

    targets_from = "teacher"
    unlabeled_views = ("weak", "weak")

    def loss(self, student, teacher, batch: Batch) -> Losses:
        u_teacher, u_student = batch.u
        supervised = F.cross_entropy(student(batch.x), batch.y)
        logits_teacher = teacher_forward(teacher, u_teacher)
        _ = student(u_student)
        logits_student = logits_teacher   # the bug: should be the student's output just computed
        consistency = (logits_student.softmax(-1) - logits_teacher.softmax(-1)).pow(2).mean()
        return Losses(total=supervised + consistency,
                      terms={"supervised": supervised, "unsupervised": consistency})


def test_the_check_catches_usb_mean_teacher_bug():
    algorithm = UsbMeanTeacher()
    student, teacher, _, batch = tiny_setup(algorithm)
    losses = algorithm.loss(student, teacher, batch)
    assert terms_without_gradient(losses, student) == ["unsupervised"]
