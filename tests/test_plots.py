"""Figures from synthetic run directories: PNG files written, sections kept apart, clear errors."""

from __future__ import annotations

import argparse
import math

import pytest
from test_leaderboard import reference, write_run  # noqa: F401  (the writer and the stand-in reference)

from ssl_bench.report import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_metrics(offset: float = 0.0, evals: int = 8, every: int = 250) -> list[list]:
    """metrics.csv rows: accuracies rising with the step, msd decaying; the first row's msd is empty."""
    rows = []
    for i in range(1, evals + 1):
        msd = None if i == 1 else 1e-2 / i**2
        out_msd = None if i == 1 else 1e-3 / i
        rows.append([i * every, 0.03, 2.0 / i, 0.5, 20 + 5 * i + offset, 18 + 5 * i + offset, msd, out_msd,
                     1.5 * i])
    return rows


def is_png(path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_plot_accuracy_one_png_per_section_with_a_line_per_smoother(tmp_path):
    results = tmp_path / "results"
    for seed in range(3):
        for smooth in ("tma", "sts"):
            write_run(results, smooth=smooth, seed=seed, metrics=synthetic_metrics(seed + (smooth == "sts")))
    write_run(results, profile="smoke", steps=20, metrics=synthetic_metrics(evals=2, every=10))
    write_run(results, seed=9, status="failed", median=None, metrics=synthetic_metrics(50))  # not drawn
    paths = plots.plot_accuracy(results, alg="fixmatch", dataset="cifar10_subset", labels=40,
                                out_dir=tmp_path / "fig")
    assert [p.name for p in paths] == ["accuracy-fixmatch-cifar10_subset-40-cpu-wrn28_2-2000.png",
                                       "accuracy-fixmatch-cifar10_subset-40-smoke-wrn28_2-20.png"]
    assert all(is_png(p) for p in paths)
    assert not [p for p in (tmp_path / "fig").iterdir() if p.suffix != ".png"]  # no temp file left
    only = plots.plot_accuracy(results, alg="fixmatch", dataset="cifar10_subset", labels=40, profile="smoke",
                               out_dir=tmp_path / "fig2")
    assert [p.name for p in only] == ["accuracy-fixmatch-cifar10_subset-40-smoke-wrn28_2-20.png"]


def test_plot_smoothness_by_run_id_and_by_directory_skipping_the_empty_first_row(tmp_path):
    results = tmp_path / "results"
    tma = write_run(results, smooth="tma", metrics=synthetic_metrics())
    none = write_run(results, smooth="none", metrics=synthetic_metrics())
    (one,) = plots.plot_smoothness([tma.name], results_dir=results, out_dir=tmp_path / "fig")
    assert one.name == f"smoothness-{tma.name}.png" and is_png(one)
    (two,) = plots.plot_smoothness([str(tma), str(none)], results_dir=tmp_path / "elsewhere",
                                   out_dir=tmp_path / "fig")
    assert two.name.startswith(f"smoothness-{tma.name}-and-1-more-") and is_png(two)


def test_read_metrics_skips_empty_and_half_written_values(tmp_path):
    run = write_run(tmp_path, metrics=synthetic_metrics(evals=3))
    with open(run / "metrics.csv", "a", encoding="utf-8") as fh:
        fh.write("1000,0.03,1.2")  # a line the loop is still writing
    metrics = plots.read_metrics(run / "metrics.csv")
    assert metrics["step"] == [250.0, 500.0, 750.0, 1000.0]
    assert math.isnan(metrics["teacher_param_msd"][0]) and math.isnan(metrics["teacher_acc"][3])
    assert plots._curve(metrics, "teacher_param_msd", positive=True)[0] == [500.0, 750.0]


def test_no_matching_runs_is_a_clear_error_saying_what_was_searched(tmp_path):
    write_run(tmp_path, metrics=synthetic_metrics())
    with pytest.raises(plots.PlotError, match=r"labels=250.*searched 1 records.*labels \[40\]"):
        plots.plot_accuracy(tmp_path, alg="fixmatch", dataset="cifar10_subset", labels=250,
                            out_dir=tmp_path / "f")
    with pytest.raises(plots.PlotError, match="no metrics.csv in 'nope' or"):
        plots.plot_smoothness(["nope"], results_dir=tmp_path, out_dir=tmp_path / "f")
    no_msd = write_run(tmp_path, seed=1, metrics=[[100, 0.03, 1.0, 0.5, 20, 18, None, None, 1.0]])
    with pytest.raises(plots.PlotError, match="no positive teacher_param_msd"):
        plots.plot_smoothness([no_msd], results_dir=tmp_path, out_dir=tmp_path / "f")


def test_cli_plot_prints_the_written_paths(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="run_bench.py")
    plots.add_subcommands(parser.add_subparsers(dest="command"))
    run = write_run(tmp_path, metrics=synthetic_metrics())
    args = parser.parse_args(["plot", "smoothness", "--run", run.name, "--results-dir", str(tmp_path),
                              "--out", str(tmp_path / "fig")])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "fig" / f"smoothness-{run.name}.png")
    args = parser.parse_args(["plot", "accuracy", "--alg", "mixmatch", "--dataset", "cifar10_subset",
                              "--labels",
                              "40", "--results-dir", str(tmp_path), "--out", str(tmp_path / "fig")])
    assert args.func(args) == 2 and "no finished runs match algorithm='mixmatch'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["plot", "histogram"])
    assert "invalid choice: 'histogram'" in capsys.readouterr().err


