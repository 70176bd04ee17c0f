"""Leaderboard, paper numbers, paired comparisons and their command line, on synthetic run directories."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from pathlib import Path

import pytest

from ssl_bench import algorithm
from ssl_bench.config import PROFILES, RunConfig
from ssl_bench.records import RunRecord, RunStatus
from ssl_bench.report import compare as cmp
from ssl_bench.report import leaderboard as lb
from ssl_bench.report import paper, render, stats
from ssl_bench.report.cli import add_subcommands
from ssl_bench.run import lock

PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "paper" / "spatial_ensemble_neurips2021.md"
METRIC_COLUMNS = ("step", "lr", "loss", "mask_rate", "teacher_acc", "student_acc", "teacher_param_msd",
                  "teacher_output_msd", "elapsed_s")
# The reference strong augmentation: RunConfig's default (None while the config has no such setting).
REFERENCE_AUGMENT = getattr(RunConfig(), "strong_augment", None)
# Stand-in reference settings (the registry's own are tested by the algorithms' tests): FixMatch's and
# MixMatch's unlabelled ratio, learning rate and weight decay on CIFAR-10 as google-research/fixmatch
# sets them.
FAKE_REFERENCE = {
    ("fixmatch", "cifar10"): {"threshold": 0.95, "lambda_u": 1.0, "mu": 7, "lr": 0.03, "weight_decay": 5e-4},
    ("mixmatch", "cifar10"): {"mu": 1, "lr": 0.002, "weight_decay": 4e-4},
    ("supervised", "cifar10"): {"mu": 1, "lr": 0.03, "weight_decay": 5e-4},
}


@pytest.fixture(autouse=True)
def reference(monkeypatch):
    """Every test reads the stand-in reference settings above, whatever the registry holds."""
    def fake(name: str, family: str | None) -> dict:
        try:
            return dict(FAKE_REFERENCE[(name, family)])
        except KeyError:
            raise ValueError(f"no reference settings for {name!r} on {family!r}") from None

    monkeypatch.setattr(algorithm, "reference_configuration", fake)
    names = {name: Path(f"{name}.py") for name, _ in FAKE_REFERENCE}
    monkeypatch.setattr(algorithm, "builtin_algorithms", lambda: names)
    return fake


def write_run(results: Path, *, algorithm="fixmatch", smooth="tma", granularity="layer", p=0.5, m=0.999,
              dataset="cifar10_subset", dataset_kind="subset", dataset_family="cifar10", labels=40, seed=0,
              profile="cpu", steps=2000, model="wrn28_2", status="finished", median=50.0, best=None,
              error=None, finished="2026-11-25T12:00:00+00:00", run_id=None, metrics=None, alg_args=None,
              alg_overrides=None, schema=2, **fields) -> Path:
    """One run directory as the training loop writes it: record.json (+ metrics.csv when given).

    ``fields`` sets any other record field (lr, mu, training, ...); schema 1 leaves out the fields it lacked.
    """
    run_id = run_id or (f"{profile}-{algorithm}-{smooth}-{granularity}-{p}-{m}-{dataset}-{model}-{steps}"
                        f"-{labels}-s{seed}-{fields.get('training') or ''}{fields.get('buffers') or ''}")
    run_dir = results / run_id
    run_dir.mkdir(parents=True)
    results_block = None
    if median is not None:
        best = median + 1.0 if best is None else best
        results_block = {"teacher_median_last20": median, "teacher_best": best, "teacher_last": median,
                         "student_median_last20": median - 1, "student_best": best - 1,
                         "student_last": median - 1, "num_evals": 20}
    record = {
        "schema": schema, "run_id": run_id, "status": status, "error": error,
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
    if schema >= 2:
        record.update(lr=0.03, momentum=0.9, weight_decay=5e-4, strong_augment=REFERENCE_AUGMENT, hflip=True,
                      training=None, teacher=None, train_size=50000)
    if alg_overrides is not None:
        record["alg_overrides"] = alg_overrides
    record.update(fields)
    if schema >= 3:   # every setting of the run in one field; any other keyword is a setting too
        stored = set(RunRecord.__dataclass_fields__) | {"schema"}
        settings = {"amp": False, "channels_last": False, "compile": False, "split_seed": seed}
        settings.update({k: record.pop(k) for k in list(record) if k not in stored})
        record["settings"] = settings
    (run_dir / "record.json").write_text(json.dumps(record), encoding="utf-8")
    if metrics is not None:
        with open(run_dir / "metrics.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(METRIC_COLUMNS)
            for row in metrics:
                writer.writerow(["" if v is None else v for v in row])
    return run_dir


def paper_run(results: Path, **kw) -> Path:
    """A run of the paper's protocol: the full profile on full CIFAR-10 with WRN-28-2, m = 0.999."""
    full = PROFILES["full"]
    settings = dict(profile="full", dataset="cifar10", dataset_kind="full", steps=full.steps, model="wrn28_2",
                    batch_size=full.batch_size, eval_every=full.eval_every, m=0.999)
    return write_run(results, **{**settings, **kw})


