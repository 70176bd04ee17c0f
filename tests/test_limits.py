"""Limits at the door: every size a user or a file sets is checked against a stated maximum, with one line."""

from __future__ import annotations

import pytest

from ssl_bench.cli import main
from ssl_bench.config import MAX_BATCH, MAX_LABELS, MAX_MU, RunConfig
from ssl_bench.errors import UserError
from ssl_bench.run.ranks import check_environment

SMOKE = ["--profile", "smoke", "--dataset", "digits", "--labels", "20", "--device", "cpu", "--no-progress"]


def one_error_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("flag", "value", "named"), [
    ("--labels", str(10**12), f"[1, {MAX_LABELS}]"),
    ("--lr", "1e308", "[0.0, 10.0]"),
    ("--weight-decay", "5", "[0.0, 1.0]"),
    ("--batch-size", str(2**40), f"[1, {MAX_BATCH}]"),
    ("--mu", str(2**40), f"[1, {MAX_MU}]"),
    ("--seed", "1" * 23, "[0, 4294967295]"),
    ("--steps", str(2**40), "[1, 2147483648]"),
])
def test_sizes_beyond_the_stated_maximum_are_one_line_before_anything_runs(tmp_path, capsys, flag, value, named):
    err = one_error_line(capsys, ["run", *SMOKE, flag, value, "--results-dir", str(tmp_path / "r")])
    assert flag in err and named in err
    assert not (tmp_path / "r").exists()


def test_a_value_of_the_wrong_type_from_a_file_is_refused():
    with pytest.raises(UserError, match=r"--mu True \(bool\) is not an int"):
        RunConfig(mu=True).validate()
    with pytest.raises(UserError, match=r"--labels '40' \(str\) is not an int"):
        RunConfig(labels="40").validate()


def test_a_sweep_over_2_to_the_32_seeds_counts_them_lazily(tmp_path, capsys):
    capsys.readouterr()
    argv = ["sweep", *SMOKE, "--seeds", "0-4294967295", "--results-dir", str(tmp_path / "r")]
    assert main([*argv, "--dry-run"]) == 0
    assert "sweep: 4294967296 runs in the grid" in capsys.readouterr().out
    err = one_error_line(capsys, argv)
    assert "over the 100000 one sweep plans" in err and not (tmp_path / "r").exists()


def test_repeated_alg_arg_keys_and_seed_beside_seeds_are_refused(tmp_path, capsys):
    err = one_error_line(capsys, ["run", *SMOKE, "--alg-arg", "threshold=0.9", "--alg-arg", "threshold=0.8",
                                  "--dry-run"])
    assert "--alg-arg threshold given more than once" in err
    err = one_error_line(capsys, ["sweep", *SMOKE, "--seed", "1", "--seeds", "0-2", "--dry-run"])
    assert "--seed 1 and --seeds 0-2 both given" in err


@pytest.mark.parametrize(("env", "named"), [
    ({"RANK": "1"}, "RANK=1 with no WORLD_SIZE"),
    ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc' is not a non-negative integer"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 with WORLD_SIZE=2"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0 must be >= 1"),
    ({"LOCAL_RANK": "-1"}, "LOCAL_RANK='-1'"),
])
def test_torchrun_variables_are_checked_before_training(tmp_path, capsys, monkeypatch, env, named):
    with pytest.raises(UserError, match=named.replace("(", r"\(")):
        check_environment(env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = one_error_line(capsys, ["run", *SMOKE, "--results-dir", str(tmp_path / "r")])
    assert named in err and not (tmp_path / "r").exists()


def test_torchrun_variables_of_a_real_launch_pass():
    check_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    check_environment({})


def _npz(path, **changes):
    import numpy as np

    x, y = np.zeros((20, 8, 8, 3), np.uint8), np.arange(20) % 2
    np.savez(path, **{"x_train": x, "y_train": y, "x_test": x, "y_test": y, **changes})
    return path


def test_npz_headers_are_checked_before_any_array_is_read(tmp_path, monkeypatch):
    """A forged header claiming a 2.8 TiB array, 0x0 images and labels up to 10^12: one line each, and the
    forged member is never read (``np.load`` would try to allocate its claimed size)."""
    import io
    import zipfile

    import numpy as np

    from ssl_bench.data import npz
    from ssl_bench.data.base import DatasetFormatError

    with pytest.raises(DatasetFormatError, match="'x_train' holds images of 0x0 pixels"):
        npz.load_npz(_npz(tmp_path / "zero.npz", x_train=np.zeros((20, 0, 0, 3), np.uint8)))
    with pytest.raises(DatasetFormatError, match="y_train has label 1000000000000"):
        npz.load_npz(_npz(tmp_path / "labels.npz", y_train=(np.arange(20) % 2) * 10**12))
    with pytest.raises(DatasetFormatError, match="'num_classes' is 1000000, expected 2 to 100000"):
        npz.load_npz(_npz(tmp_path / "classes.npz", num_classes=np.int64(10**6)))
    forged = tmp_path / "forged.npz"
    _npz(forged)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (30_000_000, 320, 320, 3)})
    members = {}
    with zipfile.ZipFile(forged) as z:
        members = {n: z.read(n) for n in z.namelist() if n != "x_train.npy"}
    with zipfile.ZipFile(forged, "w") as z:
        z.writestr("x_train.npy", header.getvalue() + bytes(64))
        for name, data in members.items():
            z.writestr(name, data)
    monkeypatch.setattr(npz, "read_members", lambda path: pytest.fail("read before its header was checked"))
    with pytest.raises(DatasetFormatError, match=r"claims shape \(30000000, 320, 320, 3\) of uint8 \(9216000000000"):
        npz.load_npz(forged)


def test_the_number_of_same_named_runs_is_bounded_with_one_line(tmp_path, monkeypatch):
    from ssl_bench.run import rundirs

    monkeypatch.setattr(rundirs, "MAX_SAME_NAMED", 3)
    made = [rundirs.create_run_dir(tmp_path, "run") for _ in range(3)]
    assert [p.name for p in made] == ["run", "run-2", "run-3"]
    with pytest.raises(UserError, match="3 runs named 'run' in .* already: move finished runs aside"):
        rundirs.create_run_dir(tmp_path, "run")


def test_infinite_or_huge_hyperparameters_are_one_line(tmp_path, capsys):
    err = one_error_line(capsys, ["run", *SMOKE, "--alg-arg", "lambda_u=inf", "--dry-run"])
    assert "--alg-arg lambda_u=inf" in err and "must lie in [0, inf)" in err
    err = one_error_line(capsys, ["run", *SMOKE, "--alg", "remixmatch", "--alg-arg", "k=100000", "--dry-run"])
    assert "--alg-arg k=100000" in err and "[1, 64]" in err
