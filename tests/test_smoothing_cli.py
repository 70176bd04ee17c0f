"""Strategies on the command line: ``--smooth path/to/plugin.py``, ``--smooth-arg`` for a strategy's own
settings, what the records say about them, and that reading those records never imports a plug-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_bench.config import RunConfig
from ssl_bench.errors import UserError
from ssl_bench.records import RunRecord
from ssl_bench.run.build import plan_teachers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "sparse_ema.py"


def smoke(**settings) -> RunConfig:
    return RunConfig(algorithm="fixmatch", dataset="digits", labels=20, profile="smoke", device="cpu", **settings)


def test_smooth_args_reach_only_the_teachers_whose_strategy_reads_them_typed() -> None:
    tma, swa = plan_teachers([smoke(smooth=s, smooth_args={"start": "0.25", "every": "3"}) for s in ("tma", "swa")])
    assert tma.smooth_args == {} and swa.smooth_args == {"start": 0.25, "every": 3}
    assert swa.smoothing().as_dict()["start"] == 0.25 and swa.teacher_key() == "swa-copy-start0.25-every3"
    assert tma.training_identity() == swa.training_identity()          # one training serves both


@pytest.mark.parametrize(("args", "needle"), [
    ({"strat": "0.5"}, "--smooth-arg strat: no teacher's strategy (swa) reads it; they read ['every', 'start']"),
    ({"start": "late"}, "start='late' is not a number"),
    ({"start": "2"}, "start=2.0 is outside [0, 1]"),
    ({"every": "1.5"}, "every='1.5' is not an integer"),
    ({"m": "0.9"}, "m has its own option; pass --m 0.9"),
])
def test_bad_smooth_args_are_one_line(args: dict, needle: str) -> None:
    with pytest.raises(UserError) as err:
        plan_teachers([smoke(smooth="swa", smooth_args=args)])
    assert needle in str(err.value)


def test_the_readme_plugin_runs_in_a_multi_teacher_training_from_the_command_line(tmp_path: Path) -> None:
    from ssl_bench.cli import main
    from ssl_bench.report.leaderboard import build_leaderboard

    plugin = EXAMPLE   # the file itself: one strategy name is one file in a process (the registry-wide tests use it)
    results = tmp_path / "runs"
    argv = ["--alg", "fixmatch", "--dataset", "digits", "--labels", "20", "--profile", "smoke", "--device", "cpu",
            "--smooth", f"tma,{plugin}", "--smooth-arg", "every=2", "--results-dir", str(results), "--no-progress",
            "--corruptions", "none"]
    assert main(argv) == 0
    record = RunRecord.read(results / "fixmatch-sparse_ema_every2-digits-20-s0-smoke")
    assert record.smoothing == {"strategy": "sparse_ema", "settings": {"m": 0.999, "every": 2, "buffers": "copy"}}
    assert record.smoothing_sha256 is not None and len(record.smoothing_sha256) == 64
    assert RunRecord.read(results / "fixmatch-tma-digits-20-s0-smoke").smoothing_sha256 is None
    board = build_leaderboard(results, stat="last")
    labels = [row.label for section in board.sections for row in section.rows]
    assert labels == ["fixmatch · tma", "fixmatch · sparse_ema (every=2)"]


def test_reading_a_plugin_record_never_imports_the_plugin(tmp_path: Path) -> None:
    """A record whose smooth names a file that would leave a trace when imported: the leaderboard tabulates it
    from the record's own statement and the file never runs."""
    from ssl_bench.report.leaderboard import build_leaderboard

    trace = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(trace)!r}, 'w').write('ran')\n")
    results = tmp_path / "runs"
    source = ROOT / "results" / "fixmatch-tma-digits-20-s0-cpu"
    run = results / "fixmatch-evil-digits-20-s0-cpu"
    run.mkdir(parents=True)
    data = RunRecord.read(source).to_dict()   # an old committed record, written in today's schema
    data["settings"]["smooth"] = str(evil)
    data["run_id"] = run.name
    data["smoothing"] = {"strategy": "evil", "settings": {"m": 0.99}}
    data["smoothing_sha256"] = "0" * 64
    (run / "record.json").write_text(json.dumps(data))
    board = build_leaderboard(results, stat="last")
    assert [row.key.smooth for section in board.sections for row in section.rows] == ["evil"]
    assert not trace.exists()


def test_an_edited_plugin_is_not_resumed(tmp_path: Path) -> None:
    from ssl_bench.run.loop import train_teachers

    plugin = tmp_path / "mine.py"   # its own name: the registry is per process, and one name is one file
    plugin.write_text(EXAMPLE.read_text().replace('@register("sparse_ema")', '@register("sparse_ema_mine")'))
    configs = [smoke(smooth=s, results_dir=str(tmp_path / "runs"), corruptions="none") for s in ("tma", str(plugin))]
    train_teachers(configs, stop_at=4, progress=False, command="test")
    plugin.write_text(plugin.read_text() + "# edited\n")
    with pytest.raises(UserError, match="smoothing_files: checkpoint has"):
        train_teachers(configs, resume=True, progress=False, command="test")


def test_a_sweep_gives_smooth_args_to_the_teachers_that_read_them_and_names_their_folders() -> None:
    from ssl_bench.run.rundirs import run_base_name
    from ssl_bench.run.sweep import expand_grid

    base = smoke(smooth_args={"start": "0.5"})
    tma, swa = expand_grid(base, {"smooth": ["tma", "swa"], "seed": [0]})
    assert tma.smooth_args == {} and swa.smooth_args == {"start": 0.5}
    assert run_base_name(swa) == "fixmatch-swa_start0.5-digits-20-s0-smoke"
    assert run_base_name(tma) == "fixmatch-tma-digits-20-s0-smoke"
    with pytest.raises(UserError, match="--smooth-arg start: no teacher's strategy"):
        expand_grid(base, {"smooth": ["tma", "se"], "seed": [0]})


def test_a_results_folder_naming_a_plugin_file_never_makes_ssl_bench_import_it(tmp_path: Path, capsys) -> None:
    """A config.json edited to name a file that leaves a trace when imported: `evaluate`, `export-weights`,
    `sweep --dry-run` and `run --config` refuse in one line and the file never runs; naming it on the command
    line is what allows it."""
    from ssl_bench.cli import main

    trace = tmp_path / "imported"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(trace)!r}, 'w').write('ran')\n")
    results = tmp_path / "runs"
    common = ["--dataset", "digits", "--labels", "20", "--profile", "smoke", "--device", "cpu", "--no-progress",
              "--results-dir", str(results), "--corruptions", "none"]
    assert main(["--alg", "fixmatch", "--smooth", "tma,sts", *common, "--stop-at", "4"]) == 0
    sts = results / "fixmatch-sts-digits-20-s0-smoke"
    data = json.loads((sts / "config.json").read_text())
    data["config"]["smooth"] = str(evil)
    (sts / "config.json").write_text(json.dumps(data))
    tma = results / "fixmatch-tma-digits-20-s0-smoke"
    commands = [["evaluate", str(tma), "--device", "cpu"], ["export-weights", str(tma), "--out", str(tmp_path / "w")],
                ["sweep", "--alg", "fixmatch", "--smooth", "tma", *common, "--dry-run"],
                ["run", "--config", str(sts), "--results-dir", str(tmp_path / "other"), "--dry-run"]]
    for argv in commands:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "imports a plug-in only when you name it" in err and "Traceback" not in err, (argv, err)
        assert not trace.exists(), argv
