"""Leaderboard, paper numbers and paired comparison, on synthetic run directories (docs/CONTRACTS.md schema 1)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from pathlib import Path

import pytest

from ssl_bench import leaderboard as lb

PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "paper" / "spatial_ensemble_neurips2021.md"
METRIC_COLUMNS = ("step", "lr", "loss", "mask_rate", "teacher_acc", "student_acc", "teacher_param_msd",
                  "teacher_output_msd", "elapsed_s")


def write_run(results: Path, *, algorithm="fixmatch", smooth="tma", granularity="layer", p=0.5, m=0.999,
              dataset="cifar10_subset", dataset_kind="subset", dataset_family="cifar10", labels=40, seed=0,
              profile="cpu", steps=2000, model="wrn28_2", status="finished", median=50.0, best=None,
              error=None, finished="2026-11-25T12:00:00+00:00", run_id=None, metrics=None, alg_args=None,
              alg_overrides=None) -> Path:
    """One run directory as the training loop writes it: record.json (+ metrics.csv when given)."""
    run_id = run_id or f"{profile}-{algorithm}-{smooth}-{granularity}-{p}-{m}-{dataset}-{model}-{steps}-{labels}-s{seed}"
    run_dir = results / run_id
    run_dir.mkdir(parents=True)
    results_block = None
    if median is not None:
        best = median + 1.0 if best is None else best
        results_block = {"teacher_median_last20": median, "teacher_best": best, "teacher_last": median,
                         "student_median_last20": median - 1, "student_best": best - 1,
                         "student_last": median - 1, "num_evals": 20}
    record = {
        "schema": 1, "run_id": run_id, "status": status, "error": error,
        "algorithm": algorithm, "alg_args": alg_args or {"threshold": 0.95, "lambda_u": 1.0},
        "targets_from": "student", "smooth": smooth, "granularity": granularity, "p": p, "m": m,
        "buffers": "copy", "dataset": dataset, "dataset_kind": dataset_kind, "dataset_family": dataset_family,
        "dataset_fingerprint": "1b0ab5d0", "labels": labels, "seed": seed, "split_hash": "abc",
        "profile": profile, "steps": steps, "steps_done": steps if status == "finished" else steps // 2,
        "model": model, "batch_size": 64, "mu": 7, "results": results_block,
        "versions": {"ssl_bench": "0.1.0", "torch": "2.13.0", "python": "3.11.7", "numpy": "2.4.6"},
        "device": "cpu", "commit": "abc1234", "command": "python run_bench.py --alg fixmatch",
        "started": "2026-11-25T11:00:00+00:00", "finished": finished if status == "finished" else None,
        "wall_seconds": 10.0,
    }
    if alg_overrides is not None:
        record["alg_overrides"] = alg_overrides
    (run_dir / "record.json").write_text(json.dumps(record), encoding="utf-8")
    if metrics is not None:
        with open(run_dir / "metrics.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(METRIC_COLUMNS)
            for row in metrics:
                writer.writerow(["" if v is None else v for v in row])
    return run_dir


def markdown_row(text: str, label: str) -> list[str]:
    """The cells of the markdown table row whose first cell is ``label`` (escaped pipes kept together)."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0] == label:
            return [c.replace("\\|", "|") for c in cells]
    raise AssertionError(f"no row {label!r} in\n{text}")


# ------------------------------------------------------------------ paper numbers


def test_paper_numbers_pinned():
    assert lb.paper_number("fixmatch", "tma", "cifar10", 40) == 92.06
    assert lb.paper_number("fixmatch", "sts", "cifar10", 20) == 93.31
    assert lb.paper_number("remixmatch", "tma", "cifar100", 400) == 55.72
    assert lb.paper_number("mixmatch", "tma", "cifar10", 20) is None  # "-" in the paper
    assert lb.paper_columns("cifar100") == [200, 400, 2500, 10000]


