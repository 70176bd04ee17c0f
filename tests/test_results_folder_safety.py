"""A results folder is data: nothing in it makes ``sweep`` or ``--resume`` import a file, or write outside it.

Each case crafts one results folder from a real, unfinished shared training (tma + sts, stopped at step 4) and
checks that ``run --resume`` and ``sweep`` refuse with one line, run nothing (the marker file an imported
plug-in would write never appears) and leave every file outside the results folder as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from ssl_bench.cli import main

SMOKE = ["--profile", "smoke", "--dataset", "digits", "--labels", "20", "--device", "cpu", "--no-progress"]
LEAD, OTHER = "fixmatch-tma-digits-20-s0-smoke", "fixmatch-sts-digits-20-s0-smoke"


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding one shared training (tma, sts) stopped at step 4 of 8."""
    results = tmp_path_factory.mktemp("template") / "results"
    assert main(["run", *SMOKE, "--smooth", "tma,sts", "--results-dir", str(results), "--stop-at", "4"]) == 0
    assert sorted(p.name for p in results.iterdir()) == sorted([LEAD, OTHER])
    return results


@pytest.fixture()
def world(tmp_path: Path, unfinished: Path) -> dict[str, Path]:
    """A copy of the unfinished results folder, a victim folder outside it and a marker path."""
    results = tmp_path / "results"
    shutil.copytree(unfinished, results)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("a user's file\n")
    return {"results": results, "victim": victim, "marker": tmp_path / "MARKER", "root": tmp_path}


def evil_plugin(folder: Path, marker: Path, name: str = "evil.py") -> Path:
    path = folder / name
    path.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    return path


def edit_config(run_dir: Path, change) -> None:
    path = run_dir / "config.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def outside(world: dict[str, Path]) -> dict[str, str]:
    """sha256 of every file under the test's folder but outside the results folder."""
    root, results = world["root"], world["results"]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and results not in p.parents}


def attempts(world: dict[str, Path]) -> list[list[str]]:
    results = str(world["results"])
    return [["run", *SMOKE, "--smooth", "tma,sts", "--results-dir", results, "--resume"],
            ["sweep", *SMOKE, "--smooth", "tma,sts", "--results-dir", results]]


def assert_refused_and_nothing_ran(world: dict[str, Path], capsys, *named: str) -> None:
    before = outside(world)
    for argv in attempts(world):
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        assert code != 0, argv
        assert "Traceback" not in err and "error: " in err, err
        for text in named:
            assert text in err, f"{text!r} not in {err!r}"
        assert not world["marker"].exists(), "a file named by the results folder was imported"
        assert outside(world) == before, "something outside the results folder was written"
    # nothing new inside the results folder either (no new run was started)
    assert sorted(p.name for p in world["results"].iterdir()) == sorted([LEAD, OTHER])


def test_a_teacher_folder_whose_config_names_an_absolute_plugin_is_never_imported(world, capsys):
    evil = evil_plugin(world["victim"], world["marker"])
    edit_config(world["results"] / OTHER, lambda d: d["config"].update(algorithm=str(evil)))
    assert_refused_and_nothing_ran(world, capsys, OTHER, "another training", "algorithm")


def test_a_teacher_folder_whose_config_names_a_plugin_inside_the_results_folder_is_never_imported(world, capsys):
    evil = evil_plugin(world["results"] / OTHER, world["marker"], "notes.py")
    edit_config(world["results"] / OTHER, lambda d: d["config"].update(algorithm=os.path.relpath(evil)))
    assert_refused_and_nothing_ran(world, capsys, "another training")


@pytest.mark.parametrize("name", ["/victim", "../victim", "..", ".", "", "a/b", "..\\victim", ".hidden"])
def test_a_teacher_folder_name_outside_the_results_folder_is_refused(world, capsys, name):
    target = str(world["victim"]) if name == "/victim" else name
    for run_dir in (LEAD, OTHER):
        edit_config(world["results"] / run_dir,
                    lambda d: d["training"].update(teachers={k: target if v == OTHER else v
                                                             for k, v in d["training"]["teachers"].items()}))
    assert_refused_and_nothing_ran(world, capsys, "not a plain folder inside")
    assert sorted(p.name for p in world["victim"].iterdir()) == ["thesis.txt"]


def test_a_teacher_folder_that_is_a_symlink_out_of_the_results_folder_is_refused(world, capsys):
    moved = world["victim"] / OTHER
    shutil.move(world["results"] / OTHER, moved)
    (world["results"] / OTHER).symlink_to(moved, target_is_directory=True)
    assert_refused_and_nothing_ran(world, capsys, "symlink")


