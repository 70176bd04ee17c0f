"""User errors are one line; bugs (ssl-bench's or a plug-in's) keep their traceback (ssl_bench/errors.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssl_bench.cli import main
from ssl_bench.errors import MissingPackageError, UserError

REPO = Path(__file__).resolve().parents[1]

# The commonest loss mistake: logits of the unlabelled batch against the labels of the labelled batch.
# PyTorch raises a ValueError for it, which is a bug in the plug-in, not a bad value the user typed.
BATCH_MISMATCH = textwrap.dedent('''
    from dataclasses import dataclass

    import torch.nn.functional as F

    from ssl_bench.algorithm import Batch, Losses, register


    @register("mismatch")
    @dataclass
    class Mismatch:
        targets_from = "student"
        unlabeled_views = ("weak",)

        def loss(self, student, teacher, batch: Batch) -> Losses:
            (u,) = batch.u
            wrong = F.cross_entropy(student(u), batch.y)   # 7x as many rows as labels
            return Losses(total=wrong, terms={"supervised": wrong})
''')


def test_a_bug_in_a_plugin_loss_keeps_its_traceback_naming_the_plugin_line(tmp_path):
    plugin = tmp_path / "mismatch.py"
    plugin.write_text(BATCH_MISMATCH)
    line = next(i for i, text in enumerate(BATCH_MISMATCH.splitlines(), 1) if "wrong = F.cross_entropy" in text)
    done = subprocess.run([sys.executable, str(REPO / "run_bench.py"), "--alg", str(plugin), "--profile", "smoke",
                           "--dataset", "digits", "--labels", "20", "--smooth", "tma", "--no-progress",
                           "--results-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert f'File "{plugin}", line {line}, in loss' in done.stderr
    assert "ValueError: Expected input batch_size" in done.stderr


def test_a_bad_model_name_is_refused_in_one_line_before_anything_runs(tmp_path, capsys):
    assert main(["--model", "wrn27_2", "--dry-run", "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wrn27_2" in err and "depth = 6n+4" in err
    assert not any(tmp_path.iterdir())


def test_user_errors_are_value_errors_and_missing_packages_import_errors():
    # library callers that catch ValueError / ImportError keep working
    assert issubclass(UserError, ValueError)
    assert issubclass(MissingPackageError, UserError) and issubclass(MissingPackageError, ImportError)


@pytest.mark.parametrize("exc, one_line", [(UserError("--labels 7: not a multiple of 10"), True),
                                           (OSError(28, "No space left on device"), True),
                                           (ValueError("Expected input batch_size (56) to match (8)"), False),
                                           (RuntimeError("shape mismatch"), False)])
def test_only_user_and_machine_errors_become_one_line(monkeypatch, capsys, exc, one_line):
    import ssl_bench.cli as cli

    def fail(args):
        raise exc

    parser = cli.build_parser()
    args = parser.parse_args(["run", "--dry-run"])
    args.func = fail
    monkeypatch.setattr(cli, "build_parser", lambda prog=None: type("P", (), {"parse_args": lambda self, a: args})())
    if one_line:
        assert cli.main(["run"]) == 2 and capsys.readouterr().err.startswith("error: ")
    else:
        with pytest.raises(type(exc)):
            cli.main(["run"])