def test_paper_table_has_source_rows_and_mappings():
    table = lb.load_paper_table()
    assert "Spatial Ensemble" in table["source"]["paper"] and "NeurIPS 2021" in table["source"]["venue"]
    assert "Table 6" in table["source"]["table"] and "citation" in table["source"]["citations"]
    assert "EMA" in table["note"]
    keys = [(r["method"], r["algorithm"], r["smooth"]) for r in table["rows"]]
    assert keys == [
        ("Pi-Model", "pi_model", "tma"), ("Pseudo-Labeling", "pseudo_label", "tma"),
        ("Mean Teacher", "mean_teacher", "tma"), ("MixMatch", "mixmatch", "tma"), ("UDA", "uda", "tma"),
        ("ReMixMatch", "remixmatch", "tma"), ("FixMatch", "fixmatch", "tma"), ("FixMatch (STS)", "fixmatch", "sts"),
    ]
    for row in table["rows"]:
        assert sorted(map(int, row["cifar10"])) == [20, 40, 250, 4000]
        assert sorted(map(int, row["cifar100"])) == [200, 400, 2500, 10000]


def test_paper_table_matches_the_paper_text_cell_by_cell():
    if not PAPER_MD.exists():
        pytest.skip(f"paper text not found at {PAPER_MD}")
    lines = PAPER_MD.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Method\tCIFAR-10\t"))
    body = [line.split("\t") for line in lines[start + 2: start + 10]]
    rows = lb.load_paper_table()["rows"]
    assert len(body) == len(rows) == 8
    for printed, row in zip(body, rows, strict=True):
        assert printed[0].endswith(row["cite"]) if row["cite"] else printed[0] == row["method"]
        stored = [row["cifar10"][k] for k in ("20", "40", "250", "4000")]
        stored += [row["cifar100"][k] for k in ("200", "400", "2500", "10000")]
        assert [None if c == "-" else float(c) for c in printed[1:]] == stored, row["method"]


# ------------------------------------------------------------------ cells and sections


def test_mean_and_sample_std_over_seeds_with_paper_beside(tmp_path):
    for seed, acc in enumerate([40.0, 42.0, 44.0]):  # mean 42, sample std sqrt((4+0+4)/2) = 2
        write_run(tmp_path, seed=seed, median=acc)
    board = lb.build_leaderboard(tmp_path)
    cell = board.sections[0].rows[0].cells[40]
    assert (cell.mean, cell.std, cell.n, cell.paper) == (42.0, 2.0, 3, 92.06)
    text = lb.render_markdown(board)
    assert markdown_row(text, "fixmatch · tma") == ["fixmatch · tma", "", "42.0 ± 2.0 (n=3) | 92.06", "", ""]


def test_single_seed_has_no_plus_minus_and_unmatched_family_has_no_paper(tmp_path):
    write_run(tmp_path, dataset="digits", dataset_kind="embedded", dataset_family=None, labels=50, median=40.0)
    text = lb.render_markdown(lb.build_leaderboard(tmp_path))
    assert markdown_row(text, "fixmatch · tma") == ["fixmatch · tma", "40.0 (n=1)"]


def test_empty_cells_stay_empty_never_zero(tmp_path):
    write_run(tmp_path, labels=250, median=80.0)
    write_run(tmp_path, smooth="sts", labels=40, median=60.0)
    text = lb.render_markdown(lb.build_leaderboard(tmp_path))
    assert "| method | 20 labels | 40 labels | 250 labels | 4000 labels |" in text
    assert markdown_row(text, "fixmatch · tma") == ["fixmatch · tma", "", "", "80.0 (n=1) | 94.89", ""]
    assert markdown_row(text, "fixmatch · sts") == ["fixmatch · sts", "", "60.0 (n=1) | 93.89", "", ""]
    cells = [c.strip() for line in text.splitlines() if line.startswith("| fixmatch") for c in line.split("|")]
    assert not {"0", "0.0", "0.00", "nan"} & set(cells)


