"""Readers are total: a few hundred randomly damaged records never stop the leaderboard, and exactly the
damaged ones are skipped, each with one note (plain ``random`` with a fixed seed: the same cases every run)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from test_leaderboard import write_run

from ssl_bench.records import RecordError, RunRecord
from ssl_bench.report import leaderboard as lb
from ssl_bench.report import render

SMOOTHS = ("none", "tma", "se", "sts")


def _set_results(key, value):
    def damage(record):
        record["results"][key] = value
    return damage


def _set(key, value):
    def damage(record):
        record[key] = value
    return damage


def _nest(record):
    deep = 1.0
    for _ in range(60):
        deep = [deep]
    record["results"]["extra"] = deep


def _short_finished(record):
    record["steps_done"] = record["steps"] // 8


# Damages of the parsed record: every one is something no run writes, so every reader must refuse it.
RECORD_DAMAGES = {
    "accuracy 150": _set_results("teacher_median_last20", 150.0),
    "accuracy -40": _set_results("teacher_median_last20", -40.0),
    "accuracy true": _set_results("teacher_best", True),
    "accuracy text": _set_results("teacher_last", "finished"),
    "accuracy 1e308": _set_results("student_best", 1e308),
    "accuracy inf": _set_results("teacher_median_last20", float("inf")),
    "lr inf": _set("lr", float("inf")),
    "labels 400 digits": _set("labels", 10**400),
    "seed -1": _set("seed", -1),
    "batch 2^40": _set("batch_size", 2**40),
    "finished at 1/8": _short_finished,
    "deep nesting": _nest,
    "unknown status": _set("status", "exploded"),
    "schema 99": _set("schema", 99),
    "labels as text": _set("labels", "forty"),
}


def _replace_file(kind):
    def damage(path: Path):
        text = path.read_bytes()
        path.unlink()
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dev_zero":
            path.symlink_to("/dev/zero")
        elif kind == "folder":
            path.mkdir()
        elif kind == "truncated":
            path.write_bytes(text[: len(text) // 2])
        elif kind == "huge":
            path.write_bytes(text[:-1] + b', "pad": "' + b"x" * (5 * 2**20) + b'"}')
        elif kind == "list":
            path.write_text("[1, 2, 3]")
        elif kind == "binary":
            path.write_bytes(bytes(random.Random(len(text)).randrange(256) for _ in range(200)))
    return damage


FILE_DAMAGES = {name: _replace_file(name) for name in
                ("fifo", "dev_zero", "folder", "truncated", "huge", "list", "binary")}


def _inject(record):
    """Harmless to read, hostile to Markdown: must be shown escaped, never refused."""
    record["dataset"] = "cifar10_subset\n# INJECTED heading <script>x</script> | cell"
    record["command"] = "python run_bench.py\n- injected list item"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_randomly_damaged_records_are_skipped_exactly_and_the_leaderboard_always_renders(tmp_path):
    rng = random.Random(21)
    damaged, injected = set(), 0
    for i in range(300):
        # write_run's best is the median + 1 and its student median - 1: all three stay within 0-100
        run_dir = write_run(tmp_path, smooth=rng.choice(SMOOTHS), seed=i, median=round(rng.uniform(1, 99), 2))
        path = run_dir / "record.json"
        draw = rng.random()
        if draw < 0.35:
            record = json.loads(path.read_text())
            RECORD_DAMAGES[rng.choice(sorted(RECORD_DAMAGES))](record)
            path.write_text(json.dumps(record))
            damaged.add(run_dir.name)
        elif draw < 0.5:
            FILE_DAMAGES[rng.choice(sorted(FILE_DAMAGES))](path)
            damaged.add(run_dir.name)
        elif draw < 0.55:
            record = json.loads(path.read_text())
            _inject(record)
            path.write_text(json.dumps(record))
            injected += 1
    assert 100 < len(damaged) < 200 and injected > 5
    board = lb.build_leaderboard(tmp_path)
    refused = {p.path.parent.name: p.reason for p in board.problems}
    assert set(refused) == damaged, {name: reason for name, reason in refused.items() if name not in damaged}
    assert len(board.problems) == len(damaged)   # one note each
    assert all("\n" not in p.reason for p in board.problems)
    assert sum(c.n for s in board.sections for r in s.rows for c in r.cells.values()) == 300 - len(damaged)
    text = render.render_markdown(board)
    lines = text.splitlines()
    assert not any(line.startswith(("# INJECTED", "- injected")) for line in lines)
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert text.count("## Unreadable run records") == 1
    json.loads(render.render_json(board))


@pytest.mark.parametrize("name", sorted(RECORD_DAMAGES))
def test_each_damage_is_refused_with_one_line_naming_the_file(tmp_path, name):
    run_dir = write_run(tmp_path, median=50.0)
    record = json.loads((run_dir / "record.json").read_text())
    RECORD_DAMAGES[name](record)
    (run_dir / "record.json").write_text(json.dumps(record))
    with pytest.raises(RecordError) as caught:
        RunRecord.read(run_dir)
    assert str(run_dir / "record.json") in str(caught.value) and "\n" not in str(caught.value)


def test_a_record_readers_would_refuse_is_never_written(tmp_path):
    run_dir = write_run(tmp_path, median=50.0)
    record = RunRecord.read(run_dir)
    record.results = {**record.results, "teacher_best": 150.0}
    before = (run_dir / "record.json").read_bytes()
    with pytest.raises(RecordError, match=r"refusing to write .*record.json: the record has results.teacher_best = "
                                          r"150.0, not an accuracy") as caught:
        record.write()
    assert "delete this record.json" not in str(caught.value)
    assert (run_dir / "record.json").read_bytes() == before


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")
def test_plot_skips_metrics_with_huge_fields_fifos_and_links_with_one_warning_each(tmp_path, capsys):
    from test_plots import is_png, synthetic_metrics

    from ssl_bench.report import plots

    results = tmp_path / "results"
    runs = [write_run(results, seed=seed, metrics=synthetic_metrics(seed)) for seed in range(4)]
    with open(runs[1] / "metrics.csv", "a", encoding="utf-8") as fh:
        fh.write("1000," + "9" * 200_000 + "\n")   # over csv's 131,072-character field limit
    (runs[2] / "metrics.csv").unlink()
    os.mkfifo(runs[2] / "metrics.csv")               # would block a plain read
    (runs[3] / "metrics.csv").unlink()
    (runs[3] / "metrics.csv").symlink_to("/dev/zero")  # would fill the memory
    capsys.readouterr()
    (path,) = plots.plot_accuracy(results, alg="fixmatch", dataset="cifar10_subset", labels=40,
                                  out_dir=tmp_path / "fig")
    assert is_png(path)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    for run in runs[1:]:
        assert sum(run.name + ":" in line for line in warnings) == 1, warnings
