"""Run configuration: the budget profiles, and the one table of run settings.

``RunConfig`` *is* the field table: each field declares, beside its default, its command-line flag, its
help, its group and whether it **identifies** a run (changes its numbers: ``--resume`` matches on those
only). The CLI parser, ``config_from_args``, the sweep's per-job arguments and resume matching are all
derived from it, so adding a run setting is one field here plus its use.

A profile names a compute budget honestly. Only ``full`` is the paper's protocol; every other profile is
scaled down and its numbers are not comparable with published ones (the record says which profile produced
each number). Profiles scale steps, batch, model and evaluation cadence; never an algorithm's own settings
(its unlabelled ratio, learning rate, weight decay: those live in its file, see ``ssl_bench.algorithm``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ssl_bench.augment import STRONG_POLICIES
from ssl_bench.errors import UserError
from ssl_bench.records import DEFAULT_RESULTS_DIR
from ssl_bench.run.evaluate import CORRUPTION_CHOICES
from ssl_bench.smoothing import (
    BUFFER_POLICIES,
    GRANULARITIES,
    PARAMETER_DEFAULTS,
    SCHEDULES,
    STRATEGIES,
    SmoothingError,
    SmoothingSpec,
    is_plugin_reference,
    strategy_class,
)


@dataclass(frozen=True)
class Profile:
    """A training budget: steps, labelled batch, evaluation cadence, (optionally) a model and the EMA momentum."""

    name: str
    steps: int
    batch_size: int          # labelled images per step (the unlabelled batch is the algorithm's ratio times this)
    eval_every: int          # steps between evaluations
    model: str | None        # None: the dataset's default (WRN-28-2 for CIFAR-10, WRN-28-8 for CIFAR-100)
    description: str
    m: float = PARAMETER_DEFAULTS["m"]   # TMA/STS momentum; FixMatch's 0.999 averages over ~1000 steps


PROFILES: dict[str, Profile] = {
    # The paper's protocol (Spatial Ensemble paper Sec. 4.1, following FixMatch): 2^20 steps of 64 labelled
    # images. google-research/fixmatch evaluates every 2^16 training images (--report_kimg=64) = 1024 steps of 64.
    "full": Profile("full", 2**20, 64, 1024, None,
                    "the paper's protocol: 2^20 steps, batch 64, WRN-28-2/8; GPU-days in common implementations"),
    # 2^15 steps at the paper's batch and model. A target of about a GPU hour, not a measurement
    # (USB issue #177 reports ~20 h per 2^20-step run: 2^15 steps ~ 37 min); see benchmarks/gpu_report.py.
    "short": Profile("short", 2**15, 64, 512, None,
                     "scaled: 2^15 steps (1/32 of the protocol) at the paper's batch and model; about a GPU hour"),
    # Where SSL is visible on a 2-core CPU (issue 16): the embedded digits (real scanned digits, no download),
    # 20 labels, a 95k-weight CNN, 2048 steps of 16 labelled images. Measured in results/LEADERBOARD.md:
    # FixMatch beats the supervised baseline by more than the seed noise. m = 0.99: 0.999 would average over
    # about half the run and leave the teacher near its initialisation (measured on the old cpu profile).
    "cpu": Profile("cpu", 2048, 16, 32, "small",
                   "scaled: 2048 steps, batch 16, a 95k-weight CNN, m=0.99; minutes on a CPU (use --dataset digits)",
                   m=0.99),
    # Seconds, for tests: checks that everything runs, measures nothing.
    "smoke": Profile("smoke", 8, 8, 4, "tiny", "seconds: 8 steps of a tiny CNN, for tests; measures nothing"),
}

# SGD with Nesterov momentum 0.9 for every algorithm: google-research/fixmatch, every algorithm's
# `tf.train.MomentumOptimizer(lr, 0.9, use_nesterov=True)` (fixmatch.py, mixmatch.py, uda.py, ...).
DEFAULT_MOMENTUM = 0.9


def cosine_lr_factor(step: int, total_steps: int) -> float:
    """FixMatch's cosine decay: lr(k) = lr0 * cos(7 pi k / (16 K)) (google-research/fixmatch fixmatch.py:
    ``lr *= tf.cos(lrate * (7 * np.pi) / (2 * 8))`` with ``lrate = step / total``)."""
    return math.cos(7.0 * math.pi * step / (16.0 * total_steps))


# -- the field table ----------------------------------------------------------------------------------------------

GROUPS = ("experiment", "teacher", "budget", "system")
# Stated maxima of the sizes a user or a file can set, checked before anything is allocated (one line instead of
# an allocation error or an hour of silence). Each is far above what the reference uses:
MAX_LABELS = 2**24        # above every training set ssl-bench reads (SVHN + extra: 604,388 images)
MAX_STEPS = 2**31         # the paper's protocol is 2^20 steps
MAX_BATCH = 2**16         # images per forward pass; the reference's labelled batch is 64
MAX_MU = 2**10            # unlabelled images per labelled one; the reference's is 7 (FixMatch --uratio)
MAX_LR = 10.0             # the references' learning rates are 0.002 to 0.03
MAX_WEIGHT_DECAY = 1.0    # the references' weight decays are 5e-4 to 1e-3 (x lr)
# The smoothing settings: a run may list several values of each (comma lists); their cross product is the set
# of teachers of one training (ssl_bench.run.build). Every other setting has one value per training.
TEACHER_AXES = ("smooth", "p", "m", "granularity", "buffers", "schedule")
# Everything that may differ between the teachers of one training: the axes and each strategy's own settings
# (``--smooth-arg``: swa's start and every, a plug-in's), which build.plan_teachers gives each teacher whose
# strategy reads them.
TEACHER_SETTINGS = (*TEACHER_AXES, "smooth_args")


def setting(default: Any = None, *, help: str, group: str, identifies: bool = True, flag: str | None = None,
            choices: tuple[Any, ...] | None = None, minimum: float | None = None, maximum: float | None = None,
            factory: Any = None) -> Any:
    """One run setting: a dataclass field whose metadata the CLI, the sweep and resume matching read.

    ``identifies``: the setting changes the run's numbers, so ``--resume`` must match it. ``minimum`` /
    ``maximum``: inclusive bounds checked by ``RunConfig.validate``.
    """
    meta = {"help": help, "group": group, "identifies": identifies, "flag": flag, "choices": choices,
            "minimum": minimum, "maximum": maximum}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunConfig:
    """Everything that determines a run. Saved in ``config.json`` beside every result.

    ``None`` means "the profile's / the algorithm's / the dataset's default"; ``resolved`` fills them in,
    so the saved config is complete.
    """

    algorithm: str = setting("fixmatch", flag="--alg", group="experiment",
                             help="the name an algorithm registers (built-in, or any file in ./algorithms), or "
                                  "path/to/my_alg.py")
    alg_args: dict[str, str] = setting(factory=dict, flag="--alg-arg", group="experiment",
                                       help="override one of the algorithm's hyper-parameters, KEY=VALUE (repeatable)")
    dataset: str = setting("cifar10", group="experiment",
                           help="cifar10, cifar100, svhn, svhn_extra, stl10 (downloaded), cifar10_subset, digits "
                                "(embedded), NAME (DATA_ROOT/NAME.npz), path/to/data.npz, or imagefolder:PATH[@SIZE] "
                                "(PATH/train/<class>/*.png|jpg, PATH/test/<class>/, optional PATH/unlabeled/; "
                                "images resized to SIZE px, 32 if omitted)")
    labels: int = setting(40, group="experiment", minimum=1, maximum=MAX_LABELS,
                          help="label budget N (N / classes per class)")
    seed: int = setting(0, group="experiment", minimum=0, maximum=2**32 - 1,
                        help="seed of the run (model init, batches, augmentation, masks)")
    split_seed: int | None = setting(None, group="experiment", minimum=0, maximum=2**32 - 1,
                                     help="seed of the label split (default: --seed)")
    profile: str = setting("full", group="experiment", choices=tuple(PROFILES),
                           help="budget: " + "; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()))
    model: str | None = setting(None, group="experiment",
                                help="wrn28_2, wrn28_8, wrn<depth>_<width>, small, tiny or timm:<name> "
                                     "(default: the profile's, else the dataset's)")
    strong_augment: str = setting("ramc", group="experiment", choices=STRONG_POLICIES,
                                  help="strong augmentation: ramc = google-research/fixmatch's CIFAR RandAugment "
                                       "pool; table12 = the FixMatch paper's Table 12 ranges")

    # The reference's teacher: every Table 6 baseline was trained and evaluated with the EMA teacher
    # (google-research/fixmatch mixmatch.py, uda.py, mean_teacher.py, ...: flag ema=0.999), so a plain run is
    # the reference run; the paper's STS is one --smooth sts away.
    # choices: the built-ins; a plug-in (a .py path or ./smoothers/<name>.py) is accepted too (validate)
    smooth: str = setting("tma", group="teacher", choices=STRATEGIES,
                          help="teacher smoothing strategy, or your own: path/to/my_smoother.py or a file in "
                               "./smoothers; a comma list trains one student for several teachers")
    smooth_args: dict[str, Any] = setting(factory=dict, flag="--smooth-arg", group="teacher",
                                          help="a strategy's own setting, name=value (repeatable), e.g. swa's "
                                               "start=0.75 or every=10; given to every teacher whose strategy "
                                               "reads it")
    p: float = setting(PARAMETER_DEFAULTS["p"], group="teacher", minimum=0.0, maximum=1.0,
                       help="SE/STS preserving probability (paper Sec. 4.1: 0.5)")
    m: float | None = setting(None, group="teacher", minimum=0.0, maximum=1.0,
                              help=f"TMA/STS momentum (default: the profile's; FixMatch's {PARAMETER_DEFAULTS['m']})")
    granularity: str = setting(PARAMETER_DEFAULTS["granularity"], group="teacher", choices=GRANULARITIES,
                               help="SE/STS fragment: layer, channel or neuron")
    buffers: str = setting(PARAMETER_DEFAULTS["buffers"], group="teacher", choices=BUFFER_POLICIES,
                           help="teacher BatchNorm statistics: copied from the student or averaged (EMAN)")
    schedule: str = setting(PARAMETER_DEFAULTS["schedule"], group="teacher", choices=SCHEDULES,
                            help="TMA/STS momentum over training: constant m, cosine (BYOL: m_t -> 1), warmup "
                                 "(min(m, (1+t)/(10+t)))")

    steps: int | None = setting(None, group="budget", minimum=1, maximum=MAX_STEPS,
                                help="training steps (default: the profile's)")
    eval_every: int | None = setting(None, group="budget", minimum=1, maximum=MAX_STEPS,
                                     help="steps between evaluations (default: the profile's)")
    batch_size: int | None = setting(None, group="budget", minimum=1, maximum=MAX_BATCH,
                                     help="labelled images per step (default: the profile's)")
    mu: int | None = setting(None, group="budget", minimum=1, maximum=MAX_MU,
                             help="unlabelled images per labelled image (default: the algorithm's reference)")
    lr: float | None = setting(None, group="budget", minimum=0.0, maximum=MAX_LR,
                               help="initial learning rate, cosine decay (default: the algorithm's reference)")
    momentum: float = setting(DEFAULT_MOMENTUM, group="budget", minimum=0.0, maximum=1.0,
                              help="SGD Nesterov momentum")
    weight_decay: float | None = setting(None, group="budget", minimum=0.0, maximum=MAX_WEIGHT_DECAY,
                                         help="L2 on kernels (default: the algorithm's reference for the dataset)")

    device: str = setting("auto", group="system", identifies=False, help="auto, cpu, cuda or cuda:N")
    amp: bool = setting(False, group="system", help="bf16 autocast (CUDA)")
    channels_last: bool = setting(False, group="system", help="channels_last memory format")
    compile: bool = setting(False, group="system", help="torch.compile the student")
    # Not identifying, like --device: the numbers move by float round-off only (fused SGD, a float32 learning
    # rate); recorded in config.json. Never run on a GPU yet: ssl_bench/run/cuda_graphs.py.
    cuda_graphs: bool = setting(False, group="system", identifies=False,
                                help="after 3 eager steps, replay the whole training step as one captured CUDA graph "
                                     "(CUDA; fixmatch, supervised)")
    data_root: str | None = setting(None, group="system", identifies=False,
                                    help="data folder (default: $SSL_BENCH_DATA, else ./datasets in a checkout, "
                                         "else ~/.cache/ssl-bench)")
    download: bool = setting(True, group="system", identifies=False,
                             help="download a missing CIFAR into the data root (--no-download forbids it)")
    results_dir: str = setting(DEFAULT_RESULTS_DIR, group="system", identifies=False,
                               help="where run directories are created")
    eval_batch_size: int = setting(1024, group="system", identifies=False, minimum=1, maximum=MAX_BATCH,
                                   help="images per evaluation forward pass")
    corruptions: str = setting("auto", group="system", identifies=False, choices=CORRUPTION_CHOICES,
                               help="the corrupted test set every teacher is judged on once, at the end: the "
                                    "official CIFAR-10-C/-100-C files if the data root has them (auto) or asked "
                                    "for (official, downloaded), synthetic-c (5 torch-made corruptions x 5 "
                                    "severities; not CIFAR-10-C numbers), or none")
    log_every: int = setting(50, group="system", identifies=False, minimum=1, maximum=MAX_STEPS,
                             help="steps between progress-bar updates")
    tensorboard: bool = setting(False, group="system", identifies=False,
                                help="also write TensorBoard event files beside metrics.csv (pip install "
                                     "'ssl-bench[tensorboard]')")

    def validate(self) -> None:
        """Fail at the boundary with one line that names the value, the valid choices or range, and the flag."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None:
                continue
            kind = {"int": int, "float": float, "bool": bool, "str": str}.get(str(f.type).split("|")[0].strip())
            if kind is not None and (isinstance(value, bool) != (kind is bool) or not isinstance(
                    value, (int, float) if kind is float else kind)):
                example = getattr(RunConfig(), f.name) or meta["minimum"]
                raise UserError(f"{flag_of(f)} {value!r} ({type(value).__name__}) is not a"
                                f"{'n' if kind is int else ''} {kind.__name__}; pass a value such as {example}")
            if f.name == "smooth" and value not in meta["choices"] and is_plugin_reference(value):
                check_strategy(value)   # a plug-in the user named: imported here, errors name its file
                continue
            if meta["choices"] is not None and value not in meta["choices"]:
                raise UserError(f"{flag_of(f)} {value!r} is not valid; choose from {list(meta['choices'])}")
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{flag_of(f)} {value} is not a finite number; pass a number such as "
                                f"{getattr(RunConfig(), f.name) or meta['minimum']}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                low, high = meta["minimum"], meta["maximum"]
                if (low is not None and value < low) or (high is not None and value > high):
                    where = (f"in [{low}, {high}]" if low is not None and high is not None
                             else f">= {low}" if low is not None else f"<= {high}")
                    raise UserError(f"{flag_of(f)} {value} is out of range; expected a value {where}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise UserError(f"--device {self.device!r}: expected auto, cpu, cuda or cuda:N (N a GPU index)")
        if self.model is not None:   # the name only: nothing is built, timm's presence is checked at build
            from ssl_bench.models import check_model_name

            check_model_name(self.model)
        if not self.results_dir.strip():
            raise UserError(f"--results-dir is empty; pass the folder run directories go to (default: "
                            f"{DEFAULT_RESULTS_DIR})")

    def resolved(self, dataset_family: str | None, default_model: str, loop_settings: dict[str, Any]) -> RunConfig:
        """Fill every ``None`` from the profile, the dataset and the algorithm's reference ``loop_settings``
        (``ssl_bench.algorithm.loop_settings``: mu, lr, weight_decay), so the saved config is complete."""
        prof = PROFILES[self.profile]
        return dataclasses.replace(
            self,
            split_seed=self.seed if self.split_seed is None else self.split_seed,
            m=prof.m if self.m is None else self.m,
            steps=self.steps or prof.steps,
            eval_every=self.eval_every or prof.eval_every,
            batch_size=self.batch_size or prof.batch_size,
            mu=self.mu or loop_settings["mu"],
            lr=loop_settings["lr"] if self.lr is None else self.lr,
            weight_decay=loop_settings["weight_decay"] if self.weight_decay is None else self.weight_decay,
            model=self.model or prof.model or default_model,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"config has unknown keys {unknown}; this ssl-bench knows {sorted(known)}")
        return cls(**data)

    def identity(self) -> dict[str, Any]:
        """The settings that determine the numbers (what ``--resume`` matches on)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["identifies"]}

    def teacher_key(self) -> str:
        """This variant's teacher within a shared training, from the settings its strategy reads:
        ``none``, ``tma-m0.999-copy``, ``sts-layer-p0.5-m0.999-copy``."""
        return self.smoothing().key

    def smoothing(self) -> SmoothingSpec:
        """This teacher's smoothing as one value (strategy + the settings it reads): key, label, suffix.
        An m left to the profile (None before ``resolved``) is the profile's."""
        m = PROFILES[self.profile].m if self.m is None and self.profile in PROFILES else self.m
        return SmoothingSpec.of(self.smooth, {**self.to_dict(), **self.smooth_args, "m": m})

    def training_identity(self) -> dict[str, Any]:
        """What variants sharing one training must agree on: every identifying setting but the teachers' own."""
        return {k: v for k, v in self.identity().items() if k not in TEACHER_SETTINGS}


def check_strategy(name: str) -> type:
    """The strategy class of ``--smooth name`` (a plug-in is imported), or one line naming it and the fix."""
    try:
        return strategy_class(name)
    except SmoothingError as exc:
        text = str(exc)
        raise UserError(text if text.startswith("--smooth") else f"--smooth {name!r}: {text}") from exc.__cause__


def flag_of(f: dataclasses.Field) -> str:
    """A field's command-line flag (``--batch-size`` for ``batch_size`` unless the table names another)."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def run_settings() -> tuple[dataclasses.Field, ...]:
    """The field table, in declaration order."""
    return dataclasses.fields(RunConfig)


def config_to_argv(config: RunConfig) -> list[str]:
    """The ``run`` options that reproduce ``config`` (only settings that differ from the defaults are written)."""
    defaults = RunConfig()
    argv: list[str] = []
    for f in run_settings():
        value = getattr(config, f.name)
        if value == getattr(defaults, f.name):
            continue
        if f.name in ("alg_args", "smooth_args"):
            argv += [a for k, v in value.items() for a in (flag_of(f), f"{k}={v}")]
        elif isinstance(value, bool):
            argv.append(flag_of(f) if value else "--no-" + flag_of(f)[2:])
        elif value is not None:
            argv += [flag_of(f), str(value)]
    return argv