def test_plot_accuracy_keeps_granularity_and_p_variants_apart(tmp_path, monkeypatch):
    results = tmp_path / "results"
    for seed in range(2):
        for granularity, p in (("layer", 0.5), ("channel", 0.5), ("channel", 0.3)):
            write_run(results, smooth="sts", granularity=granularity, p=p, seed=seed,
                      training=f"t{seed}", metrics=synthetic_metrics(seed))
    legends = []

    def capture(fig, path):
        legends.append([t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()])
        return path

    monkeypatch.setattr(plots, "_save", capture)
    plots.plot_accuracy(results, alg="fixmatch", dataset="cifar10_subset", labels=40, out_dir=tmp_path / "fig")
    (labels,) = legends   # the student once (the teachers of a training share it), then the sts panel
    assert labels == ["student (shared by the 3 teachers)", "student (mean)", "sts (n=2)",
                      "sts (channel, p=0.3) (n=2)", "sts (channel) (n=2)"]


def _inside(inner, outer, slack: float = 1.0) -> bool:
    return (inner.x0 >= outer.x0 - slack and inner.y0 >= outer.y0 - slack and inner.x1 <= outer.x1 + slack
            and inner.y1 <= outer.y1 + slack)


def test_plot_accuracy_of_a_20_teacher_training_stays_readable(tmp_path, monkeypatch):
    """The Table-4 ablation (none, tma, 9 se, 9 sts teachers of one training): the student drawn once, a panel per
    strategy whose lines all differ in colour, every legend below its axes and every label inside the figure."""
    results = tmp_path / "results"
    variants = [("none", "layer", 0.5), ("tma", "layer", 0.5)] + [
        (smooth, g, p) for smooth in ("se", "sts") for g in ("layer", "channel", "neuron") for p in (0.3, 0.5, 0.7)]
    for seed in range(2):
        for i, (smooth, granularity, p) in enumerate(variants):
            rows = synthetic_metrics(seed)
            for row in rows:
                row[4] += i / 4   # each teacher its own curve; the student column is the shared training's
            write_run(results, smooth=smooth, granularity=granularity, p=p, seed=seed, training=f"t{seed}",
                      metrics=rows)
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plots.plot_accuracy(results, alg="fixmatch", dataset="cifar10_subset", labels=40, out_dir=tmp_path / "fig")
    (fig,) = drawn
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["student top-1", "teacher top-1: none", "teacher top-1: tma",
                                                 "teacher top-1: se", "teacher top-1: sts"]
    assert len(panels[0].lines) == 1                                   # one student, not 20 copies
    assert [len(ax.lines) - 1 for ax in panels[1:]] == [1, 1, 9, 9]   # teachers (+ the dashed student reference)
    for ax in panels[1:]:
        colours = [line.get_color() for line in ax.lines]
        assert len(set(map(str, colours))) == len(colours), ax.get_title()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in panels:
        legend, box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert legend.y1 <= box.y0 and _inside(legend, fig.bbox)         # below its axes, inside the figure
        assert _inside(ax.get_tightbbox(renderer), fig.bbox), ax.get_title()   # every drawn label, none cut


def test_cli_compare_without_alg_reports_every_algorithm(tmp_path, capsys):
    from ssl_bench.report.cli import add_subcommands

    for seed in range(2):
        write_run(tmp_path, seed=seed, median=50.0 + seed)
        write_run(tmp_path, algorithm="supervised", alg_args={}, mu=1, seed=seed, median=40.0)
    parser = argparse.ArgumentParser(prog="run_bench.py")
    add_subcommands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compare", "--dataset", "cifar10_subset", "--labels", "40",
                              "--results-dir", str(tmp_path)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "## supervised, fixmatch, 40 labels" in out
    assert "| fixmatch · tma − supervised · tma | 2 | +10.50 | 0.71 |" in out