def test_profiles_datasets_models_and_steps_are_never_averaged_together(tmp_path):
    write_run(tmp_path, profile="cpu", median=40.0)
    write_run(tmp_path, profile="smoke", steps=20, median=10.0)
    write_run(tmp_path, profile="smoke", steps=20, model="tiny", median=12.0)
    write_run(tmp_path, profile="full", dataset="cifar10", dataset_kind="full", steps=1048576, median=90.0)
    write_run(tmp_path, profile="cpu", steps=4000, median=45.0)
    board = lb.build_leaderboard(tmp_path)
    assert [(s.key.profile, s.key.model, s.key.steps) for s in board.sections] == [
        ("full", "wrn28_2", 1048576), ("cpu", "wrn28_2", 4000), ("cpu", "wrn28_2", 2000),
        ("smoke", "tiny", 20), ("smoke", "wrn28_2", 20),
    ]
    for section in board.sections:  # every run alone in its section: nothing averaged across them
        assert [c.n for row in section.rows for c in row.cells.values()] == [1]
    text = lb.render_markdown(board)
    assert "## profile cpu · cifar10_subset (subset) · wrn28_2 · 2000 steps" in text
    assert text.index("profile full") < text.index("profile cpu") < text.index("profile smoke")


def test_profile_and_dataset_filters_select_sections_and_name_the_choices(tmp_path):
    write_run(tmp_path, profile="cpu", median=40.0)
    write_run(tmp_path, profile="smoke", steps=20, median=10.0)
    board = lb.build_leaderboard(tmp_path, profile="smoke")
    assert [s.key.profile for s in board.sections] == ["smoke"]
    with pytest.raises(lb.LeaderboardError, match="profiles present: cpu, smoke"):
        lb.build_leaderboard(tmp_path, profile="full")
    with pytest.raises(lb.LeaderboardError, match="datasets present: cifar10_subset"):
        lb.build_leaderboard(tmp_path, dataset="cifar100")


def test_failed_and_running_runs_are_listed_apart_and_not_averaged(tmp_path):
    write_run(tmp_path, seed=0, median=40.0)
    write_run(tmp_path, seed=1, median=44.0)
    write_run(tmp_path, seed=2, status="failed", median=None, error="RuntimeError: loss is NaN at step 17")
    write_run(tmp_path, seed=3, status="running", median=99.0)  # partial results must not leak in
    board = lb.build_leaderboard(tmp_path)
    cell = board.sections[0].rows[0].cells[40]
    assert (cell.seeds, cell.mean) == ([0, 1], 42.0)
    assert sorted((nc.run.seed, nc.run.status) for nc in board.not_counted) == [(2, "failed"), (3, "running")]
    text = lb.render_markdown(board)
    section = text.split("## Runs not counted")[1]
    assert "loss is NaN at step 17" in section and "running" in section and "1000/2000" in section


def test_duplicate_seed_keeps_the_latest_finished_run(tmp_path):
    write_run(tmp_path, run_id="old", seed=0, median=30.0, finished="2026-11-25T12:00:00+00:00")
    write_run(tmp_path, run_id="new", seed=0, median=50.0, finished="2026-11-25T13:00:00+00:00")
    write_run(tmp_path, run_id="other", seed=1, median=52.0)
    board = lb.build_leaderboard(tmp_path)
    cell = board.sections[0].rows[0].cells[40]
    assert (cell.run_ids, cell.values) == (["new", "other"], [50.0, 52.0])
    assert board.sections[0].superseded == [lb.Superseded("old", "new", 0)]
    assert "`old` superseded by the later `new`" in lb.render_markdown(board)


