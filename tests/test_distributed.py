"""Data parallelism on CPU: two processes with gloo, started as torchrun starts them (RANK, WORLD_SIZE, ...).

Starting a process costs seconds (torch, the data), so one module-scoped launch of two ranks runs every
two-rank scenario (``_worker`` below) and saves what each rank saw; the tests check those results and run
the single-process references here.

What "equal to a single-process run" means: the ranks draw their own batches (per-rank streams) and,
without SyncBatchNorm, normalise with their own batch statistics, so a 2-rank run and a 1-process run are
two samples of the same training procedure, not the same computation. Exact statements: (1) with BatchNorm
frozen (eval mode), one data-parallel step on two halves of a batch equals the single-process step on the
whole batch to float32 round-off (1e-6); (2) every rank ends with bit-identical students, teachers and
algorithm modules; (3) the same world size resumes bit for bit. Statistical only: the final accuracy of a
2-rank run is close to the 1-process run's (on the smoke budget both are near chance, so this catches only
gross breakage).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import metric_rows

from ssl_bench.config import RunConfig
from ssl_bench.run.ranks import Ranks

WORLD_SIZE = 2
REMIX_ARGS = ["--alg", "remixmatch", "--smooth", "sts", "--dataset", "digits", "--labels", "20",
              "--profile", "smoke", "--device", "cpu", "--no-progress"]


def smoke(results_dir: Path, **changes) -> RunConfig:
    base = dict(algorithm="fixmatch", smooth="sts", granularity="channel", dataset="digits", labels=20,
                profile="smoke", results_dir=str(results_dir), device="cpu")
    base.update(changes)
    return RunConfig(**base)


# -- the two ranks ------------------------------------------------------------------------------------------------

def _watch_writes(root: Path, log: list[tuple[str, str]]) -> None:
    """Record every file or directory this process creates or writes under ``root`` (Python audit hooks)."""
    root_s = str(root)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and bool(flags & write_flags))
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "shutil.copyfile"):
            path, writing = args[0], True
        else:
            return
        if writing and isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(root_s):
            log.append((event, os.fsdecode(path)))

    sys.addaudithook(hook)


def _worker(out: Path, second_port: int) -> None:
    """One rank of the module's two-rank launch; saves what it saw to ``out/rank<r>.pt``."""
    import torch.distributed as dist

    import ssl_bench.run.loop as train_module
    from ssl_bench.algorithm import Batch
    from ssl_bench.cli import main
    from ssl_bench.run.build import build_training, check_ranks_agree
    from ssl_bench.run.loop import next_batch, train, training_step
    from ssl_bench.run.ranks import join

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    results = out / "results"
    seen: dict = {"rank": rank, "writes": []}
    if rank != 0:
        _watch_writes(results, seen["writes"])
    runs: list = []
    build = train_module.build_training
    train_module.build_training = lambda *a, **k: runs.append(build(*a, **k)) or runs[-1]

    # 1. The command line under torchrun's environment: train() joins the process group and leaves it.
    seen["cli_exit"] = main([*REMIX_ARGS, "--results-dir", str(results / "cli")])
    seen["remix"] = {name: {k: v.clone() for k, v in getattr(runs[-1], name).state_dict().items()}
                     for name in ("student", "teacher", "algorithm_module")}
    seen["remix_smoother_updates"] = runs[-1].teachers[0].smoother.state_dict()["num_updates"]

    # 2. The rest joins a group itself, as a script calling train() would (train() then leaves it alone).
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{second_port}", rank=rank, world_size=WORLD_SIZE)
    try:
        train(smoke(results / "odd", batch_size=9), progress=False)
    except ValueError as exc:
        seen["odd_batch_error"] = str(exc)

    # 3. Which labelled / unlabelled images each rank draws, through next_batch.
    with join(torch.device("cpu")) as ranks:
        run = build_training(smoke(results / "unused"), ranks)
        seen["labeled_set"] = torch.as_tensor(run.split.labeled)
        drawn: dict[str, list[torch.Tensor]] = {"labeled": [], "unlabeled": []}
        for name in drawn:
            stream = getattr(run.streams, name)
            stream.next = (lambda nxt, log: lambda n: log.append(nxt(n)) or log[-1])(stream.next, drawn[name])
        for _ in range(5):  # 20 labels at 8 / 2 per rank: one pass
            next_batch(run)
        seen["drawn"] = {k: torch.stack(v) for k, v in drawn.items()}
        # A rank that drifts is reported at the next evaluation, on every rank.
        check_ranks_agree(run)
        if rank == 1:
            with torch.no_grad():
                next(run.student.parameters()).add_(1e-3)
        try:
            check_ranks_agree(run)
        except RuntimeError as exc:
            seen["drift_error"] = str(exc)

    # 4. One step on two halves of a batch vs one process on the whole batch, BatchNorm frozen.
    config = smoke(results / "unused", alg_args={"threshold": "0"}, smooth="tma")  # every pseudo-label counts
    reference = build_training(config)
    batch = next_batch(reference)      # identical on every rank: same seeds
    with join(torch.device("cpu")) as ranks:
        run = build_training(config, ranks)
        b, u = len(batch.x) // WORLD_SIZE, len(batch.u[0]) // WORLD_SIZE
        half = Batch(x=batch.x[rank * b:(rank + 1) * b], y=batch.y[rank * b:(rank + 1) * b],
                     u=tuple(v[rank * u:(rank + 1) * u] for v in batch.u), progress=batch.progress,
                     num_classes=batch.num_classes, generator=batch.generator)
        for r in (run, reference):
            r.student.eval()
            r.teacher.eval()
        training_step(run, half)
        training_step(reference, batch)
        seen["step_grad_diff"] = max(float((p.grad - q.grad).abs().max())
                                     for p, q in zip(run.student.parameters(), reference.student.parameters(),
                                                     strict=True))
        seen["step_param_diff"] = max(float((p - q).abs().max())
                                      for p, q in zip(run.student.parameters(), reference.student.parameters(),
                                                      strict=True))
        seen["step_grad_size"] = max(float(p.grad.abs().max()) for p in reference.student.parameters())

    # 5. Resume: uninterrupted; stopped at step 3 and resumed with 2 ranks; a copy for a 1-process resume.
    seen["straight"] = train(smoke(results / "straight"), progress=False)
    seen["stopped"] = train(smoke(results / "resumed"), stop_at=3, progress=False)
    if rank == 0:
        shutil.copytree(seen["stopped"][1], out / "copy")
    seen["resumed"] = train(smoke(results / "resumed"), resume=True, progress=False)

    # 6. Teachers whose BatchNorm statistics are recomputed before each evaluation, and the end-of-training
    # corruption evaluation: every rank does both, so the ranks stay equal and none waits on rank 0.
    try:
        seen["recompute"] = train(smoke(results / "recompute", smooth="tma", buffers="recompute",
                                        corruptions="synthetic-c"), progress=False)[0]
    except RuntimeError as exc:
        seen["recompute"] = str(exc)

    dist.destroy_process_group()
    torch.save(seen, out / f"rank{rank}.pt")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    """Launch two ranks as torchrun would (env: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)."""
    out = tmp_path_factory.mktemp("ddp")
    master_port, second_port = _free_ports(2)
    procs = []
    for rank in range(WORLD_SIZE):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, str(out), str(second_port)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.monotonic() + 240
    while any(p.poll() is None for p in procs):
        failed = any(p.poll() not in (None, 0) for p in procs)
        if failed or time.monotonic() > deadline:   # one rank died or hangs: do not wait for the other
            for p in procs:
                if p.poll() is None:
                    p.kill()
            break
        time.sleep(0.2)
    logs = [p.communicate()[0] for p in procs]
    for rank, p in enumerate(procs):
        assert p.returncode == 0, f"rank {rank} exited with {p.returncode}:\n" + "\n".join(
            f"--- rank {r} ---\n{log[-4000:]}" for r, log in enumerate(logs))
    return out, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]