def test_plot_rows_draws_each_row_with_the_supervised_baseline(tmp_path, monkeypatch):
    results = tmp_path / "results"
    for seed in range(2):
        write_run(results, algorithm="supervised", alg_args={}, mu=1, seed=seed, median=40.0)
        for granularity in ("layer", "channel", "neuron"):
            write_run(results, smooth="sts", granularity=granularity, seed=seed, median=50.0 + seed)
    write_run(results, algorithm="mixmatch", seed=0, median=45.0)   # another algorithm: not drawn
    (path,) = plots.plot_rows(results, alg="fixmatch", dataset="cifar10_subset", labels=40, out_dir=tmp_path / "f")
    assert path.name == "rows-fixmatch-cifar10_subset-40-cpu-wrn28_2-2000.png" and is_png(path)
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plots.plot_rows(results, alg="fixmatch", dataset="cifar10_subset", labels=40, out_dir=tmp_path / "f")
    (ax,) = drawn[0].axes
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "supervised · tma (n=2)", "fixmatch · sts (n=2)", "fixmatch · sts (channel) (n=2)",
        "fixmatch · sts (neuron) (n=2)"]
    means = [float(c.lines[0].get_ydata()[0]) for c in ax.containers]
    assert means == [40.0, 50.5, 50.5, 50.5]
    drawn[0].canvas.draw()
    renderer = drawn[0].canvas.get_renderer()
    assert _inside(ax.get_tightbbox(renderer), drawn[0].bbox)   # the y label and the rotated names are never cut
    with pytest.raises(plots.PlotError, match="no finished runs of algorithm='uda'"):
        plots.plot_rows(results, alg="uda", dataset="cifar10_subset", labels=40, out_dir=tmp_path / "f")


def test_plot_rows_of_an_ablation_never_cuts_its_labels(tmp_path, monkeypatch):
    results = tmp_path / "results"
    for seed in range(2):
        write_run(results, algorithm="supervised", alg_args={}, mu=1, seed=seed, median=40.0, m=0.99)
        for smooth in ("se", "sts"):
            for granularity in ("layer", "channel", "neuron"):
                for p in (0.3, 0.5, 0.7):
                    write_run(results, smooth=smooth, granularity=granularity, p=p, m=0.99, seed=seed,
                              median=50.0 + seed)
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig) or path)
    plots.plot_rows(results, alg="fixmatch", dataset="cifar10_subset", labels=40, out_dir=tmp_path / "f")
    (fig,) = drawn
    (ax,) = fig.axes
    assert len(ax.get_xticklabels()) == 19
    fig.canvas.draw()
    assert _inside(ax.get_tightbbox(fig.canvas.get_renderer()), fig.bbox)   # y label and rotated names inside


def test_plot_grid_cells_are_paired_differences_from_the_profile_tma(tmp_path):
    """Figure 4's grid on hand-made records: TMA at m = 0.99 (the cpu profile's) is the reference; each cell is the
    mean over seeds of (teacher - reference), seed by seed; a TMA at another m is the p = 0 cell of its row."""
    from ssl_bench.report.leaderboard import build_leaderboard

    results = tmp_path / "results"
    by_seed = {("tma", 0.0, 0.99): (80.0, 70.0), ("tma", 0.0, 0.999): (60.0, 56.0),
               ("se", 0.5, None): (81.0, 73.0), ("sts", 0.5, 0.99): (79.0, 71.0), ("sts", 0.5, 0.999): (40.0, 30.0)}
    for (smooth, p, m), values in by_seed.items():
        for seed, value in enumerate(values):
            write_run(results, smooth=smooth, p=p if smooth != "tma" else None, m=m, seed=seed, median=value,
                      dataset="digits", dataset_kind="embedded", dataset_family=None)
    board = build_leaderboard(results, stat="median", dataset="digits")
    (section,) = board.sections
    cells, base = plots.grid_cells(section.rows, 40, m_ref=0.99)
    assert base.key.smooth == "tma" and base.key.m == 0.99
    means = {k: d.mean for k, d in cells.items()}
    assert means == {(0.0, 0.99): 0.0, (0.0, 0.999): pytest.approx(-17.0), (0.5, 0.0): pytest.approx(2.0),
                     (0.5, 0.99): pytest.approx(0.0), (0.5, 0.999): pytest.approx(-40.0)}
    # (se - tma) by seed: +1, +3 -> mean 2, sd sqrt(2), t(0.975, 1) = 12.706: interval 2 +- 12.706
    assert cells[(0.5, 0.0)].high == pytest.approx(2.0 + 12.7062 * 1.0, abs=1e-3)
    assert plots.grid_cells(section.rows, 40, m_ref=0.9) is None        # no reference TMA at that m
    (png,) = plots.plot_grid(results, alg="fixmatch", dataset="digits", labels=40, out_dir=tmp_path / "figs")
    assert is_png(png)
