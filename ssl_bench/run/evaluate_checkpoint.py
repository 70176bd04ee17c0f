"""A trained run's checkpoint, used again: ``ssl-bench evaluate RUN`` re-evaluates its student and every teacher
of its training on the test set; ``ssl-bench export-weights RUN --teacher KEY`` writes one model's plain
``state_dict``, loadable with ``ssl_bench.models.build_model(name, num_classes)`` (no ssl-bench state inside).

The training is rebuilt from the saved configurations (data, split, models, as the loop built them) and its
checkpoint restored through the loop's own ``restore``, which refuses a checkpoint of another training.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ssl_bench.errors import UserError
from ssl_bench.records import CONFIG_FILE, DEFAULT_RESULTS_DIR, RunRecord
from ssl_bench.run.build import build_training
from ssl_bench.run.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ssl_bench.run.evaluate import CORRUPTION_CHOICES, accuracy, plan_corruptions
from ssl_bench.run.loop import evaluate_corruption_set
from ssl_bench.run.rundirs import saved_run_config, training_of
from ssl_bench.run.state import Training, restore

STUDENT = "student"


def find_run_dir(spec: str | os.PathLike, results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR) -> Path:
    """A run directory from its path or its run id in ``results_dir``."""
    for candidate in (Path(spec), Path(results_dir) / str(spec)):
        if (candidate / CONFIG_FILE).is_file():
            return candidate
    raise UserError(f"run {str(spec)!r} not found: no {CONFIG_FILE} in {str(spec)!r} or "
                    f"{str(Path(results_dir) / str(spec))!r}; pass a run directory or a run id with --results-dir")


def load_trained(run_dir: Path, device: str = "auto", plugins: Sequence[str] = ()) -> Training:
    """The training ``run_dir`` belongs to, rebuilt and restored from its checkpoint (every teacher of it).

    ``plugins``: the plug-in strategy files the user names (``--smooth FILE``); a teacher whose saved config names
    another file is refused, never imported (``saved_run_config``)."""
    allowed = frozenset(str(Path(p).resolve()) for p in plugins)
    teachers = training_of(run_dir, allowed)   # key -> directory, the lead (which holds the checkpoint) first
    folder = run_dir.parent
    checkpoint = folder / next(iter(teachers.values())) / CHECKPOINT_NAME
    if not checkpoint.is_file():
        raise UserError(f"{run_dir}: its training's checkpoint {checkpoint} is missing (checkpoints are not "
                        "committed with the reference records); re-run it with `ssl-bench run --config "
                        f"{run_dir}` to get one")
    configs = [dataclasses.replace(saved_run_config(folder / name, allowed), device=device)
               for name in teachers.values()]
    training = build_training(configs)
    restore(training, load_checkpoint(checkpoint, map_location=training.device), checkpoint)
    return training


def evaluate_run(run_dir: Path, device: str = "auto", corruptions: str = "none", plugins: Sequence[str] = ()
                 ) -> tuple[dict[str, float], str | None, dict[str, float]]:
    """Top-1 test accuracy (%) of the student and of every teacher of ``run_dir``'s training, by key; with
    ``corruptions`` (a ``--corruptions`` choice) also the set's name and each model's mean top-1 on it (the same
    evaluation the loop makes at the end of training, so a run trained before it existed can be judged too)."""
    training = load_trained(run_dir, device, plugins)
    c = training.config

    def top1(model: torch.nn.Module) -> float:
        return accuracy(model, training.x_test, training.y_test, c.eval_batch_size, training.prepare)

    clean = {STUDENT: top1(training.student), **{t.key: top1(t.model) for t in training.teachers}}
    plan = plan_corruptions(corruptions, training.dataset.name, training.y_test, c.data_root, c.download)
    if plan is None:
        return clean, None, {}
    means = {key: summary["mean"] for key, (_, summary) in evaluate_corruption_set(training, plan).items()}
    return clean, plan.name, means


def model_weights(run_dir: Path, key: str | None = None, device: str = "cpu", plugins: Sequence[str] = ()
                  ) -> tuple[dict[str, torch.Tensor], str]:
    """One model of the training as a plain CPU ``state_dict`` and its model name: teacher ``key`` (default: the
    run's own teacher) or ``"student"``."""
    training = load_trained(run_dir, device, plugins)
    key = key or (RunRecord.read(run_dir).teacher if (run_dir / "record.json").is_file() else None) \
        or training.teachers[0].key
    models = {STUDENT: training.student, **{t.key: t.model for t in training.teachers}}
    if key not in models:
        raise UserError(f"--teacher {key!r}: the training of {run_dir.name} has {sorted(models)}; pass one of them")
    state = {k: v.detach().cpu().clone() for k, v in models[key].state_dict().items()}
    return state, training.config.model


# -- the commands ---------------------------------------------------------------------------------------------------

def _evaluate_main(args: argparse.Namespace) -> int:
    run_dir = find_run_dir(args.run, args.results_dir)
    scores, corruption_set, corrupted = evaluate_run(run_dir, args.device, args.corruptions, args.smooth)
    record = RunRecord.read_if_present(run_dir)
    print(f"top-1 on the test set, from {run_dir} (step {record.steps_done if record else '?'})"
          + (f"; mean top-1 on {corruption_set}:" if corruption_set else ":"))
    for key, value in scores.items():
        print(f"  {key:32} {value:6.2f}" + (f"   {corrupted[key]:6.2f}" if corruption_set else ""))
    return 0


def _export_weights_main(args: argparse.Namespace) -> int:
    run_dir = find_run_dir(args.run, args.results_dir)
    state, model = model_weights(run_dir, args.teacher, args.device, args.smooth)
    key = args.teacher or RunRecord.read(run_dir).teacher
    out = Path(args.out or f"{run_dir.name}-{key}.pt")
    torch.save(state, out)
    print(f"wrote {out}: the {key} weights ({len(state)} tensors); load with\n"
          f"  model = ssl_bench.models.build_model({model!r}, num_classes)\n"
          f"  model.load_state_dict(torch.load({str(out)!r}, weights_only=True))")
    return 0


def add_subcommands(subparsers: Any) -> None:
    """``evaluate`` and ``export-weights``."""
    for name, func, text in (("evaluate", _evaluate_main, "re-evaluate a run's student and teachers from its "
                                                         "checkpoint on the test set"),
                             ("export-weights", _export_weights_main, "write one teacher's (or the student's) "
                                                                     "plain state_dict from a run's checkpoint")):
        parser = subparsers.add_parser(name, help=text, description=text)
        parser.add_argument("run", metavar="RUN", help="a run directory, or a run id in --results-dir")
        parser.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help="folder of run directories")
        parser.add_argument("--device", default="cpu" if name == "export-weights" else "auto",
                            help="auto, cpu, cuda or cuda:N")
        parser.add_argument("--smooth", action="append", default=[], metavar="FILE",
                            help="a plug-in strategy file the run's teachers use, named so that it may be "
                                 "imported (repeatable); a file only the run's config.json names is refused")
        if name == "export-weights":
            parser.add_argument("--teacher", metavar="KEY",
                                help="teacher key (e.g. tma-m0.99-copy) or 'student' (default: the run's teacher)")
            parser.add_argument("--out", help="file to write (default: ./<run id>-<key>.pt)")
        else:
            parser.add_argument("--corruptions", default="none", choices=CORRUPTION_CHOICES,
                                help="also the mean top-1 on a corrupted test set (as --corruptions of run)")
        parser.set_defaults(func=func)