# -- tests ------------------------------------------------------------------------------------------------------

def test_students_teachers_and_algorithm_modules_identical_across_ranks(ranks):
    _, (zero, one) = ranks
    assert zero["cli_exit"] == one["cli_exit"] == 0
    assert zero["remix_smoother_updates"] == 8
    for name in ("student", "teacher", "algorithm_module"):   # ReMixMatch: rotation head + alignment windows
        assert zero["remix"][name].keys() == one["remix"][name].keys()
        for key, value in zero["remix"][name].items():
            assert torch.equal(value, one["remix"][name][key]), f"{name}.{key}"
    # ... and training moved them (the teacher by STS, the alignment windows by the batches).
    teacher, student = zero["remix"]["teacher"], zero["remix"]["student"]
    assert any(not torch.equal(teacher[k], student[k]) for k in student if student[k].is_floating_point())
    assert not torch.allclose(zero["remix"]["algorithm_module"]["p_model_history"][-1], torch.full((10,), 0.1))


def test_only_rank_0_writes_and_every_rank_gets_its_record(ranks):
    out, (zero, one) = ranks
    assert one["writes"] == [], "rank 1 wrote files"
    (run_dir,) = (out / "results" / "cli").iterdir()
    assert {p.name for p in run_dir.iterdir()} >= {"record.json", "config.json", "split.json", "metrics.csv",
                                                    "checkpoint.pt"}
    for name in ("straight", "stopped", "resumed"):
        assert zero[name] == one[name], name        # the same record and run directory on every rank
    assert zero["resumed"][0]["data_parallel"] == [{"from_step": 0, "world_size": 2}]