def test_stat_best_switches_the_statistic_and_the_header_says_so(tmp_path):
    write_run(tmp_path, median=40.0, best=47.0)
    median = lb.render_markdown(lb.build_leaderboard(tmp_path))
    best = lb.render_markdown(lb.build_leaderboard(tmp_path, stat="best"))
    assert "`teacher_median_last20`" in median and "40.0 (n=1)" in median
    assert "`teacher_best`" in best and "47.0 (n=1)" in best and "--stat best" in best
    with pytest.raises(lb.LeaderboardError, match="median, best"):
        lb.build_leaderboard(tmp_path, stat="last")


def test_row_labels_show_granularity_and_non_default_p_m_and_paper_only_for_paper_config(tmp_path):
    write_run(tmp_path, smooth="sts", granularity="channel", median=41.0)
    write_run(tmp_path, smooth="sts", p=0.7, m=0.99, median=42.0)
    write_run(tmp_path, smooth="tma", granularity="channel", p=0.3, seed=0, median=43.0)  # TMA: unused
    write_run(tmp_path, smooth="tma", seed=1, median=45.0)
    write_run(tmp_path, smooth="se", m=0.0, median=44.0)
    text = lb.render_markdown(lb.build_leaderboard(tmp_path))
    assert markdown_row(text, "fixmatch · sts (channel)")[2] == "41.0 (n=1)"
    assert markdown_row(text, "fixmatch · sts (p=0.7, m=0.99)")[2] == "42.0 (n=1)"
    assert markdown_row(text, "fixmatch · tma")[2] == "44.0 ± 1.4 (n=2) | 92.06"
    assert markdown_row(text, "fixmatch · se")[2] == "44.0 (n=1)"
    labels = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| fixmatch")]
    assert labels == ["fixmatch · tma", "fixmatch · se", "fixmatch · sts (p=0.7, m=0.99)", "fixmatch · sts (channel)"]


def test_cell_mixing_different_alg_args_is_flagged(tmp_path):
    write_run(tmp_path, seed=0, median=40.0)
    write_run(tmp_path, seed=1, median=41.0, alg_args={"threshold": 0.8, "lambda_u": 1.0})
    assert "mixes runs with different alg_args" in lb.render_markdown(lb.build_leaderboard(tmp_path))


# ------------------------------------------------------------------ formats and files


def test_csv_long_form_parses_back(tmp_path):
    for seed, acc in enumerate([40.0, 42.0, 44.0]):
        write_run(tmp_path, seed=seed, median=acc)
    write_run(tmp_path, smooth="sts", median=50.0)
    rows = list(csv.DictReader(io.StringIO(lb.render(lb.build_leaderboard(tmp_path), "csv"))))
    assert [(r["method"], r["labels"], r["n"]) for r in rows] == [("fixmatch · tma", "40", "3"),
                                                                  ("fixmatch · sts", "40", "1")]
    tma, sts = rows
    assert (float(tma["mean"]), float(tma["std"]), float(tma["paper"]), tma["seeds"]) == (42.0, 2.0, 92.06, "0 1 2")
    assert (sts["std"], float(sts["paper"]), sts["profile"], sts["stat"]) == ("", 93.89, "cpu", "teacher_median_last20")


def test_json_parses_back(tmp_path):
    write_run(tmp_path, seed=0, median=40.0)
    write_run(tmp_path, seed=1, median=44.0)
    write_run(tmp_path, seed=2, status="failed", median=None, error="boom")
    data = json.loads(lb.render(lb.build_leaderboard(tmp_path), "json"))
    cell = data["sections"][0]["rows"][0]["cells"]["40"]
    assert (cell["mean"], cell["n"], cell["paper"], cell["seeds"]) == (42.0, 2, 92.06, [0, 1])
    assert math.isclose(cell["std"], 2 ** 1.5)
    assert data["stat"] == "teacher_median_last20" and data["not_counted"][0]["reason"] == "boom"