@pytest.mark.parametrize("teachers", [[LEAD, OTHER], "x", 3, None, {}, {"tma": 5}, {"": LEAD}, {"tma": [LEAD]}])
def test_teachers_of_the_wrong_type_are_one_line_naming_the_file(world, capsys, teachers):
    edit_config(world["results"] / LEAD, lambda d: d["training"].update(teachers=teachers))
    assert_refused_and_nothing_ran(world, capsys, str(world["results"] / LEAD / "config.json"))


def test_a_run_folder_that_is_a_symlink_is_never_written_through(world, capsys):
    """The lead folder, moved outside and linked back: --resume finds nothing to resume (it does not follow
    the link); a new run gets a folder of its own instead of writing through the link."""
    moved = world["victim"] / LEAD
    shutil.move(world["results"] / LEAD, moved)
    (world["results"] / LEAD).symlink_to(moved, target_is_directory=True)
    shutil.rmtree(world["results"] / OTHER)
    before = outside(world)
    capsys.readouterr()
    code = main(["run", *SMOKE, "--smooth", "tma", "--results-dir", str(world["results"]), "--resume"])
    assert code != 0 and "nothing to resume" in capsys.readouterr().err
    assert main(["run", *SMOKE, "--smooth", "tma", "--results-dir", str(world["results"])]) == 0
    assert (world["results"] / f"{LEAD}-2" / "record.json").is_file()
    assert outside(world) == before


def test_a_plugin_edited_between_stop_and_resume_is_not_resumed(tmp_path, capsys, monkeypatch):
    """The record keeps the plug-in's sha256: a changed file is another run, never a silent continuation."""
    monkeypatch.chdir(tmp_path)
    plugin = tmp_path / "my_fixmatch.py"
    source = Path(__file__).resolve().parents[1] / "algorithms" / "fixmatch.py"
    text = source.read_text().replace('@register("fixmatch")', '@register("my_fixmatch")')
    assert text != source.read_text()
    plugin.write_text(text)
    argv = ["run", *SMOKE, "--smooth", "tma", "--alg", str(plugin), "--results-dir", str(tmp_path / "results")]
    assert main([*argv, "--stop-at", "4"]) == 0
    plugin.write_text(text + "\n# edited\n")
    capsys.readouterr()
    assert main([*argv, "--resume"]) != 0
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "algorithm_sha256" in err, err
    plugin.write_text(text)   # restored: the same content resumes
    assert main([*argv, "--resume"]) == 0


# -- every end is recorded ------------------------------------------------------------------------------------------

def _plugin(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text("import sys\n\nfrom ssl_bench.algorithm import register\n"
                    "from ssl_bench_algorithms.fixmatch import FixMatch\n\n\n"
                    f"@register({name!r})\nclass Plugin(FixMatch):\n{body}")
    return path


def test_sys_exit_inside_a_plugins_loss_is_a_failure_not_a_success(tmp_path, capsys):
    plugin = _plugin(tmp_path, "exits_early", "    def loss(self, student, teacher, batch):\n        sys.exit(0)\n")
    results = tmp_path / "results"
    # a plug-in's mistake keeps its traceback (ssl_bench.errors): the process exits 1, never 0
    with pytest.raises(RuntimeError, match=r"called sys.exit\(0\) at step 0"):
        main(["run", *SMOKE, "--alg", str(plugin), "--results-dir", str(results)])
    (run_dir,) = results.iterdir()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["status"] == "failed" and "sys.exit(0)" in record["error"]


def test_a_reference_that_readers_would_refuse_is_refused_before_any_record(tmp_path, capsys):
    """``mu: True`` passes the plug-in's registration (a bool is an int to Python) but no record may carry it."""
    body = "    reference = {'*': {'mu': True, 'lr': 0.03, 'weight_decay': 5e-4}}\n"
    plugin = _plugin(tmp_path, "bool_mu", body)
    results = tmp_path / "results"
    capsys.readouterr()
    assert main(["run", *SMOKE, "--alg", str(plugin), "--results-dir", str(results)]) != 0
    err = capsys.readouterr().err
    assert "--mu True (bool) is not an int" in err and "reference" in err and "Traceback" not in err
    assert not results.exists() or not any(results.iterdir())


def test_a_run_whose_last_record_write_failed_on_a_full_disk_is_reported_stale(tmp_path, capsys, monkeypatch):
    import errno

    from ssl_bench.records import RunRecord, RunStatus
    from ssl_bench.report import leaderboard as lb

    real_write = RunRecord.write

    def full_disk_at_the_end(self, run_dir=None):
        if self.status is not RunStatus.RUNNING:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, run_dir)

    monkeypatch.setattr(RunRecord, "write", full_disk_at_the_end)
    results = tmp_path / "results"
    assert main(["run", *SMOKE, "--results-dir", str(results)]) != 0
    monkeypatch.undo()
    (run_dir,) = results.iterdir()
    assert not (run_dir / "lock.json").exists()
    record = RunRecord.read(run_dir)
    assert record.status is RunStatus.RUNNING and record.effective_status() is RunStatus.STALE
    (stale,) = lb.build_leaderboard(results).not_counted
    assert stale.status is RunStatus.STALE and "--resume" in stale.reason


