"""The command line as a user types it: defaults, --help, clear errors, and the README's plug-in example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ssl_bench.cli import build_parser, config_from_args, main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_main_command_defaults_to_cifar10_seed0_full_profile():
    args = build_parser().parse_args(["run", "--alg", "fixmatch", "--smooth", "sts", "--labels", "40"])
    config = config_from_args(args)
    assert (config.dataset, config.seed, config.profile, config.p, config.m) == ("cifar10", 0, "full", 0.5, None)
    resolved = config.resolved("cifar10", "wrn28_2")
    assert (resolved.m, resolved.model, resolved.weight_decay, resolved.steps) == (0.999, "wrn28_2", 5e-4, 2**20)
    assert config.resolved("cifar100", "wrn28_8").weight_decay == 1e-3


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option in ("--alg", "--smooth", "--labels", "--dataset", "--seed", "--profile", "--p", "--m",
                   "--granularity", "--buffers", "--resume", "--data-root", "--amp", "--compile"):
        assert option in text, option
    assert "(default: fixmatch)" in text and "(default: cifar10)" in text


@pytest.mark.parametrize("argv, expected", [
    (["--alg", "fixmach"], "valid choices: ['fixmatch'"),
    (["--dataset", "cifar11"], "cifar11"),
    (["--labels", "41", "--dataset", "digits"], "multiple"),
    (["--alg-arg", "tau=0.9"], "valid keys"),
])
def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "empty"))
    code = main([*argv, "--profile", "smoke", "--results-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and expected in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--smooth", "ema"], ["--profile", "huge"], ["--granularity", "row"]])
def test_unknown_choice_lists_the_valid_ones(capsys, argv):
    with pytest.raises(SystemExit):
        main(argv)
    assert "invalid choice" in capsys.readouterr().err


def test_missing_cifar_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "nothing-here"))
    assert main(["--profile", "smoke", "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--download" in err and "--data-root" in err and "SSL_BENCH_DATA" in err


def test_main_command_writes_a_run(tmp_path, capsys):
    code = main(["--alg", "fixmatch", "--smooth", "sts", "--labels", "20", "--dataset", "digits",
                 "--profile", "smoke", "--results-dir", str(tmp_path), "--no-progress"])
    assert code == 0
    (run_dir,) = tmp_path.iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "finished" and record["command"].startswith("python")
    assert "teacher top-1" in capsys.readouterr().out


def readme_plugin() -> str:
    text = README.read_text()
    match = re.search(r"<!-- plugin-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its plug-in example"
    return match.group(1)


def test_readme_plugin_example_runs_by_path(tmp_path):
    code = readme_plugin()
    assert len(code.strip().splitlines()) < 40
    plugin = tmp_path / "entropy_min.py"
    plugin.write_text(code)
    assert main(["--alg", str(plugin), "--smooth", "tma", "--labels", "20", "--dataset", "digits",
                 "--profile", "smoke", "--results-dir", str(tmp_path / "r"), "--no-progress"]) == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    assert json.loads((run_dir / "record.json").read_text())["algorithm"] == "entropy_min"


def test_plugin_dropped_into_algorithms_folder_runs_by_name(tmp_path, monkeypatch):
    # Another name than the test above: the registry refuses one name from two files (by design).
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "algorithms" / "entropy_min_here.py").write_text(
        readme_plugin().replace('"entropy_min"', '"entropy_min_here"'))
    monkeypatch.chdir(tmp_path)
    assert main(["--alg", "entropy_min_here", "--labels", "20", "--dataset", "digits", "--profile", "smoke",
                 "--results-dir", "r", "--no-progress"]) == 0