def test_write_leaderboard_is_atomic_and_says_how_it_was_made(tmp_path):
    write_run(tmp_path, median=40.0)
    (tmp_path / "LEADERBOARD.md").write_text("stale", encoding="utf-8")
    path = lb.write_leaderboard(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "LEADERBOARD.md"
    assert text.startswith("# ssl-bench leaderboard")
    assert f"`python run_bench.py leaderboard --results-dir {tmp_path} --stat median`" in text
    assert "record.json" in text and "Derived file" in text
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["LEADERBOARD.md"]  # no temp left


def test_unparseable_record_and_temp_files_do_not_break_the_board(tmp_path):
    write_run(tmp_path, median=40.0)
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "record.json").write_text('{"schema": 1, "status": "fini', encoding="utf-8")
    (broken / ".record.json.x1.tmp").write_text("{half", encoding="utf-8")
    wrong = write_run(tmp_path, run_id="wrong-schema", median=40.0)
    (wrong / "record.json").write_text(json.dumps({"schema": 2}), encoding="utf-8")
    board = lb.build_leaderboard(tmp_path)
    assert board.sections[0].rows[0].cells[40].n == 1
    assert sorted(p.path.parent.name for p in board.problems) == ["broken-run", "wrong-schema"]
    text = lb.render_markdown(board)
    assert "## Unreadable run records" in text and "cannot be read as JSON" in text and "schema 2" in text


def test_missing_results_dir_is_a_clear_error(tmp_path):
    with pytest.raises(lb.LeaderboardError, match="does not exist"):
        lb.build_leaderboard(tmp_path / "nope")


# ------------------------------------------------------------------ paired comparison


def test_paired_difference_hand_worked():
    arm = {0: 11.0, 1: 12.0, 2: 13.0, 3: 50.0}
    base = {0: 10.0, 1: 10.0, 2: 10.0, 4: 7.0}
    d = lb.paired_difference(arm, base)  # diffs 1, 2, 3: mean 2, std 1, half-width 4.303 / sqrt(3)
    assert (d.n, d.mean, d.std, d.seeds, d.only_arm, d.only_baseline) == (3, 2.0, 1.0, [0, 1, 2], [3], [4])
    assert d.half_width == pytest.approx(2.484, abs=5e-4)
    assert (d.low, d.high) == pytest.approx((2 - 2.4843, 2 + 2.4843), abs=1e-3)
    assert "contains 0" in d.verdict
    one = lb.paired_difference({0: 5.0}, {0: 3.0})
    assert (one.n, one.mean, one.half_width) == (1, 2.0, None)


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 201):
        assert lb.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3), df


def test_compare_pairs_seeds_per_arm(tmp_path):
    for seed in range(3):
        write_run(tmp_path, smooth="tma", seed=seed, median=40.0 + seed)
        write_run(tmp_path, smooth="sts", seed=seed, median=41.0 + 2 * seed)  # diffs 1, 2, 3
        write_run(tmp_path, smooth="se", seed=seed, median=30.0 + seed)  # diffs -10, -10, -10
    write_run(tmp_path, smooth="none", seed=0, median=35.0)
    write_run(tmp_path, smooth="sts", seed=7, median=99.0)  # no TMA partner: listed, not used
    write_run(tmp_path, smooth="tma", profile="smoke", steps=20, seed=0, median=10.0)
    (comp_cpu, comp_smoke) = lb.compare(tmp_path, alg="fixmatch", dataset="cifar10_subset", labels=40)
    assert comp_cpu.section.profile == "cpu" and comp_smoke.arms == []
    assert [a.label for a in comp_cpu.arms] == ["fixmatch · sts", "fixmatch · se", "fixmatch · none"]
    sts, se, none = (a.diff for a in comp_cpu.arms)
    assert (sts.mean, sts.std, sts.only_arm) == (2.0, 1.0, [7])
    assert sts.half_width == pytest.approx(2.484, abs=5e-4)
    assert (se.mean, se.std, se.high < 0) == (-10.0, 0.0, True)
    assert (none.n, none.mean) == (1, -5.0)
    text = lb.render_compare([comp_cpu, comp_smoke])
    assert "[-0.48, +4.48]" in text and "fixmatch · sts: 7" in text and "Only the baseline" in text
    with pytest.raises(lb.LeaderboardError, match="finished .algorithm, labels. there: fixmatch/40"):
        lb.compare(tmp_path, alg="fixmatch", dataset="cifar10_subset", labels=250)


