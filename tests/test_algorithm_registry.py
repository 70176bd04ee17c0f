"""The registry: a plug-in file with a mistake is a loud error that names the file and the problem; built-in
names are reserved; built-ins are found through the installed package; every hyper-parameter's declared
range is enforced."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import torch

from ssl_bench.algorithm import (
    AlgorithmError,
    Batch,
    available_algorithms,
    build_algorithm,
    builtin_algorithms,
    check_losses,
    describe_range,
    generator_of,
    hyperparameter_fields,
    load_algorithm_class,
)

REPO = Path(__file__).resolve().parents[1]

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


def test_import_error_inside_the_plugin_keeps_its_traceback_and_names_the_file(tmp_path):
    path = write(tmp_path, "broken", "import not_a_module_anywhere\n")
    with pytest.raises(ModuleNotFoundError, match="not_a_module_anywhere") as info:
        load_algorithm_class(path)
    assert not isinstance(info.value, AlgorithmError)   # user code: not a one-line error, the traceback stays
    assert any(str(Path(path)) in note for note in info.value.__notes__)


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


# --- reserved built-in names ----------------------------------------------------------------------------


def test_plugin_by_path_registering_a_builtin_name_names_both_files(tmp_path):
    path = write(tmp_path, "my_copy", '@register("fixmatch")' + GOOD_BODY)
    with pytest.raises(AlgorithmError, match=r"my_copy.py: algorithm name 'fixmatch' is reserved for the "
                                             r"built-in .*algorithms/fixmatch.py"):
        load_algorithm_class(path)
    assert load_algorithm_class("fixmatch").__module__ == "ssl_bench_algorithms.fixmatch"   # untouched


def test_plugin_in_working_directory_named_like_a_builtin_names_both_files(tmp_path, monkeypatch):
    (tmp_path / "algorithms").mkdir()
    write(tmp_path / "algorithms", "mixmatch", '@register("my_mixmatch")' + GOOD_BODY)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AlgorithmError, match=r"algorithms/mixmatch.py: the file has the name of the built-in "
                                             r"algorithm 'mixmatch' \(.*algorithms/mixmatch.py\), which is "
                                             r"reserved"):
        build_algorithm("mixmatch")


def test_a_checkout_as_working_directory_is_not_a_plugin_folder(tmp_path, monkeypatch):
    # Running from an ssl-bench checkout whose built-ins are installed from a wheel: its algorithms/ package
    # (beside ssl_bench/algorithm.py) holds the built-ins' sources, not plug-ins shadowing them.
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "algorithms" / "__init__.py").write_text("")
    write(tmp_path / "algorithms", "fixmatch", '@register("fixmatch")' + GOOD_BODY)
    (tmp_path / "ssl_bench").mkdir()
    (tmp_path / "ssl_bench" / "algorithm.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert load_algorithm_class("fixmatch").__module__ == "ssl_bench_algorithms.fixmatch"
    (tmp_path / "ssl_bench" / "algorithm.py").unlink()   # no checkout: the same folder is a plug-in folder
    with pytest.raises(AlgorithmError, match="reserved"):
        load_algorithm_class("fixmatch")


def test_plugin_in_working_directory_is_found_beside_the_builtins(tmp_path, monkeypatch):
    (tmp_path / "algorithms").mkdir()
    write(tmp_path / "algorithms", "my_local_alg", '@register("my_local_alg")' + GOOD_BODY)
    monkeypatch.chdir(tmp_path)
    assert set(builtin_algorithms()) < set(available_algorithms())
    assert "my_local_alg" in available_algorithms()
    assert build_algorithm("my_local_alg", {"weight": "2"}).weight == 2.0


def test_builtins_are_found_through_the_installed_package_from_any_directory(tmp_path, monkeypatch,
                                                                             builtin_registry):
    monkeypatch.chdir(tmp_path)   # no algorithms/ folder here
    import ssl_bench_algorithms

    names = builtin_algorithms()
    assert set(names) == {"fixmatch", "mixmatch", "remixmatch", "uda", "mean_teacher", "pi_model",
                          "pseudo_label", "supervised",
                          "flexmatch", "freematch", "softmatch", "adamatch", "dash", "simmatch"}
    assert all(path.parent == Path(ssl_bench_algorithms.__path__[0]) for path in names.values())
    assert available_algorithms() == sorted(names)
    for name in names:
        assert load_algorithm_class(name).__module__ == f"ssl_bench_algorithms.{name}"


def test_the_wheel_lists_every_package_under_ssl_bench_and_the_algorithms():
    tomllib = pytest.importorskip("tomllib")   # Python >= 3.11
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "ssl_bench").rglob("__init__.py")}
    assert found | {"ssl_bench_algorithms"} == set(setuptools["packages"])
    assert setuptools["package-dir"] == {"ssl_bench_algorithms": "algorithms"}


# --- declared ranges, checked for every algorithm -------------------------------------------------------


def out_of_range_values(f: dataclasses.Field) -> list:
    """Values just outside a field's declared range (one per bound), or an unknown choice."""
    meta = f.metadata
    if meta.get("choices") is not None:
        return ["not_a_choice"]
    values = []
    if meta.get("low") is not None:
        values.append(meta["low"] if meta["open_low"] else meta["low"] - 1)
    if meta.get("high") is not None:
        values.append(meta["high"] + 1)
    return values


