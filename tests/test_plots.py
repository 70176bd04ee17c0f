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
    (labels,) = legends
    assert labels == 2 * ["fixmatch · sts (n=2)", "fixmatch · sts (channel, p=0.3) (n=2)",
                          "fixmatch · sts (channel) (n=2)"]


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
    with pytest.raises(plots.PlotError, match="no finished runs of algorithm='uda'"):
        plots.plot_rows(results, alg="uda", dataset="cifar10_subset", labels=40, out_dir=tmp_path / "f")
