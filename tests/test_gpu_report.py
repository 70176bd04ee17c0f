"""benchmarks/gpu_report.py: the quick CPU mode runs the report's whole code path and writes a complete
JSON; a failing case is reported while the rest is measured; the budget skips and names what it cannot hold.

The quick mode's numbers mean nothing (tiny CNN, tiny batch, two steps): these tests check that every figure
is there, positive and consistent with the others, so the report cannot rot between the rare GPU sessions.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_report.py"
ROLES = ("wrn28_2", "wrn28_8")
CASES = ("plain", "fp32", "channels_last", "amp", "compile", "all")


def load_gpu_report():
    """The script as a module (registered, as its dataclasses need), loaded once."""
    if "gpu_report" not in sys.modules:
        spec = importlib.util.spec_from_file_location("gpu_report", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpu_report"] = module
        spec.loader.exec_module(module)
    return sys.modules["gpu_report"]


def strict_json(path: Path) -> dict:
    """The report as strict JSON: NaN / Infinity would break other readers of the file."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def positive(value: object) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0


def test_quick_report_measures_every_figure(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = strict_json(out)

    assert report["quick"] is True and report["failed"] == [] and report["skipped"] == []
    assert all(s["status"] == "ok" for s in report["sections"].values()), report["sections"]
    env_keys = {"gpu", "driver", "cuda", "torch", "python", "ssl_bench", "commit"}
    assert env_keys <= set(report["environment"]) and report["environment"]["torch"] == torch.__version__

    for role in ROLES:
        entry = report["steps"][role]
        assert entry["images_per_step"] == entry["batch"] + 2 * entry["unlabeled"] == 4 + 2 * 8
        assert entry["classes"] == {"wrn28_2": 10, "wrn28_8": 100}[role]
        assert list(entry["cases"]) == list(CASES)   # compile cases run last, still in this order
        for case, r in entry["cases"].items():
            assert r["status"] == "ok", (role, case, r)
            for key in ("steps_per_s", "step_ms", "projected_2p20_s", "input_ms", "vs_plain"):
                assert positive(r[key]), (role, case, key, r[key])
            assert r["timed_steps"] == 2 and r["warmup_steps"] == 1
            assert r["step_ms_min"] <= r["step_ms"] <= r["step_ms_max"]
            assert r["steps_per_s"] == pytest.approx(1e3 / r["step_ms"])
            assert r["projected_2p20_s"] == pytest.approx(2**20 * r["step_ms"] / 1e3)
            assert r["peak_memory_gib"] is None   # CUDA only
        assert entry["cases"]["plain"]["vs_plain"] == pytest.approx(1.0)
        assert entry["cases"]["compile"]["compile_backend"] == "eager"
        verdicts = entry["verdicts"]   # the fastest fast case against the README's targets
        fastest = max(CASES[1:], key=lambda c: entry["cases"][c]["steps_per_s"])
        assert verdicts["fastest"] == fastest and verdicts["vs_plain"] == entry["cases"][fastest]["vs_plain"]
        assert verdicts["vs_plain_verdict"] == ("met" if verdicts["vs_plain"] >= 5 else "missed")
        assert ("protocol_hours_verdict" in verdicts) == (role == "wrn28_2")

        smoothing = report["smoothing"][role]
        pairs = {(r["strategy"], r["granularity"]) for r in smoothing["rows"]}
        assert pairs == {(s, g) for s in ("none", "tma", "se", "sts", "swa") for g in ("layer", "channel", "neuron")}
        assert positive(smoothing["fused_ema_ms"]) and positive(smoothing["step_ms"])
        for r in smoothing["rows"]:
            assert positive(r["ms"])
            assert r["share_of_step"] == pytest.approx(r["ms"] / smoothing["step_ms"])
            assert r["vs_fused_ema"] == pytest.approx(r["ms"] / smoothing["fused_ema_ms"])
        assert {smoothing["share_verdict"], smoothing["neuron_verdict"]} <= {"met", "missed"}

        teachers = report["teachers"][role]
        assert set(teachers["n"]) == {"1", "4"} and teachers["test_images"] == 256
        assert teachers["teachers"] == ["tma", "sts", "se", "none"]
        for r in teachers["n"].values():
            assert all(positive(r[k]) for k in ("step_ms", "evaluate_ms", "projected_2p20_s"))
            assert r["step_plus_evaluate_ms"] == pytest.approx(r["step_ms"] + r["evaluate_ms"])
        for n, r in teachers["n"].items():   # 1 step + N smoother updates + N teacher evaluations
            one_eval = teachers["one_teacher_evaluation_ms"]
            assert r["step_plus_teacher_evaluations_ms"] == pytest.approx(r["step_ms"] + int(n) * one_eval)
            per_step = (r["step_ms"] + r["evaluate_ms"] / teachers["eval_every"]) / 1e3
            assert r["projected_2p20_s"] == pytest.approx(2**20 * per_step)
        one = teachers["n"]["1"]["projected_2p20_s"]
        assert teachers["separate_trainings_2p20_s"] == pytest.approx(4 * one)
        assert teachers["vs_one_teacher"] == pytest.approx(teachers["n"]["4"]["projected_2p20_s"] / one)

    rows = report["augment"]["rows"]
    assert [r["batch"] for r in rows] == [8, 64]
    assert all(positive(r[k]) for r in rows for k in ("weak_images_per_s", "strong_images_per_s"))
    assert report["augment"]["verdict"].startswith(("met", "missed"))

    # Printed as it goes, then the summary table: one row per model and case.
    assert "| model | case | options | steps/s |" in proc.stdout
    assert sum(line.startswith(f"| {role} | ") for line in proc.stdout.splitlines() for role in ROLES) == 12
    assert proc.stdout.count(" steps/s ") >= 12   # the per-case lines printed while measuring


def test_a_failing_case_is_reported_and_the_others_measured(tmp_path, monkeypatch):
    gpu_report = load_gpu_report()
    real = gpu_report.fast_contender

    def fail_amp(base, variant):
        if variant == "amp":
            raise RuntimeError("no bf16 kernel for this op\nsecond line of the message")
        return real(base, variant)

    monkeypatch.setattr(gpu_report, "fast_contender", fail_amp)
    out = tmp_path / "report.json"
    report = gpu_report.main(["--device", "cpu", "--quick", "--models", "wrn28_2", "--sections", "steps",
                              "--cases", "fp32,amp,channels_last", "--out", str(out)])
    cases = report["steps"]["wrn28_2"]["cases"]
    assert cases["amp"]["status"] == "failed"
    error = cases["amp"]["error"]
    assert error.startswith("RuntimeError: no bf16 kernel for this op (at test_gpu_report.py:")
    assert "\n" not in error
    assert cases["fp32"]["status"] == cases["channels_last"]["status"] == "ok"   # measured before and after
    assert report["failed"] == ["steps:wrn28_2:amp"] and report["skipped"] == []
    assert strict_json(out) == json.loads(json.dumps(report))


def test_no_budget_left_skips_every_section_and_names_it(tmp_path):
    gpu_report = load_gpu_report()
    out = tmp_path / "report.json"
    report = gpu_report.main(["--device", "cpu", "--quick", "--budget-s", "0", "--out", str(out)])
    assert report["failed"] == []
    assert set(report["skipped"]) == set(report["sections"]) and "environment" in report["skipped"]
    assert {f"steps:{role}:{case}" for role in ROLES for case in CASES} <= set(report["skipped"])
    assert {"augment", "smoothing:wrn28_2", "teachers:wrn28_8"} <= set(report["skipped"])
    assert all(s["reason"].startswith("budget: 0 s left of 0 s") for s in report["sections"].values())
    assert strict_json(out)["skipped"] == report["skipped"]


def test_guard_records_a_budget_stop_a_failure_and_a_section_that_does_not_fit(tmp_path):
    gpu_report = load_gpu_report()
    report = gpu_report.Report(tmp_path / "r.json", {"sections": {}})
    budget = gpu_report.Budget(60.0)

    def out_of_budget() -> None:
        gpu_report.Budget(0.0).check("in the third timed step")

    def broken() -> None:
        raise ValueError("bad value")

    called = []
    gpu_report.guarded(report, "a", 0.0, budget, out_of_budget)
    gpu_report.guarded(report, "b", 0.0, budget, broken)
    gpu_report.guarded(report, "c", 120.0, budget, lambda: called.append(1))   # needs more than is left
    gpu_report.guarded(report, "d", 1.0, budget, lambda: called.append(2))
    sections = report.data["sections"]
    assert sections["a"]["status"] == "skipped"
    assert "ran out in the third timed step" in sections["a"]["reason"]
    assert sections["b"]["status"] == "failed"
    assert sections["b"]["error"].startswith("ValueError: bad value (at test_gpu_report.py:")
    assert sections["c"]["status"] == "skipped" and "needs ~120 s" in sections["c"]["reason"]
    assert sections["d"]["status"] == "ok" and called == [2]
    assert strict_json(tmp_path / "r.json")["failed"] == ["b"]


def test_a_case_that_reaches_the_end_of_the_budget_keeps_its_timed_steps(tmp_path):
    gpu_report = load_gpu_report()
    args = gpu_report.parse_args(["--device", "cpu", "--quick", "--steps", "10"])
    settings = gpu_report.settings_from(args)
    device = torch.device("cpu")
    base, data = gpu_report.step_config("tiny", settings.batch, settings.mu, device, tmp_path,
                                        settings.standin_images, real=False, family_of="wrn28_2")
    bench = gpu_report.ModelBench("wrn28_2", base, data, device, gpu_report.device_sync(device), settings)

    class Ending(gpu_report.Budget):
        """Time left for the warm-up step's check, none from then on."""
        calls = 0

        def left(self) -> float:
            self.calls += 1
            return 60.0 if self.calls == 1 else -1.0

    result = gpu_report.measure_case(bench, "fp32", Ending(60.0))
    assert result["status"] == "ok" and result["stopped_by"] == "budget"
    assert result["warmup_steps"] == 1 and result["timed_steps"] == gpu_report.MIN_TIMED_STEPS < 10
    with pytest.raises(gpu_report.OutOfBudget, match="during the warm-up of wrn28_2 fp32"):
        gpu_report.measure_case(bench, "fp32", gpu_report.Budget(0.0))


@pytest.mark.parametrize("argv, message", [
    (["--cases", "fp32,fp64"], "--cases 'fp32,fp64': expected a comma list from plain,fp32,"),
    (["--device", "tpu"], "--device 'tpu': expected cuda, cuda:N or cpu"),
    (["--steps", "0"], "--steps 0: expected a positive integer"),
    (["--cuda-graphs"], "--cuda-graphs: CUDA graphs need a CUDA device, not --device cpu"),
])
def test_bad_arguments_are_refused_in_one_line(argv, message, capsys):
    gpu_report = load_gpu_report()
    with pytest.raises(SystemExit) as exc:
        gpu_report.main(["--device", "cpu", *argv] if "--device" not in argv else argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_how_to_check_the_report(capsys):
    gpu_report = load_gpu_report()
    with pytest.raises(SystemExit):
        gpu_report.main([])
    assert "no CUDA device is available here; --device cpu --quick" in capsys.readouterr().err