def test_one_step_on_two_ranks_equals_one_process_on_the_whole_batch(ranks):
    _, (zero, one) = ranks
    # BatchNorm frozen: the loss is a mean of per-image terms, so the mean of the two halves' gradients is the
    # whole batch's gradient, up to float32 round-off.
    assert zero["step_grad_size"] > 1e-2
    for rank in (zero, one):
        assert rank["step_grad_diff"] <= 1e-6
        assert rank["step_param_diff"] <= 1e-6


def test_two_rank_accuracy_close_to_one_process(ranks, tmp_path):
    import json

    from ssl_bench.cli import main

    out, _ = ranks
    assert main([*REMIX_ARGS, "--results-dir", str(tmp_path)]) == 0
    one = json.loads(next(tmp_path.iterdir()).joinpath("record.json").read_text())["results"]
    two = json.loads(next((out / "results" / "cli").iterdir()).joinpath("record.json").read_text())["results"]
    # Different images and per-rank BatchNorm statistics: statistically close only (both near chance here).
    for key in ("teacher_last", "student_last"):
        assert abs(one[key] - two[key]) <= 15.0, (key, one[key], two[key])


def test_global_batch_is_two_distinct_permutation_streams_not_one_stream_twice(ranks):
    _, (zero, one) = ranks
    labeled = zero["labeled_set"]
    a, b = zero["drawn"]["labeled"], one["drawn"]["labeled"]
    assert a.shape == b.shape == (5, 4)                     # each rank draws batch / 2 per step
    # Over one pass each rank draws every labelled image exactly once ...
    for drawn in (a, b):
        assert torch.equal(drawn.flatten().sort().values, labeled.sort().values)
    # ... in its own order (TorchSSL #58: every rank read the same order, so each image came N times per step).
    assert not torch.equal(a, b)
    assert sum(len(set(x.tolist()) & set(y.tolist())) for x, y in zip(a, b, strict=True)) < a.numel() // 2
    # The global batch over the pass holds every labelled image exactly twice.
    counts = torch.bincount(torch.cat([a.flatten(), b.flatten()]))
    assert set(counts[labeled].tolist()) == {2} and counts.sum() == 2 * len(labeled)
    ua, ub = zero["drawn"]["unlabeled"], one["drawn"]["unlabeled"]
    assert ua.shape == (5, 4 * 7) and not torch.equal(ua, ub)   # FixMatch's mu = 7 per labelled image
    assert len(set(ua.flatten().tolist())) == len(set(ub.flatten().tolist())) == 140  # no repeats within a pass


