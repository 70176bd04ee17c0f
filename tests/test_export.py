"""`ssl-bench export` and `compare --format csv|json`: long form, one row per run / per paired difference, with
every identifying setting and every statistic, readable back without loss."""

from __future__ import annotations

import csv
import io
import json

import pytest
from test_leaderboard import write_run

from ssl_bench.cli import main


@pytest.fixture(scope="module")
def two_teacher_runs(tmp_path_factory):
    """One real smoke training that serves two teachers: two run directories, two records."""
    results = tmp_path_factory.mktemp("runs")
    assert main(["--alg", "fixmatch", "--smooth", "tma,sts", "--dataset", "digits", "--labels", "20",
                 "--profile", "smoke", "--seed", "2", "--results-dir", str(results), "--no-progress"]) == 0
    return results


def test_export_has_one_row_per_run_with_every_setting_and_statistic(two_teacher_runs, tmp_path, capsys):
    records = {d.name: json.loads((d / "record.json").read_text()) for d in two_teacher_runs.iterdir()}
    assert len(records) == 2
    assert main(["export", "--results-dir", str(two_teacher_runs), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["run_id"] for r in rows) == sorted(records)
    for row in rows:
        record = records[row["run_id"]]
        assert {k: row[k] for k in record["settings"]} == record["settings"]          # every identifying setting
        assert {k: row[k] for k in record["results"]} == record["results"]            # every statistic
        assert (row["status"], row["teacher"], row["training"]) == ("finished", record["teacher"],
                                                                     record["training"])
    out = tmp_path / "runs.csv"
    assert main(["export", "--results-dir", str(two_teacher_runs), "--out", str(out)]) == 0
    table = list(csv.DictReader(io.StringIO(out.read_text())))
    by_id = {r["run_id"]: r for r in rows}
    for line in table:   # the same cells as text; dicts as JSON
        row = by_id[line["run_id"]]
        assert line["smooth"] == row["smooth"] and float(line["teacher_best"]) == row["teacher_best"]
        assert json.loads(line["alg_args"]) == row["alg_args"] and int(line["seed"]) == 2


def test_compare_long_form_has_each_paired_difference(tmp_path, capsys):
    common = dict(dataset="digits", dataset_kind="embedded", dataset_family=None, labels=20, profile="cpu",
                  model="small", steps=2048)
    for seed, (tma, sts) in enumerate([(40.0, 41.0), (42.0, 45.0)]):
        write_run(tmp_path, smooth="tma", seed=seed, median=tma, **common)
        write_run(tmp_path, smooth="sts", seed=seed, median=sts, **common)
    base = ["compare", "--results-dir", str(tmp_path), "--dataset", "digits", "--labels", "20"]
    assert main([*base, "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["kind"] == "strategy_minus_tma" and row["n"] == 2 and row["paired_seeds"] == [0, 1]
    assert row["mean"] == pytest.approx(2.0) and row["std"] == pytest.approx(2 ** 0.5)   # diffs 1 and 3
    assert (row["arm_mean"], row["baseline_mean"]) == (pytest.approx(43.0), pytest.approx(41.0))
    assert main([*base, "--format", "csv"]) == 0
    (line,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert float(line["mean"]) == pytest.approx(2.0) and float(line["ci_low"]) < 0 < float(line["ci_high"])