@pytest.mark.parametrize("name", available_algorithms())
def test_every_hyperparameter_declares_a_range_and_values_outside_it_are_refused(name):
    cls = load_algorithm_class(name)
    for f in hyperparameter_fields(cls):
        if f.type in ("bool", bool):
            continue
        assert describe_range(f) is not None, f"{name}.{f.name}: declare its range with hp(...)"
        bad_values = out_of_range_values(f)
        assert bad_values, f"{name}.{f.name}"
        for bad in bad_values:
            text = str(int(bad)) if f.type in ("int", int) else str(bad)
            message = rf"--alg-arg {f.name}={text}: {cls.__name__}.{f.name} must lie in .*; pass a value in"
            with pytest.raises(AlgorithmError, match=message):
                build_algorithm(name, {f.name: text})
    build_algorithm(name)   # the defaults themselves are in range


def test_fixmatch_threshold_five_is_refused_in_one_line():
    with pytest.raises(AlgorithmError) as info:
        build_algorithm("fixmatch", {"threshold": "5"})
    assert str(info.value) == ("--alg-arg threshold=5: FixMatch.threshold must lie in [0, 1]; "
                               "pass a value in that range (default 0.95)")


def test_a_plugin_range_is_checked_and_a_reference_with_unknown_keys_is_refused(tmp_path):
    body = GOOD_BODY.replace("weight: float = 1.0", "weight: float = hp(1.0, low=0.0, open_low=True)")
    path = write(tmp_path, "ranged", "from ssl_bench.algorithm import hp\n@register('ranged')" + body)
    with pytest.raises(AlgorithmError, match=r"Alg.weight must lie in \(0, inf\)"):
        build_algorithm(path, {"weight": "0"})
    body = GOOD_BODY.replace('targets_from = "student"',
                             'targets_from = "student"\n    reference = {"*": {"wd": 1}}')
    with pytest.raises(AlgorithmError, match=r"bad_reference.py: Alg.reference\['\*'\] sets 'wd'"):
        load_algorithm_class(write(tmp_path, "bad_reference", "@register('bad_reference')" + body))


def test_per_family_reference_sets_hyperparameter_defaults_and_alg_args_still_win(tmp_path):
    body = GOOD_BODY.replace('targets_from = "student"',
                             'targets_from = "student"\n'
                             '    reference = {"*": {"mu": 2}, "cifar100": {"weight": 3.0}}')
    path = write(tmp_path, "family_alg", "@register('family_alg')" + body)
    assert build_algorithm(path).weight == 1.0
    assert build_algorithm(path, None, "cifar10").weight == 1.0
    assert build_algorithm(path, None, "cifar100").weight == 3.0
    assert build_algorithm(path, {"weight": "4"}, "cifar100").weight == 4.0


def test_an_algorithm_that_draws_needs_the_batch_generator():
    batch = Batch(x=torch.zeros(1, 2), y=torch.zeros(1, dtype=torch.long), u=(), progress=0.0, num_classes=2)
    with pytest.raises(AlgorithmError, match=r"mixmatch: .*batch.generator, which is None"):
        generator_of(batch, build_algorithm("mixmatch"))
    model = torch.nn.Linear(2, 2)
    batch.u = (torch.ones(2, 2), torch.ones(2, 2))
    with pytest.raises(AlgorithmError, match="batch.generator"):
        build_algorithm("mixmatch").loss(model, model, batch)