def test_diverged_ranks_are_reported_on_every_rank(ranks):
    _, (zero, one) = ranks
    for rank in (zero, one):
        assert "rank 1 differs from rank 0" in rank["drift_error"] and "student." in rank["drift_error"]


def test_resume_with_the_same_world_size_is_exact(ranks):
    out, (zero, _) = ranks
    (_, straight_dir), (stopped, stopped_dir) = zero["straight"], zero["stopped"]
    resumed, resumed_dir = zero["resumed"]
    assert stopped["status"] == "interrupted" and stopped["steps_done"] == 3
    assert resumed_dir == stopped_dir and resumed["status"] == "finished"
    assert metric_rows(resumed_dir) == metric_rows(straight_dir)
    from ssl_bench.run.checkpoint import load_checkpoint

    a, b = load_checkpoint(straight_dir / "checkpoint.pt"), load_checkpoint(resumed_dir / "checkpoint.pt")
    assert len(a["streams"]) == 2
    ((_, ta),), ((_, tb),) = a["teachers"].items(), b["teachers"].items()
    for k in ta["model"]:
        assert torch.equal(ta["model"][k], tb["model"][k]), k


def test_resume_with_one_process_after_two_finishes_with_a_complete_record(ranks):
    import json

    from ssl_bench.run.checkpoint import load_checkpoint
    from ssl_bench.run.loop import train

    out, (zero, _) = ranks
    run_dir = out / "copy"     # rank 0 copied the 2-rank run directory right after it stopped at step 3
    stopped = load_checkpoint(run_dir / "checkpoint.pt")
    assert stopped["step"] == 3 and len(stopped["streams"]) == 2
    results_dir = out / "one_process"
    results_dir.mkdir()
    shutil.move(run_dir, results_dir / zero["stopped"][1].name)
    record, resumed_dir = train(smoke(results_dir), resume=True, progress=False)
    assert resumed_dir == results_dir / zero["stopped"][1].name
    assert record == json.loads((resumed_dir / "record.json").read_text())
    assert record["status"] == "finished" and record["steps_done"] == 8 and record["error"] is None
    assert record["results"]["num_evals"] == 2 and record["results"]["teacher_last"] is not None
    assert [row["step"] for row in metric_rows(resumed_dir)] == ["4", "8"]
    assert record["data_parallel"] == [{"from_step": 0, "world_size": 2}, {"from_step": 3, "world_size": 1}]
    assert len(load_checkpoint(resumed_dir / "checkpoint.pt")["streams"]) == 1
    # A valid continuation of the 2-rank run, but not the same run (documented): the streams were re-seeded.
    assert metric_rows(resumed_dir) != metric_rows(zero["resumed"][1])


def test_global_batch_not_divisible_by_world_size_is_refused(ranks):
    out, (zero, one) = ranks
    for rank in (zero, one):
        assert "--batch-size 9 is the global labelled batch" in rank["odd_batch_error"]
        assert "multiple of 2" in rank["odd_batch_error"]
    assert not (out / "results" / "odd").exists()
    assert Ranks(world_size=4).per_rank(64) == 16
    with pytest.raises(ValueError, match="e.g. 8 or 12"):
        Ranks(world_size=4).per_rank(10)


def test_recomputed_teacher_statistics_and_the_corruption_evaluation_keep_the_ranks_equal(ranks):
    _, (zero, one) = ranks
    assert isinstance(zero["recompute"], dict), zero["recompute"]    # not "data-parallel ranks diverged ..."
    assert zero["recompute"]["status"] == "finished" and zero["recompute"] == one["recompute"]
    assert zero["recompute"]["corruption"]["set"] == "synthetic-c"


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path, capsys):
    from ssl_bench.cli import main

    assert main([*REMIX_ARGS, "--results-dir", str(tmp_path / "r"), "--sync-bn"]) == 2
    assert "--sync-bn: torch's SyncBatchNorm runs on GPUs only" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_single_process_record_says_so(tmp_path):
    from ssl_bench.run.loop import train

    record, _ = train(smoke(tmp_path, steps=1, eval_every=1), progress=False)
    assert record["data_parallel"] == [{"from_step": 0, "world_size": 1}]


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), int(sys.argv[2]))