def markdown_row(text: str, label: str) -> list[str]:
    """The cells of the markdown table row whose first cell is ``label`` (escaped pipes kept together)."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if cells and cells[0] == label:
            return [c.replace("\\|", "|") for c in cells]
    raise AssertionError(f"no row {label!r} in\n{text}")


# ------------------------------------------------------------------ paper numbers


def test_paper_numbers_pinned():
    assert paper.paper_number("fixmatch", "tma", "cifar10", 40) == 92.06
    assert paper.paper_number("fixmatch", "sts", "cifar10", 20) == 93.31
    assert paper.paper_number("remixmatch", "tma", "cifar100", 400) == 55.72
    assert paper.paper_number("mixmatch", "tma", "cifar10", 20) is None  # "-" in the paper
    assert paper.paper_columns("cifar100") == [200, 400, 2500, 10000]


def test_paper_table_has_source_rows_and_mappings():
    table = paper.load_paper_table()
    assert "Spatial Ensemble" in table["source"]["paper"] and "NeurIPS 2021" in table["source"]["venue"]
    assert "Table 6" in table["source"]["table"] and "citation" in table["source"]["citations"]
    assert "EMA" in table["note"]
    keys = [(r["method"], r["algorithm"], r["smooth"]) for r in table["rows"]]
    assert keys == [
        ("Pi-Model", "pi_model", "tma"), ("Pseudo-Labeling", "pseudo_label", "tma"),
        ("Mean Teacher", "mean_teacher", "tma"), ("MixMatch", "mixmatch", "tma"), ("UDA", "uda", "tma"),
        ("ReMixMatch", "remixmatch", "tma"), ("FixMatch", "fixmatch", "tma"),
        ("FixMatch (STS)", "fixmatch", "sts"),
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
    rows = paper.load_paper_table()["rows"]
    assert len(body) == len(rows) == 8
    for printed, row in zip(body, rows, strict=True):
        assert printed[0].endswith(row["cite"]) if row["cite"] else printed[0] == row["method"]
        stored = [row["cifar10"][k] for k in ("20", "40", "250", "4000")]
        stored += [row["cifar100"][k] for k in ("200", "400", "2500", "10000")]
        assert [None if c == "-" else float(c) for c in printed[1:]] == stored, row["method"]


# ------------------------------------------------------------------ cells and sections


def test_mean_and_sample_std_over_seeds_with_paper_beside(tmp_path):
    for seed, acc in enumerate([40.0, 42.0, 44.0]):  # mean 42, sample std sqrt((4+0+4)/2) = 2
        paper_run(tmp_path, seed=seed, median=acc)
    board = lb.build_leaderboard(tmp_path)
    cell = board.sections[0].rows[0].cells[40]
    assert (cell.mean, cell.std, cell.n, cell.paper) == (42.0, 2.0, 3, 92.06)
    text = render.render_markdown(board)
    assert markdown_row(text, "fixmatch · tma") == ["fixmatch · tma", "", "42.0 ± 2.0 (n=3, last) | 92.06", "", ""]


def test_scaled_runs_get_no_paper_number(tmp_path):
    paper_run(tmp_path, median=40.0, profile="short", steps=PROFILES["short"].steps)
    paper_run(tmp_path, median=40.0, dataset="cifar10_subset", dataset_kind="subset")
    paper_run(tmp_path, median=40.0, model="small")
    paper_run(tmp_path, median=40.0, batch_size=16)
    paper_run(tmp_path, median=40.0, eval_every=16, seed=1)   # another cadence: another median of 20
    paper_run(tmp_path, median=40.0, momentum=0.5, seed=2)
    write_run(tmp_path, median=40.0)   # the cpu profile
    board = lb.build_leaderboard(tmp_path)
    assert len(board.sections) == 5
    # every run its own cell: batch, cadence and momentum are identifying settings, so they split rows
    assert [c.paper for s in board.sections for r in s.rows for c in r.cells.values()] == [None] * 7


def test_single_seed_has_no_plus_minus_and_unmatched_family_has_no_paper(tmp_path):
    write_run(tmp_path, dataset="digits", dataset_kind="embedded", dataset_family=None, labels=50,
              median=40.0)
    text = render.render_markdown(lb.build_leaderboard(tmp_path))
    assert markdown_row(text, "fixmatch · tma") == ["fixmatch · tma", "40.0 (n=1)"]


def test_empty_cells_stay_empty_never_zero(tmp_path):
    paper_run(tmp_path, labels=250, median=80.0)
    paper_run(tmp_path, smooth="sts", labels=40, median=60.0)
    text = render.render_markdown(lb.build_leaderboard(tmp_path))
    assert "| method | 20 labels | 40 labels | 250 labels | 4000 labels |" in text
    assert markdown_row(text, "fixmatch · tma") == ["fixmatch · tma", "", "", "80.0 (n=1, last) | 94.89", ""]
    assert markdown_row(text, "fixmatch · sts") == ["fixmatch · sts", "", "60.0 (n=1, last) | 93.89", "", ""]
    lines = [line for line in text.splitlines() if line.startswith("| fixmatch")]
    cells = [c.strip() for line in lines for c in line.split("|")]
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
    text = render.render_markdown(board)
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
    text = render.render_markdown(board)
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
    assert "`old` superseded by the later `new`" in render.render_markdown(board)


def test_stat_best_switches_the_statistic_and_the_header_says_so(tmp_path):
    write_run(tmp_path, median=40.0, best=47.0)
    median = render.render_markdown(lb.build_leaderboard(tmp_path))
    best = render.render_markdown(lb.build_leaderboard(tmp_path, stat="best"))
    assert "`teacher_median_last20`" in median and "40.0 (n=1)" in median
    assert "`teacher_best`" in best and "47.0 (n=1)" in best and "--stat best" in best
    with pytest.raises(lb.LeaderboardError, match="median, best, last"):
        lb.build_leaderboard(tmp_path, stat="mean")


def test_row_labels_show_granularity_and_non_default_p_m_and_paper_only_for_paper_config(tmp_path):
    paper_run(tmp_path, smooth="sts", granularity="channel", median=41.0)
    paper_run(tmp_path, smooth="sts", p=0.7, m=0.99, median=42.0)
    paper_run(tmp_path, smooth="tma", granularity="channel", p=0.3, seed=0, median=43.0)  # TMA: unused
    paper_run(tmp_path, smooth="tma", seed=1, median=45.0)
    paper_run(tmp_path, smooth="se", m=0.0, median=44.0)
    text = render.render_markdown(lb.build_leaderboard(tmp_path))
    assert markdown_row(text, "fixmatch · sts (channel)")[2] == "41.0 (n=1)"
    assert markdown_row(text, "fixmatch · sts (p=0.7, m=0.99)")[2] == "42.0 (n=1)"
    assert markdown_row(text, "fixmatch · tma")[2] == "44.0 ± 1.4 (n=2, last) | 92.06"
    assert markdown_row(text, "fixmatch · se")[2] == "44.0 (n=1)"
    labels = [line.split("|")[1].strip() for line in text.split("## The paper's Table 6")[0].splitlines()
              if line.startswith("| fixmatch")]
    assert labels == ["fixmatch · tma", "fixmatch · se", "fixmatch · sts (p=0.7, m=0.99)",
                      "fixmatch · sts (channel)"]


def test_runs_with_different_identifying_settings_never_share_a_cell(tmp_path):
    # issue 19: a bf16 run and an fp32 run were averaged into one cell (amp never reached the record)
    write_run(tmp_path, seed=0, median=40.0, eval_every=16, schema=3)
    write_run(tmp_path, seed=1, median=41.0, eval_every=32, schema=3)
    write_run(tmp_path, seed=0, median=42.0, amp=True, schema=3, run_id="bf16")
    board = lb.build_leaderboard(tmp_path)
    cells = [c for s in board.sections for r in s.rows for c in r.cells.values()]
    assert sorted(c.n for c in cells) == [1, 1, 1]
    assert "fixmatch · tma (amp=True)" in [r.label for s in board.sections for r in s.rows]


def test_a_new_identifying_setting_reaches_the_record_and_splits_cells(tmp_path, monkeypatch):
    """A setting declared ``identifies=True`` in RunConfig reaches record.settings and the cell key by itself."""
    import dataclasses as dc

    from ssl_bench import config as config_module
    from ssl_bench.config import setting

    @dc.dataclass
    class WithDither(RunConfig):
        dither: float = setting(0.0, group="budget", help="a new identifying setting (test)")

    monkeypatch.setattr(config_module, "RunConfig", WithDither)
    for seed, dither in ((0, 0.0), (0, 0.5)):
        settings = WithDither(dither=dither, seed=seed, profile="cpu").identity()
        assert settings["dither"] == dither
        write_run(tmp_path, seed=seed, median=40.0, schema=3, run_id=f"d{dither}", dither=dither)
    board = lb.build_leaderboard(tmp_path)
    assert sorted(c.n for s in board.sections for r in s.rows for c in r.cells.values()) == [1, 1]


def test_cell_mixing_different_setups_is_flagged(tmp_path):
    write_run(tmp_path, seed=0, median=40.0, alg_args={"threshold": 0.95, "lambda_u": 1.0})
    write_run(tmp_path, seed=1, median=41.0, alg_args={"threshold": 0.95, "lambda_u": 1.0, "extra": 2})
    assert "mixes runs with different alg_args" in render.render_markdown(lb.build_leaderboard(tmp_path))


# ------------------------------------------------------------------ formats and files


def test_csv_long_form_parses_back(tmp_path):
    for seed, acc in enumerate([40.0, 42.0, 44.0]):
        paper_run(tmp_path, seed=seed, median=acc)
    paper_run(tmp_path, smooth="sts", median=50.0)
    rows = list(csv.DictReader(io.StringIO(render.render(lb.build_leaderboard(tmp_path), "csv"))))
    assert [(r["method"], r["labels"], r["n"]) for r in rows] == [("fixmatch · tma", "40", "3"),
                                                                  ("fixmatch · sts", "40", "1")]
    tma, sts = rows
    assert (float(tma["mean"]), float(tma["std"]), float(tma["paper"]), tma["seeds"]) == (42.0, 2.0, 92.06,
                                                                                          "0 1 2")
    assert (sts["std"], float(sts["paper"]), sts["profile"], sts["stat"]) == ("", 93.89, "full",
                                                                              "teacher_last")   # its row's own


def test_json_parses_back(tmp_path):
    paper_run(tmp_path, seed=0, median=40.0)
    paper_run(tmp_path, seed=1, median=44.0)
    paper_run(tmp_path, seed=2, status="failed", median=None, error="boom")
    data = json.loads(render.render(lb.build_leaderboard(tmp_path), "json"))
    cell = data["sections"][0]["rows"][0]["cells"]["40"]
    assert (cell["mean"], cell["n"], cell["paper"], cell["seeds"]) == (42.0, 2, 92.06, [0, 1])
    assert math.isclose(cell["std"], 2 ** 1.5)
    assert data["stat"] == "teacher_median_last20" and data["not_counted"][0]["reason"] == "boom"


def test_write_leaderboard_is_atomic_and_says_how_it_was_made(tmp_path):
    write_run(tmp_path, median=40.0)
    (tmp_path / "LEADERBOARD.md").write_text("stale", encoding="utf-8")
    path = render.write_leaderboard(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path == tmp_path / "LEADERBOARD.md"
    assert text.startswith("# ssl-bench leaderboard")
    assert f"`ssl-bench leaderboard --results-dir {tmp_path} --stat median --write`" in text
    assert "record.json" in text and "Derived file" in text
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["LEADERBOARD.md"]  # no temp left


def test_unparseable_record_and_temp_files_do_not_break_the_board(tmp_path):
    write_run(tmp_path, median=40.0)
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "record.json").write_text('{"schema": 1, "status": "fini', encoding="utf-8")
    (broken / ".record.json.x1.tmp").write_text("{half", encoding="utf-8")
    wrong = write_run(tmp_path, run_id="wrong-schema", median=40.0)
    (wrong / "record.json").write_text(json.dumps({"schema": 99}), encoding="utf-8")
    board = lb.build_leaderboard(tmp_path)
    assert board.sections[0].rows[0].cells[40].n == 1
    assert sorted(p.path.parent.name for p in board.problems) == ["broken-run", "wrong-schema"]
    text = render.render_markdown(board)
    assert "## Unreadable run records" in text and "cannot be read as JSON" in text and "schema 99" in text


def test_missing_results_dir_is_a_clear_error(tmp_path):
    with pytest.raises(lb.LeaderboardError, match="does not exist"):
        lb.build_leaderboard(tmp_path / "nope")


# ------------------------------------------------------------------ paired comparison


def test_paired_difference_hand_worked():
    arm = {0: 11.0, 1: 12.0, 2: 13.0, 3: 50.0}
    base = {0: 10.0, 1: 10.0, 2: 10.0, 4: 7.0}
    d = stats.paired_difference(arm, base)  # diffs 1, 2, 3: mean 2, std 1, half-width 4.303 / sqrt(3)
    assert (d.n, d.mean, d.std, d.seeds, d.only_arm, d.only_baseline) == (3, 2.0, 1.0, [0, 1, 2], [3], [4])
    assert d.half_width == pytest.approx(2.484, abs=5e-4)
    assert (d.low, d.high) == pytest.approx((2 - 2.4843, 2 + 2.4843), abs=1e-3)
    assert "contains 0" in d.verdict
    one = stats.paired_difference({0: 5.0}, {0: 3.0})
    assert (one.n, one.mean, one.half_width) == (1, 2.0, None)


def test_statistics_match_numpy_and_scipys_paired_t_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    np = pytest.importorskip("numpy")
    arm = {0: 71.2, 1: 69.8, 2: 73.5, 3: 70.1, 4: 72.9}
    base = {0: 68.0, 1: 69.9, 2: 70.2, 3: 66.4, 4: 71.0}
    a, b = np.array(list(arm.values())), np.array(list(base.values()))
    assert stats.mean(list(a)) == pytest.approx(a.mean())
    assert stats.sample_std(list(a)) == pytest.approx(a.std(ddof=1))
    d = stats.paired_difference(arm, base)
    ci = scipy_stats.ttest_rel(a, b).confidence_interval(0.95)   # an independent route to the same interval
    assert (d.low, d.high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    # Closed form for 2 degrees of freedom: t_q = (2q - 1) sqrt(2 / (4 q (1 - q))), q = 0.975 -> 4.3026527.
    assert stats.t_quantile(2) == pytest.approx(0.95 * math.sqrt(2 / (4 * 0.975 * 0.025)), rel=1e-9)
    with pytest.raises(ValueError, match="degrees of freedom 0"):
        stats.t_quantile(0)


def test_compare_pairs_seeds_per_arm(tmp_path):
    for seed in range(3):
        write_run(tmp_path, smooth="tma", seed=seed, median=40.0 + seed)
        write_run(tmp_path, smooth="sts", seed=seed, median=41.0 + 2 * seed)  # diffs 1, 2, 3
        write_run(tmp_path, smooth="se", seed=seed, median=30.0 + seed)  # diffs -10, -10, -10
    write_run(tmp_path, smooth="none", seed=0, median=35.0)
    write_run(tmp_path, smooth="sts", seed=7, median=99.0)  # no TMA partner: listed, not used
    write_run(tmp_path, smooth="tma", profile="smoke", steps=20, seed=0, median=10.0)
    (comp_cpu, comp_smoke) = cmp.compare(tmp_path, alg="fixmatch", dataset="cifar10_subset", labels=40)
    assert comp_cpu.section.profile == "cpu" and comp_smoke.arms == []
    assert [a.label for a in comp_cpu.arms] == ["fixmatch · sts", "fixmatch · se", "fixmatch · none"]
    sts, se, none = (a.diff for a in comp_cpu.arms)
    assert (sts.mean, sts.std, sts.only_arm) == (2.0, 1.0, [7])
    assert sts.half_width == pytest.approx(2.484, abs=5e-4)
    # every seed moved by exactly -10: zero spread is no evidence of a loss beyond the noise (issue 21)
    assert (se.mean, se.std, se.low, se.high, se.half_width) == (-10.0, 0.0, None, None, None)
    assert "interval is undefined" in se.verdict and "noise (95 %" not in se.verdict
    assert (none.n, none.mean) == (1, -5.0)
    text = render.render_compare([comp_cpu, comp_smoke])
    assert "[-0.48, +4.48]" in text and "fixmatch · sts: 7" in text and "only the baseline" in text
    se_line = next(line for line in text.splitlines() if line.startswith("| fixmatch · se − "))
    assert "| undefined |" in se_line and "larger than the seed noise" not in se_line
    with pytest.raises(lb.LeaderboardError, match="finished .algorithm, labels. there: fixmatch/40"):
        cmp.compare(tmp_path, alg="fixmatch", dataset="cifar10_subset", labels=250)


# ------------------------------------------------------------------ command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run_bench.py")
    add_subcommands(parser.add_subparsers(dest="command"))
    return parser


def test_cli_leaderboard_prints_and_writes_the_unfiltered_markdown_only_when_asked(tmp_path, capsys):
    write_run(tmp_path, median=40.0)
    for argv in ([], ["--format", "csv"], ["--format", "json"], ["--profile", "cpu"]):
        args = _parser().parse_args(["leaderboard", "--results-dir", str(tmp_path), *argv])
        assert args.func(args) == 0
    assert "40.0 (n=1)" in capsys.readouterr().out and not (tmp_path / "LEADERBOARD.md").exists()
    args = _parser().parse_args(["leaderboard", "--results-dir", str(tmp_path), "--format", "csv", "--write"])
    assert args.func(args) == 0
    written = (tmp_path / "LEADERBOARD.md").read_text()
    assert written.startswith("#") and "40.0 (n=1)" in written   # the markdown board, whatever was printed
    assert f"ssl-bench leaderboard --results-dir {tmp_path}" in written
    args = _parser().parse_args(["leaderboard", "--results-dir", str(tmp_path), "--profile", "gpu"])
    assert args.func(args) == 2 and "profiles present: cpu" in capsys.readouterr().err


def test_cli_rejects_invalid_choices_listing_the_valid_ones(capsys):
    for argv in (["leaderboard", "--format", "xml"], ["leaderboard", "--stat", "mean"],
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


def test_changed_hyper_parameters_get_a_row_of_their_own_and_no_paper_number(tmp_path):
    paper_run(tmp_path, seed=0, median=40.0)
    paper_run(tmp_path, seed=0, median=10.0, run_id="override", alg_overrides={"threshold": 0.5},
              alg_args={"threshold": 0.5, "lambda_u": 1.0})
    paper_run(tmp_path, seed=1, median=20.0, run_id="lr", lr=0.1)   # a changed optimizer setting counts too
    text = render.render(lb.build_leaderboard(tmp_path), "markdown")
    assert markdown_row(text, "fixmatch · tma")[2] == "40.0 (n=1, last) | 92.06"
    assert markdown_row(text, "fixmatch · tma (threshold=0.5)")[2] == "10.0 (n=1)"
    assert markdown_row(text, "fixmatch · tma (lr=0.1)")[2] == "20.0 (n=1)"


def test_paper_configuration_is_decided_from_the_effective_settings(tmp_path):
    # The reference's threshold given with --alg-arg: the same experiment as the default run, same row.
    paper_run(tmp_path, seed=0, median=40.0)
    paper_run(tmp_path, seed=1, median=44.0, alg_overrides={"threshold": "0.95"},
              alg_args={"threshold": 0.95, "lambda_u": 1.0})
    # MixMatch with the reference's ratio (mu = 1) gets the paper number; with FixMatch's mu = 7 it does not.
    paper_run(tmp_path, algorithm="mixmatch", alg_args={"beta": 0.5}, mu=1, lr=0.002, weight_decay=4e-4,
              labels=250, median=85.0)
    paper_run(tmp_path, algorithm="mixmatch", alg_args={"beta": 0.5}, mu=7, lr=0.002, weight_decay=4e-4,
              labels=250, median=86.0, run_id="mixmatch-mu7")
    # A record that does not say its learning rate (schema 1) cannot be shown to run the paper's settings.
    paper_run(tmp_path, algorithm="fixmatch", smooth="sts", schema=1, median=41.0)
    board = lb.build_leaderboard(tmp_path)
    rows = {row.label: row for row in board.sections[0].rows}
    assert (rows["fixmatch · tma"].cells[40].n, rows["fixmatch · tma"].cells[40].paper) == (2, 92.06)
    assert rows["mixmatch · tma"].cells[250].paper == 88.95
    assert rows["mixmatch · tma (mu=7)"].cells[250].paper is None
    assert rows["fixmatch · sts"].cells[40].paper is None
    ordinary = write_run(tmp_path / "plain", median=40.0)   # the cpu profile with reference settings
    assert not paper.is_paper_configuration(read(ordinary), lb.smoothing_settings(read(ordinary)))


def test_a_plugin_without_a_reference_gets_rows_by_its_overrides(tmp_path):
    paper_run(tmp_path, algorithm="my_alg", seed=0, median=40.0)
    paper_run(tmp_path, algorithm="my_alg", seed=1, median=10.0, alg_overrides={"threshold": 0.5})
    text = render.render_markdown(lb.build_leaderboard(tmp_path))
    assert markdown_row(text, "my_alg · tma")[2] == "40.0 (n=1)"   # not in the paper's table
    assert markdown_row(text, "my_alg · tma (threshold=0.5)")[2] == "10.0 (n=1)"


def test_the_registrys_own_reference_gives_the_paper_number(tmp_path, reference, monkeypatch):
    monkeypatch.undo()   # the registry's reference_configuration, not the stand-in
    settings = algorithm.reference_configuration("fixmatch", "cifar10")
    alg_args = {k: v for k, v in settings.items() if k not in lb.RunRecord.__dataclass_fields__}
    fields = {k: v for k, v in settings.items() if k in lb.RunRecord.__dataclass_fields__}
    paper_run(tmp_path, median=40.0, alg_args=alg_args, **fields)
    assert lb.build_leaderboard(tmp_path).sections[0].rows[0].cells[40].paper == 92.06


def test_a_record_naming_a_plugin_file_does_not_make_the_leaderboard_import_it(tmp_path, reference,
                                                                               monkeypatch):
    monkeypatch.undo()   # the registry's own lookup
    marker = tmp_path / "ran"
    plugin = tmp_path / "evil.py"
    plugin.write_text(f"open({str(marker)!r}, 'w').close()\n")
    paper_run(tmp_path / "results", algorithm=str(plugin), median=40.0, run_id="by-path")
    paper_run(tmp_path / "results", algorithm="evil", median=40.0, run_id="by-name")
    monkeypatch.chdir(tmp_path)   # ./algorithms/ would be searched for plug-ins by name
    (tmp_path / "algorithms").mkdir()
    (tmp_path / "algorithms" / "evil.py").write_text(plugin.read_text())
    board = lb.build_leaderboard(tmp_path / "results")
    assert len(board.sections[0].rows) == 2 and not marker.exists()


def read(run_dir: Path) -> lb.RunRecord:
    return lb.RunRecord.read(run_dir)


def test_markdown_always_carries_the_papers_whole_table_for_reference(tmp_path):
    write_run(tmp_path, m=0.99, median=30.0)   # a scaled run: no per-cell paper number
    text = render.render(lb.build_leaderboard(tmp_path), "markdown")
    reference = text.split("## The paper's Table 6, for reference", 1)[1]
    sts_row = next(line for line in reference.splitlines() if line.startswith("| FixMatch (STS) |"))
    assert sts_row.split(" | ")[3:5] == ["93.31", "93.89"]
    assert "| UDA | uda · tma | median |  | 70.95 | 81.18 |" in reference


# ------------------------------------------------------------------ statuses, baselines, shared trainings


def test_stale_runs_are_listed_as_stale_and_never_counted(tmp_path, monkeypatch):
    write_run(tmp_path, seed=0, median=40.0)
    dead = write_run(tmp_path, seed=1, status="running", median=99.0)
    alive = write_run(tmp_path, seed=2, status="running", median=98.0)
    # no lock: its process released it but its last record write failed (a full disk): stale too
    unlocked = write_run(tmp_path, seed=3, status="running", median=97.0)
    holders = {dead: False, alive: True, unlocked: None}
    monkeypatch.setattr(lock, "holder_alive", lambda run_dir: holders[Path(run_dir)])
    board = lb.build_leaderboard(tmp_path)
    assert board.sections[0].rows[0].cells[40].seeds == [0]
    assert sorted((nc.run.seed, nc.status) for nc in board.not_counted) == [
        (1, RunStatus.STALE), (2, RunStatus.RUNNING), (3, RunStatus.STALE)]
    table = render.render_markdown(board).split("## Runs not counted")[1]
    stale_line = next(line for line in table.splitlines() if dead.name in line)
    assert "| stale |" in stale_line and "--resume" in stale_line
    data = json.loads(render.render_json(board))
    statuses = {nc["seed"]: nc["status"] for nc in data["not_counted"]}
    assert statuses == {1: "stale", 2: "running", 3: "stale"}


def test_interrupted_runs_are_listed_apart(tmp_path):
    write_run(tmp_path, seed=0, status="interrupted", median=30.0)
    (nc,) = lb.build_leaderboard(tmp_path).not_counted
    assert (nc.status, "--resume" in nc.reason) == (RunStatus.INTERRUPTED, True)


def test_supervised_baseline_heads_every_section_and_its_absence_is_said(tmp_path):
    write_run(tmp_path, algorithm="supervised", alg_args={}, mu=1, median=30.0)
    write_run(tmp_path, median=40.0)
    write_run(tmp_path, profile="short", steps=100, median=41.0)   # a section without the baseline
    write_run(tmp_path, profile="smoke", steps=8, median=10.0)     # measures nothing: no note needed
    board = lb.build_leaderboard(tmp_path)
    short, cpu, smoke = board.sections
    assert [r.label for r in cpu.rows] == ["supervised · tma", "fixmatch · tma"]
    assert (cpu.needs_baseline, short.needs_baseline, smoke.needs_baseline) == (False, True, False)
    text = render.render_markdown(board)
    notes = [line for line in text.splitlines() if line.startswith("- no `supervised` runs")]
    assert len(notes) == 1 and text.index(notes[0]) < text.index("## profile cpu")


def test_fully_labelled_ceiling_is_a_section_note_not_a_budget_column(tmp_path):
    for seed, acc in enumerate([90.0, 92.0]):
        write_run(tmp_path, algorithm="supervised", alg_args={}, mu=1, labels=50000, train_size=50000,
                  seed=seed, median=acc)
    write_run(tmp_path, algorithm="supervised", alg_args={}, mu=1, median=30.0)
    write_run(tmp_path, labels=50000, train_size=50000, median=91.0)   # FixMatch with every label: a cell
    board = lb.build_leaderboard(tmp_path)
    (section,) = board.sections
    assert 50000 in section.columns and 50000 not in section.rows[0].cells
    (ceiling,) = section.ceilings
    assert ceiling.cells[50000].values == [90.0, 92.0]
    text = render.render_markdown(board)
    note = "- fully-labelled ceiling: supervised · tma with all 50000 training labels: 91.0 ± 1.4 (n=2)"
    assert note in text
    rows = list(csv.DictReader(io.StringIO(render.render_csv(board))))
    assert [(r["method"], r["labels"], r["ceiling"]) for r in rows] == [
        ("supervised · tma", "40", "False"), ("fixmatch · tma", "50000", "False"),
        ("supervised · tma", "50000", "True")]


def test_table4_ablation_from_shared_trainings_keeps_every_variant_apart(tmp_path):
    """FixMatch SE/STS x layer/channel/neuron x p from one training per seed: 12 rows, none merged."""
    variants = [("se", g, 0.5) for g in ("layer", "channel", "neuron")]
    variants += [("sts", g, p) for g in ("layer", "channel", "neuron") for p in (0.3, 0.5, 0.7)]
    for seed in range(2):
        for k, (smooth, granularity, p) in enumerate(variants):
            write_run(tmp_path, smooth=smooth, granularity=granularity, p=p, seed=seed,
                      median=50.0 + k + seed,
                      training=f"fixmatch-cifar10_subset-40-s{seed}", teacher=f"{smooth}-{granularity}-{p}")
    board = lb.build_leaderboard(tmp_path)
    (section,) = board.sections
    labels = [row.label for row in section.rows]
    assert len(labels) == len(set(labels)) == 12
    assert labels[:4] == ["fixmatch · se", "fixmatch · se (channel)", "fixmatch · se (neuron)",
                          "fixmatch · sts (p=0.3)"]
    assert "fixmatch · sts (neuron, p=0.7)" in labels
    assert all(cell.n == 2 for row in section.rows for cell in row.cells.values())
    assert section.shared_trainings() == {"fixmatch-cifar10_subset-40-s0": 12,
                                          "fixmatch-cifar10_subset-40-s1": 12}
    assert "24 of these runs come from 2 shared trainings" in render.render_markdown(board)


def test_buffers_policy_splits_rows_only_where_the_strategy_reads_it(tmp_path):
    write_run(tmp_path, smooth="tma", median=40.0)
    write_run(tmp_path, smooth="tma", buffers="average", median=41.0)
    write_run(tmp_path, smooth="se", median=42.0)
    write_run(tmp_path, smooth="se", buffers="average", seed=1, median=44.0)   # SE: average = copy
    labels = [row.label for row in lb.build_leaderboard(tmp_path).sections[0].rows]
    assert labels == ["fixmatch · tma", "fixmatch · tma (buffers=average)", "fixmatch · se"]


def test_gain_over_supervised_paired_by_seed_hand_worked(tmp_path):
    # FixMatch 60, 62, 67 vs supervised 55, 56, 58 (seeds 0-2): differences 5, 6, 9.
    # mean 20/3 = 6.6667; sample std sqrt(((5-m)^2 + (6-m)^2 + (9-m)^2) / 2) = sqrt(13/3) = 2.0817;
    # half-width t_{0.975,2} * s / sqrt(3) = 4.302653 * 2.081666 / 1.732051 = 5.171142 -> [1.4955, 11.8378].
    for seed, (ssl, sup) in enumerate([(60.0, 55.0), (62.0, 56.0), (67.0, 58.0)]):
        write_run(tmp_path, seed=seed, median=ssl)
        write_run(tmp_path, algorithm="supervised", alg_args={}, mu=1, seed=seed, median=sup)
    write_run(tmp_path, algorithm="supervised", alg_args={}, mu=1, seed=5, median=50.0)   # no partner
    write_run(tmp_path, smooth="sts", seed=0, median=70.0)   # no supervised sts: no gain row for it
    (sup_comp, fix_comp) = cmp.compare(tmp_path, dataset="cifar10_subset", labels=40)
    assert (sup_comp.algorithm, sup_comp.over_supervised) == ("supervised", [])
    (gain,) = fix_comp.over_supervised
    assert (gain.label, gain.baseline_label) == ("fixmatch · tma", "supervised · tma")
    d = gain.diff
    half = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025)) * math.sqrt(13 / 3) / math.sqrt(3)
    assert (d.n, d.seeds, d.only_baseline) == (3, [0, 1, 2], [5])
    assert d.mean == pytest.approx(20 / 3) and d.std == pytest.approx(math.sqrt(13 / 3))
    assert (d.low, d.high) == pytest.approx((20 / 3 - half, 20 / 3 + half), rel=1e-9)
    assert (round(d.low, 4), round(d.high, 4)) == (1.4955, 11.8378)
    assert "above 0" in d.verdict
    text = render.render_compare([fix_comp])
    assert "| fixmatch · tma − supervised · tma | 3 | +6.67 | 2.08 | [+1.50, +11.84] |" in text
    only_fix = cmp.compare(tmp_path, alg="fixmatch", dataset="cifar10_subset", labels=40)
    assert [c.algorithm for c in only_fix] == ["fixmatch"]
