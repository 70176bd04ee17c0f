"""A plug-in file with a mistake is a loud error that names the file and the problem."""

from __future__ import annotations

import textwrap

import pytest
import torch

from ssl_bench.algorithm import AlgorithmError, Batch, build_algorithm, check_losses, load_algorithm_class

HEADER = """
from dataclasses import dataclass
import torch
from ssl_bench.algorithm import Batch, Losses, register
"""

GOOD_BODY = """
@dataclass
class Alg:
    weight: float = 1.0
    targets_from = "student"
    unlabeled_views = ("weak",)
    def loss(self, student, teacher, batch):
        return Losses(total=student(batch.x).sum() * self.weight)
"""


def write(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text(HEADER + textwrap.dedent(body))
    return str(path)


def test_file_without_registration_names_the_file(tmp_path):
    path = write(tmp_path, "unregistered", GOOD_BODY)
    with pytest.raises(AlgorithmError, match="unregistered.py.*exactly one @register"):
        load_algorithm_class(path)


def test_duplicate_name_names_both_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write(tmp_path / "a", "dup_one", '@register("dup_name")' + GOOD_BODY)
    second = write(tmp_path / "b", "dup_two", '@register("dup_name")' + GOOD_BODY)
    load_algorithm_class(first)
    with pytest.raises(AlgorithmError, match=r"dup_two.py.*already registered by .*dup_one.py"):
        load_algorithm_class(second)


def test_missing_declarations_are_named(tmp_path):
    body = GOOD_BODY.replace('targets_from = "student"', 'targets_from = "both"')
    with pytest.raises(AlgorithmError, match=r"bad_targets.py.*targets_from = 'both'"):
        load_algorithm_class(write(tmp_path, "bad_targets", '@register("bad_targets")' + body))
    body = GOOD_BODY.replace('unlabeled_views = ("weak",)', 'unlabeled_views = ("medium",)')
    with pytest.raises(AlgorithmError, match=r"bad_views.py.*unlabeled_views"):
        load_algorithm_class(write(tmp_path, "bad_views", '@register("bad_views")' + body))


def test_import_error_inside_the_plugin_is_not_swallowed(tmp_path):
    path = write(tmp_path, "broken", "import not_a_module_anywhere\n")
    with pytest.raises(AlgorithmError, match=r"broken.py: importing the algorithm file failed: ModuleNotFoundError"):
        load_algorithm_class(path)


def test_loss_that_returns_no_tensor_names_the_file(tmp_path):
    body = GOOD_BODY.replace("return Losses(total=student(batch.x).sum() * self.weight)", "return 0.0")
    algorithm = build_algorithm(write(tmp_path, "no_tensor", '@register("no_tensor")' + body))
    model = torch.nn.Linear(2, 2)
    batch = Batch(x=torch.ones(1, 2), y=torch.zeros(1, dtype=torch.long), u=(torch.ones(1, 2),), progress=0.0,
                  num_classes=2)
    with pytest.raises(AlgorithmError, match=r"no_tensor.py: Alg.loss returned float; expected .*Losses"):
        check_losses(algorithm.loss(model, model, batch), algorithm)


def test_alg_args_override_and_are_type_checked():
    assert build_algorithm("fixmatch", {"threshold": "0.9"}).threshold == 0.9
    with pytest.raises(AlgorithmError, match="expected a float"):
        build_algorithm("fixmatch", {"threshold": "high"})
    with pytest.raises(AlgorithmError, match="valid keys"):
        build_algorithm("fixmatch", {"tau": "0.9"})