# -- identity is content: the leaderboard --------------------------------------------------------------------------

def test_two_plugins_of_one_name_or_two_data_files_of_one_name_are_separate_rows_with_a_note(tmp_path):
    from test_leaderboard import write_run

    from ssl_bench.report import leaderboard as lb
    from ssl_bench.report import render

    for seed in (0, 1):
        write_run(tmp_path, algorithm="my_alg", seed=seed, median=50.0, algorithm_sha256="a" * 64)
        write_run(tmp_path / "b", algorithm="my_alg", seed=seed, median=70.0, algorithm_sha256="b" * 64)
    for path in (tmp_path / "b").iterdir():   # same names: another folder, moved in beside them
        path.rename(tmp_path / (path.name + "-2"))
    (tmp_path / "b").rmdir()
    board = lb.build_leaderboard(tmp_path)
    (section,) = board.sections
    assert sorted(r.cells[40].mean for r in section.rows) == [50.0, 70.0]
    assert sorted(r.label for r in section.rows) == ["my_alg · tma (file aaaaaaaa)", "my_alg · tma (file bbbbbbbb)"]
    assert "another algorithm file or another data file of the same name" in render.render_markdown(board)
    # a built-in's file hash is not part of the row (it changes with ssl-bench releases), the data's is
    for seed, fingerprint in ((0, "11111111"), (1, "22222222")):
        write_run(tmp_path / "c", seed=seed, median=60.0, algorithm_sha256=str(seed) * 64,
                  dataset_fingerprint=fingerprint)
    (section,) = lb.build_leaderboard(tmp_path / "c").sections
    assert sorted(r.label for r in section.rows) == ["fixmatch · tma (data 11111111)", "fixmatch · tma (data 22222222)"]


# -- unclear lines made clear -----------------------------------------------------------------------------------------

def test_a_config_with_an_unknown_key_names_its_file(world, capsys):
    edit_config(world["results"] / OTHER, lambda d: d["config"].update(colour="blue"))
    capsys.readouterr()
    assert main(["sweep", *SMOKE, "--smooth", "tma,sts", "--results-dir", str(world["results"]), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert str(world["results"] / OTHER / "config.json") in err and "unknown keys ['colour']" in err, err


def test_a_read_only_mount_on_resume_is_the_not_writable_line(world, capsys, monkeypatch):
    import errno

    from ssl_bench.run import rundirs

    def read_only(run_dir, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(Path(run_dir) / "lock.json"))

    monkeypatch.setattr(rundirs, "RunLock", read_only)
    capsys.readouterr()
    assert main(["run", *SMOKE, "--smooth", "tma,sts", "--results-dir", str(world["results"]), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "is not writable (Read-only file system" in err and "make it writable" in err, err


def test_a_data_file_changed_between_stop_and_resume_is_not_resumed(tmp_path, capsys):
    """Same name, other content: the record's dataset fingerprint is part of what --resume matches."""
    import numpy as np

    def save(seed: int) -> None:
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
        np.savez(data, x_train=x[:32], y_train=np.arange(32) % 2, x_test=x[32:], y_test=np.arange(16) % 2)

    data = tmp_path / "mine.npz"
    save(0)
    argv = ["run", "--profile", "smoke", "--dataset", str(data), "--labels", "4", "--device", "cpu", "--no-progress",
            "--smooth", "tma", "--results-dir", str(tmp_path / "results")]
    assert main([*argv, "--stop-at", "4"]) == 0
    save(1)
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "dataset_fingerprint" in err, err
    save(0)
    assert main([*argv, "--resume"]) == 0


def test_a_builtin_algorithms_file_hash_is_not_matched_on_resume(world, capsys):
    """A built-in's file changes with ssl-bench releases (the record's commit says which ran): an upgrade
    between --stop-at and --resume continues the run, as the leaderboard keeps its rows together."""
    for run_dir in (LEAD, OTHER):
        path = world["results"] / run_dir / "record.json"
        path.write_text(path.read_text().replace('"algorithm_sha256": "', '"algorithm_sha256": "0ld'))
    assert main(["run", *SMOKE, "--smooth", "tma,sts", "--results-dir", str(world["results"]), "--resume"]) == 0
    assert sorted(p.name for p in world["results"].iterdir()) == sorted([LEAD, OTHER])
