"""The command line as a user types it: defaults, --help, clear errors, and the README's plug-in example."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from ssl_bench.cli import TEACHER_AXES, build_parser, main, parse_values, settings_from_args
from ssl_bench.config import RunConfig, config_to_argv, flag_of, run_settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_main_command_defaults_to_cifar10_seed0_full_profile():
    args = build_parser().parse_args(["run", "--alg", "fixmatch", "--smooth", "sts", "--labels", "40"])
    config, axes = settings_from_args(args, TEACHER_AXES)
    assert axes == {"smooth": ["sts"]}
    assert (config.dataset, config.seed, config.profile, config.p, config.m) == ("cifar10", 0, "full", 0.5, None)
    fixmatch = {"mu": 7, "lr": 0.03, "weight_decay": 5e-4}
    resolved = config.resolved("cifar10", "wrn28_2", fixmatch)
    assert (resolved.m, resolved.model, resolved.weight_decay, resolved.steps, resolved.mu) == (
        0.999, "wrn28_2", 5e-4, 2**20, 7)


def test_every_setting_is_reachable_from_the_command_line_and_round_trips():
    """The parser is generated from the field table: each field has a flag, and argv -> config -> argv is exact."""
    parser = build_parser()
    changed = RunConfig(algorithm="mixmatch", alg_args={"alpha": "0.75"}, dataset="digits", labels=20, seed=3,
                        split_seed=4, profile="cpu", model="tiny", strong_augment="table12", smooth="se", p=0.3,
                        smooth_args={"start": "0.75"}, m=0.9, granularity="neuron", buffers="average",
                        schedule="cosine", steps=10, eval_every=5, batch_size=4, mu=2,
                        lr=0.1, momentum=0.8, weight_decay=1e-3, device="cpu", amp=True, channels_last=True,
                        compile=True, cuda_graphs=True, data_root="d", download=False, results_dir="r",
                        eval_batch_size=7, corruptions="none", log_every=3, tensorboard=True)
    defaults = RunConfig()
    assert all(getattr(changed, f.name) != getattr(defaults, f.name) for f in run_settings()), "test misses a field"
    args = parser.parse_args(["run", *config_to_argv(changed)])
    assert settings_from_args(args, TEACHER_AXES)[0] == changed
    help_text = " ".join(parser._subparsers._group_actions[0].choices["run"].format_help().split())
    assert all(flag_of(f) in help_text for f in run_settings())


def test_only_identifying_settings_match_a_resume():
    identity = RunConfig().identity()
    assert {"algorithm", "seed", "labels", "lr", "amp", "steps", "eval_every", "strong_augment"} <= set(identity)
    assert not {"log_every", "eval_batch_size", "results_dir", "data_root", "device", "download",
                "tensorboard", "cuda_graphs"} & set(identity)


def test_comma_lists_parse_values_and_ranges():
    field = {f.name: f for f in dataclasses.fields(RunConfig)}
    assert parse_values(field["seed"], "0-2,5,1") == [0, 1, 2, 5]
    assert parse_values(field["p"], "0.3, 0.5") == [0.3, 0.5]
    with pytest.raises(ValueError, match="--seed '2-1'"):
        parse_values(field["seed"], "2-1")
    with pytest.raises(ValueError, match="empty element"):
        parse_values(field["smooth"], "tma,,sts")


def test_help_names_the_command_that_was_typed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"], prog="ssl-bench")
    assert capsys.readouterr().out.startswith("usage: ssl-bench")


def test_dry_run_prints_the_reference_settings_without_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "nothing"))
    assert main(["--alg", "mixmatch", "--labels", "250", "--dataset", "cifar10", "--profile", "full",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "mu=1" in out and "steps=1048576" in out and "batch_size=64" in out and "strong_augment=ramc" in out
    assert not (tmp_path / "nothing").exists()


def test_help_lists_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for option in ("--alg", "--smooth", "--labels", "--dataset", "--seed", "--profile", "--p", "--m",
                   "--granularity", "--buffers", "--resume", "--data-root", "--amp", "--compile", "--no-download",
                   "--momentum", "--eval-batch-size", "--tensorboard"):
        assert option in text, option
    assert "(default: fixmatch)" in text and "(default: cifar10)" in text


@pytest.mark.parametrize("argv, expected", [
    (["--alg", "fixmach"], "did you mean 'fixmatch'"),
    (["--dataset", "cifar11"], "cifar11"),
    (["--labels", "41", "--dataset", "digits"], "multiple"),
    (["--alg-arg", "tau=0.9"], "valid keys"),
    (["--alg-arg", "threshold=5"], "threshold"),
    (["--seed", str(2**32)], "--seed"),
    (["--stop-at", "0", "--dataset", "digits", "--labels", "20"], "--stop-at 0"),
    (["--results-dir", "FILE", "--dataset", "digits", "--labels", "20"], "FILE"),
])
def test_bad_input_is_one_clear_line_not_a_traceback(tmp_path, capsys, monkeypatch, argv, expected):
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "empty"))
    (tmp_path / "FILE").write_text("a file, not a folder")
    argv = [a.replace("FILE", str(tmp_path / "FILE")) for a in argv]
    code = main(["--profile", "smoke", "--results-dir", str(tmp_path / "r"), "--no-progress", "--no-download",
                 *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and expected in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--smooth", "ema"], ["--profile", "huge"], ["--granularity", "row"],
                                  ["--smooth", "tma,ema"]])
def test_unknown_choice_lists_the_valid_ones(capsys, argv):
    try:
        code = main(argv)
    except SystemExit as exc:   # argparse's own choices (single-value options)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and ("invalid choice" in err or "choose from" in err) and "Traceback" not in err


def test_missing_cifar_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SSL_BENCH_DATA", str(tmp_path / "nothing-here"))
    assert main(["--profile", "smoke", "--results-dir", str(tmp_path / "r"), "--no-download"]) == 2
    err = capsys.readouterr().err
    assert "--no-download" in err and "--data-root" in err and "SSL_BENCH_DATA" in err and "Traceback" not in err


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


def test_readme_plugin_under_any_file_name_runs_by_its_registered_name(tmp_path, monkeypatch, builtin_registry):
    """The README's example saved as algorithms/em.py is `--alg entropy_min`; by path or by name, the folder and
    the record both say entropy_min, and the second run resumes the first (the same identity)."""
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "algorithms" / "em.py").write_text(readme_plugin())
    monkeypatch.chdir(tmp_path)
    common = ["--labels", "20", "--dataset", "digits", "--profile", "smoke", "--results-dir", "r", "--no-progress"]
    assert main(["--alg", "entropy_min", *common, "--stop-at", "4"]) == 0
    (run_dir,) = (tmp_path / "r").iterdir()
    assert run_dir.name.startswith("entropy_min-tma-digits-20-s0-smoke")
    record = json.loads((run_dir / "record.json").read_text())
    assert record["algorithm"] == record["settings"]["algorithm"] == "entropy_min"
    assert main(["--alg", "algorithms/em.py", *common, "--resume"]) == 0   # by path: the same run, resumed
    assert [d.name for d in (tmp_path / "r").iterdir()] == [run_dir.name]
    assert json.loads((run_dir / "record.json").read_text())["status"] == "finished"


def test_a_broken_plugin_shows_its_own_traceback_not_unknown_algorithm(tmp_path, monkeypatch, builtin_registry):
    import traceback

    (tmp_path / "algorithms").mkdir()
    (tmp_path / "algorithms" / "em.py").write_text(readme_plugin())
    (tmp_path / "algorithms" / "broken.py").write_text("import math\n\nratio = math.pi / 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ZeroDivisionError) as info:
        main(["--alg", "entropy_min", "--dataset", "digits", "--labels", "20", "--profile", "smoke", "--dry-run"])
    frames = traceback.extract_tb(info.tb)
    assert frames[-1].filename.endswith("broken.py") and frames[-1].line == "ratio = math.pi / 0"
    assert any("algorithms/broken.py" in note for note in info.value.__notes__)


def test_an_unknown_name_searches_every_plugin_and_suggests_the_closest(tmp_path, monkeypatch, capsys,
                                                                       builtin_registry):
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "algorithms" / "em.py").write_text(readme_plugin())
    monkeypatch.chdir(tmp_path)
    assert main(["--alg", "entropy_mni", "--dataset", "digits", "--labels", "20", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'entropy_min'?" in err and "Traceback" not in err


def test_quickstart_trains_both_and_prints_the_gain(tmp_path, capsys):
    """The README's quick start, on a shortened budget (its full form is quoted in the README)."""
    assert main(["quickstart", "--steps", "16", "--results-dir", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "supervised (labels only)" in out and "fixmatch" in out and "gain from unlabelled data" in out
    records = {json.loads((d / "record.json").read_text())["algorithm"]: d for d in tmp_path.iterdir()}
    assert set(records) == {"supervised", "fixmatch"}
    teacher = {a: json.loads((d / "record.json").read_text())["results"]["teacher_median_last20"]
               for a, d in records.items()}
    assert f"{teacher['fixmatch'] - teacher['supervised']:+.1f}" in out


def test_quickstart_says_when_it_reuses_finished_runs_and_fresh_trains_again(tmp_path, capsys):
    argv = ["quickstart", "--steps", "8", "--results-dir", str(tmp_path), "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "reusing" not in first and len(list(tmp_path.iterdir())) == 2
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert again.count("reusing the finished run") == 2 and "--fresh to train again" in again
    assert first.splitlines()[-4:] == again.splitlines()[-4:]   # the same numbers, said to be the old ones
    assert main([*argv, "--fresh"]) == 0
    assert "reusing" not in capsys.readouterr().out
    assert sorted(d.name.rsplit("-", 1)[-1] for d in tmp_path.iterdir()).count("2") == 2   # new directories


def test_tensorboard_missing_is_refused_before_any_run_directory_exists(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)   # `import` of it raises ImportError
    code = main(["--tensorboard", "--dataset", "digits", "--labels", "20", "--profile", "smoke",
                 "--results-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'ssl-bench[tensorboard]'" in err
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


@pytest.mark.parametrize("argv, expected", [(["--profile", "full"], "--profile full on a CPU"),
                                            (["--profile", "smoke", "--amp"], "--amp on a CPU")])
def test_days_of_cpu_work_are_refused_before_training_unless_yes(tmp_path, capsys, monkeypatch, argv, expected):
    import ssl_bench.run.loop as loop

    started = []
    monkeypatch.setattr(loop, "train_teachers", lambda *a, **k: started.append(a) or [])
    common = ["--dataset", "digits", "--labels", "20", "--device", "cpu", "--results-dir", str(tmp_path / "r")]
    assert main([*common, *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and "--yes" in err and not started
    assert main([*common, *argv, "--yes"]) == 0 and len(started) == 1
    assert not (tmp_path / "r").exists()


def _options_with_help(parser) -> list:
    from ssl_bench.cli import _every_parser

    return [(p.prog, a) for p in _every_parser(parser) for a in p._actions
            if a.option_strings and a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def test_every_help_line_of_every_command_shows_its_default(capsys):
    parser = build_parser("ssl-bench")
    options = _options_with_help(parser)
    assert len(options) > 60
    for prog, action in options:
        formatter = parser.formatter_class(prog)
        assert "default" in formatter._get_help_string(action), (prog, action.option_strings)
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("--seed SEED seed of the run (model init, batches, augmentation, masks) (default: 0)",
                  "--amp, --no-amp bf16 autocast (CUDA) (default: off)", "(default: tma)"):
        assert shown in text, shown
    from ssl_bench.smoothing import STRATEGIES  # the strategies as the smoothing module lists them, not a copy

    assert f"each one of {', '.join(STRATEGIES)}" in text


@pytest.mark.parametrize("argv, expected", [
    (["--smooth", "ema"], "'ema' is called 'tma' here"),
    (["--smooth", "tma,stss"], "did you mean 'sts'?"),
    (["--profile", "smok"], "did you mean 'smoke'?"),
    (["--smoth", "tma"], "did you mean '--smooth'"),
    (["leaderboard", "--stat", "medain"], "did you mean 'median'?"),
    (["--dataset", "digit", "--labels", "20", "--profile", "smoke"], "did you mean 'digits'"),
])
def test_near_misses_say_what_was_meant(tmp_path, capsys, argv, expected):
    try:
        code = main([*argv, "--results-dir", str(tmp_path / "r")] if argv[0] != "leaderboard" else argv)
    except SystemExit as exc:   # argparse's own errors
        code = exc.code
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_config_reruns_a_saved_run_number_for_number_and_options_override_it(tmp_path, capsys):
    from helpers import metric_rows

    first = ["--alg", "fixmatch", "--alg-arg", "threshold=0.8", "--smooth", "tma", "--m", "0.9", "--labels", "20",
             "--dataset", "digits", "--profile", "smoke", "--seed", "3", "--steps", "6", "--no-progress"]
    assert main([*first, "--results-dir", str(tmp_path / "a")]) == 0
    (original,) = (tmp_path / "a").iterdir()
    assert main(["run", "--config", str(original), "--results-dir", str(tmp_path / "b"), "--no-progress"]) == 0
    (again,) = (tmp_path / "b").iterdir()
    settings = json.loads((original / "record.json").read_text())["settings"]
    assert json.loads((again / "record.json").read_text())["settings"] == settings
    assert metric_rows(again) == metric_rows(original)
    assert main(["run", "--config", str(original / "config.json"), "--seed", "0", "--alg-arg", "lambda_u=2",
                 "--results-dir", str(tmp_path / "c"), "--no-progress"]) == 0
    (changed,) = (tmp_path / "c").iterdir()
    record = json.loads((changed / "record.json").read_text())
    diff = {k for k, v in record["settings"].items() if settings[k] != v}
    assert diff == {"seed", "split_seed", "alg_args"}   # the split follows the seed, as it did in the saved run
    assert record["settings"]["alg_args"] == {"threshold": "0.8", "lambda_u": "2"}
    capsys.readouterr()
    assert main(["run", "--config", str(original), "--profile", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out   # the profile's batch and model follow it; the steps given then stay
    assert "batch_size=16" in out and "model=small" in out and "steps=6," in out and "m=0.9," in out


def test_config_that_is_not_a_run_configuration_is_one_line(tmp_path, capsys):
    (tmp_path / "config.json").write_text("[1, 2]")
    assert main(["run", "--config", str(tmp_path), "--dry-run"]) == 2
    assert "holds no run configuration" in capsys.readouterr().err


def test_a_local_sweep_of_the_full_profile_on_a_cpu_is_refused_unless_yes(tmp_path, capsys):
    argv = ["sweep", "--profile", "full", "--device", "cpu", "--dataset", "digits", "--labels", "20",
            "--results-dir", str(tmp_path / "r")]
    assert main(argv) == 2 and "--profile full on a CPU" in capsys.readouterr().err
    assert main([*argv, "--dry-run"]) == 0 and not (tmp_path / "r").exists()   # planning is never refused
