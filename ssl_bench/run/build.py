"""Building a training from its settings: the teachers' plan, the data, student, teachers, optimizer, streams.

``plan_teachers`` is the one place that turns settings into the list of teachers a training serves; every caller
(the command line, sweeps, resume, the benchmarks) goes through it. ``build_training`` then builds everything a
training holds (``ssl_bench.run.state.Training``), seeded, on every rank alike.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssl_bench.algorithm import Algorithm, build_algorithm, loop_settings, set_requires_grad, setup_algorithm
from ssl_bench.config import TEACHER_AXES, TEACHER_SETTINGS, RunConfig, check_strategy, cosine_lr_factor
from ssl_bench.data import load_dataset
from ssl_bench.data.registry import family_of, split_for
from ssl_bench.errors import UserError
from ssl_bench.models import build_model, default_model
from ssl_bench.run.cuda_graphs import check_supported as check_cuda_graphs
from ssl_bench.run.ranks import SINGLE_PROCESS, Ranks
from ssl_bench.run.sampling import rank_seed
from ssl_bench.run.state import Streams, Teacher, Training
from ssl_bench.smoothing import SHARED_SETTINGS, SmoothingError, strategy_settings


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def build_optimizer(params_decay: list[Tensor], params_no_decay: list[Tensor], lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum; weight decay on conv / linear kernels only, as google-research/fixmatch
    (its L2 term sums the variables named 'kernel'), not on biases and BatchNorm affine parameters."""
    groups = [{"params": params_decay, "weight_decay": weight_decay},
              {"params": params_no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)


def _own_settings(given: dict[str, Any], declared: dict[str, Any]) -> dict[str, Any]:
    """The ``--smooth-arg`` values a strategy reads, typed and checked against its declaration (others dropped);
    a shared setting (p, m, ...) is refused: it has its own flag, so one value means one thing."""
    out = {}
    for name, value in given.items():
        if name in SHARED_SETTINGS:
            raise UserError(f"--smooth-arg {name}={value}: {name} has its own option; pass --{name} {value}")
        if name in declared:
            try:
                out[name] = declared[name].parse(name, value)
            except SmoothingError as exc:
                raise UserError(f"--smooth-arg {exc}") from None
    return out


def check_smooth_args(given: dict[str, Any], read: set[str], configs: Sequence[RunConfig]) -> None:
    """Refuse a ``--smooth-arg`` that none of ``configs``' strategies reads (a typo would otherwise be ignored);
    ``read``: the names some teacher took."""
    unread = sorted(set(given) - read)
    if unread:
        readers = sorted({n for c in configs for n in strategy_settings(check_strategy(c.smooth))
                          if n not in SHARED_SETTINGS})
        strategies = ", ".join(sorted({c.smooth for c in configs}))
        raise UserError(f"--smooth-arg {unread[0]}: no teacher's strategy ({strategies}) reads it; they read "
                        f"{readers or 'no own settings'} (shared ones have their own flag, e.g. --p, --m)")


def plan_teachers(configs: Sequence[RunConfig], *, resolve: bool = True,
                  check_args: bool = True) -> list[RunConfig]:
    """THE plan of a training's teachers: ``configs`` checked, normalised, resolved and de-duplicated.

    They must agree on every setting but the smoothing axes. A setting a strategy does not read is set to its
    default first (``tma`` with two values of ``p`` is one teacher, not two). ``resolve``: also fill in the
    profile's, the dataset family's and the algorithm reference's values, as the training will run them (no data
    is loaded); without it the settings stay as given (a sweep groups them before resolving).
    """
    defaults = RunConfig()
    unique: list[RunConfig] = []
    read: set[str] = set()
    for c in configs:
        c.validate()
        declared = strategy_settings(check_strategy(c.smooth))
        ignored = {k: getattr(defaults, k) for k in TEACHER_AXES if k != "smooth" and k not in declared}
        c = dataclasses.replace(c, **ignored, smooth_args=_own_settings(c.smooth_args, declared))
        read |= set(c.smooth_args)
        if c not in unique:
            unique.append(c)
    if check_args:   # a sweep plans one teacher at a time and checks its whole grid (run.sweep)
        check_smooth_args(configs[0].smooth_args, read, configs)
    first = unique[0].training_identity()
    for c in unique[1:]:
        diff = sorted(k for k, v in c.training_identity().items() if first.get(k) != v)
        if diff:
            raise UserError(f"teachers of one training must share every setting but {list(TEACHER_SETTINGS)}; "
                            f"these differ: {diff}. Run them as separate trainings (or use `sweep`).")
    return _resolve(unique)[1] if resolve else unique


def _resolve(configs: Sequence[RunConfig]) -> tuple[Algorithm, list[RunConfig]]:
    """The built algorithm and the resolved, de-duplicated teacher configurations."""
    c = configs[0]
    family = family_of(c.dataset, c.data_root)   # the family the data set declares (ssl_bench.data.registry)
    algorithm = build_algorithm(c.algorithm, c.alg_args, family)
    if len(configs) > 1 and algorithm.targets_from == "teacher":
        raise UserError(f"--alg {c.algorithm} takes its targets from the teacher, so each smoothing variant "
                         "trains a different student and cannot share one training: run one --smooth/--p/--m at a "
                         "time (`ssl-bench sweep` plans separate trainings for it)")
    settings = loop_settings(algorithm, family)
    # the registered name, not the path it was found by: resume, records and folders match either way
    resolved = [dataclasses.replace(x.resolved(family, default_model(family), settings), algorithm=algorithm.name)
                for x in configs]
    for x in resolved:   # the algorithm's reference values (mu, lr, weight decay) meet the same bounds as flags
        try:
            x.validate()
        except UserError as exc:
            raise UserError(f"--alg {c.algorithm}: its reference settings give {exc}; fix the algorithm's "
                            "reference (or pass the option on the command line)") from None
    # the same teacher twice (e.g. --m left to the profile and given as the profile's value) is one teacher
    unique: dict[str, RunConfig] = {}
    for x in resolved:
        unique.setdefault(x.teacher_key(), x)
    return algorithm, list(unique.values())


def build_training(configs: RunConfig | Sequence[RunConfig], ranks: Ranks = SINGLE_PROCESS,
                   sync_bn: bool = False) -> Training:
    """Resolve the settings and build data, split, student, teachers, optimizer and streams, seeded.

    ``configs``: one run, or several smoothing variants of one training (see the module docstring).
    """
    variants = plan_teachers([configs] if isinstance(configs, RunConfig) else list(configs), resolve=False)
    # The algorithm first (cheap checks of its name and hyper-parameters), then the data.
    algorithm, variants = _resolve(variants)
    c = variants[0]
    dataset = load_dataset(c.dataset, root=c.data_root, download=c.download)
    if dataset.family != family_of(c.dataset, c.data_root):  # the settings above were resolved for that family
        raise RuntimeError(f"--dataset {c.dataset}: loaded as family {dataset.family!r} but its settings were "
                           f"resolved for {family_of(c.dataset, c.data_root)!r}; a bug in ssl_bench/data/registry.py")
    split = split_for(dataset, c.labels, c.split_seed)  # the reference's draw for this data set (registry)
    device = ranks.device or resolve_device(c.device)
    ranks.per_rank(c.batch_size)
    check_cuda_graphs(c, device, ranks.enabled)   # --cuda-graphs where it cannot run: one line, before any work

    # Model initialisation is the only draw from torch's global generator; seeded here, then never used again.
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
        torch.manual_seed(c.seed)
        student = build_model(c.model, dataset.num_classes)
        num_extra = 0 if dataset.x_unlabeled is None else len(dataset.x_unlabeled)
        algorithm_module = setup_algorithm(algorithm, student, dataset.num_classes, num_labeled=len(split.labeled),
                                           num_unlabeled=len(split.unlabeled) + num_extra)
    if sync_bn:
        if device.type != "cuda":
            raise UserError(f"--sync-bn: torch's SyncBatchNorm runs on GPUs only and this run is on {device}; drop "
                             "--sync-bn (the ranks' running statistics are then averaged after every step)")
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
    student = student.to(device)
    if c.channels_last:
        student = student.to(memory_format=torch.channels_last)
    if algorithm_module is not None:
        algorithm_module.to(device)

    teachers = []
    for v in variants:
        # Each teacher starts as an exact copy of the student (the official SE code sends its first copy
        # through the random gate, which leaves most teacher tensors at their random initialisation).
        model = copy.deepcopy(student)
        set_requires_grad(model, False)
        smoother = v.smoothing().build(generator=torch.Generator(device).manual_seed(rank_seed(v.seed, "smoother")))
        teachers.append(Teacher(v, model, smoother))

    trainable = list(student.parameters()) + (list(algorithm_module.parameters()) if algorithm_module else [])
    optimizer = build_optimizer([p for p in trainable if p.dim() > 1], [p for p in trainable if p.dim() <= 1],
                                c.lr, c.momentum, c.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: cosine_lr_factor(k, c.steps))

    def to_nchw(images: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)

    def unlabeled_pool(train: np.ndarray, extra: np.ndarray) -> Tensor:
        # One host buffer filled in chunks from the (memory-mapped) extra images: the 2.8 GB STL-10 set is
        # held once on the host, never as a second transposed or concatenated copy.
        pool = torch.empty((len(train) + len(extra), train.shape[3], *train.shape[1:3]), dtype=torch.uint8)
        for start in range(0, len(train) + len(extra), 4096):
            stop = min(start + 4096, len(train) + len(extra))
            parts = [a for a in (train[start:stop], extra[max(start - len(train), 0):max(stop - len(train), 0)])
                     if len(a)]
            pool[start:stop] = torch.from_numpy(np.concatenate(parts).transpose(0, 3, 1, 2))
        return pool.to(device)

    extra = dataset.x_unlabeled   # STL-10's unlabelled images beyond the training set, else None
    training = Training(
        config=c, dataset=dataset, split=split, algorithm=algorithm, algorithm_module=algorithm_module,
        student=student, teachers=teachers, optimizer=optimizer, scheduler=scheduler,
        streams=Streams.seeded(split, c.seed, device, ranks.rank, extra_unlabeled=0 if extra is None else len(extra)),
        ranks=ranks, device=device,
        x_train=to_nchw(dataset.x_train), y_train=torch.from_numpy(dataset.y_train).to(device),
        x_test=to_nchw(dataset.x_test), y_test=torch.from_numpy(dataset.y_test).to(device),
        # torch.compile wraps the same parameters: smoothers and checkpoints see the plain module.
        train_model=torch.compile(student) if c.compile else student,
        x_unlabeled_pool=None if extra is None else unlabeled_pool(dataset.x_train, extra),
        positions=(_positions(split.labeled, len(dataset.y_train), 0, device),
                   _positions(split.unlabeled, len(dataset.y_train), num_extra, device)))
    ranks.broadcast_(_states(training))   # every rank starts from rank 0's weights
    return training


def _positions(indices: np.ndarray, num_train: int, num_extra: int, device: torch.device) -> Tensor:
    """Image index -> position in ``indices`` (-1 elsewhere); the ``num_extra`` images after the training set
    (STL-10's unlabelled ones) come after ``indices``, as the unlabelled stream numbers them."""
    position = torch.full((num_train + num_extra,), -1, dtype=torch.long)
    position[torch.as_tensor(np.asarray(indices), dtype=torch.long)] = torch.arange(len(indices))
    position[num_train:] = len(indices) + torch.arange(num_extra)
    return position.to(device)


def check_ranks_agree(training: Training) -> None:
    """Fail loudly (on every rank) unless every rank holds the same student, teachers and algorithm module."""
    named = {f"student.{k}": v for k, v in training.student.state_dict().items()}
    for t in training.teachers:
        named.update({f"teacher[{t.key}].{k}": v for k, v in t.model.state_dict().items()})
    if training.algorithm_module is not None:
        named.update({f"algorithm_module.{k}": v for k, v in training.algorithm_module.state_dict().items()})
    found = training.ranks.first_difference(named)
    if found is not None:
        raise RuntimeError(f"data-parallel ranks diverged by step {training.step}: rank {found[0]} differs from "
                           f"rank 0, first in {found[1]}. Does the algorithm give some parameters a gradient on some "
                           "ranks only (data-dependent branches)? Every rank must produce gradients for the same "
                           "parameters.")


def _states(training: Training) -> list[Tensor]:
    modules = [training.student, *(t.model for t in training.teachers), training.algorithm_module]
    return [t for m in modules if m is not None for t in m.state_dict().values()]



def teacher_grid(config: RunConfig, axes: dict[str, list[Any]]) -> list[RunConfig]:
    """The cross product of the smoothing ``axes`` (lists of values) over ``config``: one config per teacher
    (checked and de-duplicated by ``plan_teachers``, not yet resolved)."""
    names = [a for a in TEACHER_AXES if a in axes]
    return plan_teachers([dataclasses.replace(config, **dict(zip(names, values, strict=True)))
                             for values in itertools.product(*(axes[a] for a in names))] or [config], resolve=False)