# ------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_bench.py")
    lb.add_subcommands(parser.add_subparsers(dest="command"))
    return parser


def test_cli_leaderboard_writes_markdown_by_default_and_formats_on_request(tmp_path, capsys):
    write_run(tmp_path, median=40.0)
    args = _parser().parse_args(["leaderboard", "--results-dir", str(tmp_path)])
    assert args.func(args) == 0
    assert "40.0 (n=1) \\| 92.06" in capsys.readouterr().out and (tmp_path / "LEADERBOARD.md").exists()
    (tmp_path / "LEADERBOARD.md").unlink()
    for argv in (["--format", "csv"], ["--format", "json"], ["--no-write"], ["--profile", "cpu"]):
        args = _parser().parse_args(["leaderboard", "--results-dir", str(tmp_path), *argv])
        assert args.func(args) == 0
    assert not (tmp_path / "LEADERBOARD.md").exists()
    args = _parser().parse_args(["leaderboard", "--results-dir", str(tmp_path), "--profile", "gpu"])
    assert args.func(args) == 2 and "profiles present: cpu" in capsys.readouterr().err


def test_cli_rejects_invalid_choices_listing_the_valid_ones(capsys):
    for argv in (["leaderboard", "--format", "xml"], ["leaderboard", "--stat", "last"],
                 ["compare", "--alg", "fixmatch", "--dataset", "d", "--labels", "-4"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(argv)
    err = capsys.readouterr().err
    assert "'markdown', 'csv', 'json'" in err and "'median', 'best'" in err and "positive integer" in err


def test_cli_compare(tmp_path, capsys):
    for seed in range(2):
        write_run(tmp_path, smooth="tma", seed=seed, median=40.0)
        write_run(tmp_path, smooth="sts", seed=seed, median=41.0 + seed)
    argv = ["compare", "--alg", "fixmatch", "--dataset", "cifar10_subset", "--labels", "40",
            "--results-dir", str(tmp_path)]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    assert "fixmatch · sts − fixmatch · tma | 2 | +1.50 | 0.71" in capsys.readouterr().out
    args = _parser().parse_args([*argv[:-2], "--results-dir", str(tmp_path), "--profile", "full"])
    assert args.func(args) == 2 and "profiles present: cpu" in capsys.readouterr().err


def test_overridden_hyper_parameters_get_a_row_of_their_own_and_no_paper_number(tmp_path):
    write_run(tmp_path, seed=0, median=40.0, m=0.999)
    write_run(tmp_path, seed=0, median=10.0, m=0.999, run_id="override", alg_overrides={"threshold": 0.5},
              alg_args={"threshold": 0.5, "lambda_u": 1.0})
    text = lb.render(lb.build_leaderboard(tmp_path), "markdown")
    default_row = next(line for line in text.splitlines() if line.startswith("| fixmatch · tma |"))
    override_row = next(line for line in text.splitlines() if "threshold=0.5" in line)
    assert "40.0" in default_row and "92.06" in default_row
    assert "10.0" in override_row and "92.06" not in override_row


def test_markdown_always_carries_the_papers_whole_table_for_reference(tmp_path):
    write_run(tmp_path, m=0.99, median=30.0)   # a scaled run: no per-cell paper number
    text = lb.render(lb.build_leaderboard(tmp_path), "markdown")
    reference = text.split("## The paper's Table 6, for reference", 1)[1]
    sts_row = next(line for line in reference.splitlines() if line.startswith("| FixMatch (STS) |"))
    assert sts_row.split(" | ")[2:4] == ["93.31", "93.89"]
    assert "| UDA | uda · tma |  | 70.95 | 81.18 |" in reference
