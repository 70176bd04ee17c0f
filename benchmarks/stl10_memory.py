"""Peak memory of loading STL-10 and building its unlabelled pool, on generated files in the official format.

    python benchmarks/stl10_memory.py --unlabeled 20000 --dir /tmp/stl10_mem

Writes ``stl10_binary/`` with 5,000 train, 8,000 test and ``--unlabeled`` unlabelled random images (the real
set has 100,000), then in this process: ``load_dataset("stl10")`` (memory-mapped unlabelled images, fingerprint
included) and the host-side unlabelled pool that training puts on the device (``train.build_training``). A thread
samples the process's anonymous resident memory (``RssAnon`` in /proc/self/status: what cannot be dropped,
unlike the memory map's file pages) every 5 ms; the peak is printed in GB beside the sizes involved.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np

GB = 1e9


def rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (Linux only)")


class PeakSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = rss_anon(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_anon())
            time.sleep(0.005)


def write_files(folder: Path, unlabeled: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 5000), ("test", 8000), ("unlabeled", unlabeled)):
        with open(folder / f"{name}_X.bin", "wb") as f:
            for start in range(0, n, 1000):
                f.write(rng.integers(0, 256, (min(1000, n - start), 27648), dtype=np.uint8).tobytes())
        if name != "unlabeled":
            (folder / f"{name}_y.bin").write_bytes((np.arange(n) % 10 + 1).astype(np.uint8).tobytes())
    folds = [rng.permutation(5000)[:1000] for _ in range(10)]  # the official file: 10 lines of 1,000 indices
    (folder / "fold_indices.txt").write_text("\n".join(" ".join(map(str, f)) for f in folds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unlabeled", type=int, default=20000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/stl10_mem"))
    args = parser.parse_args()
    if not (args.dir / "stl10_binary" / "unlabeled_X.bin").is_file():
        write_files(args.dir / "stl10_binary", args.unlabeled)

    import torch

    from ssl_bench.data import load_dataset

    base = rss_anon()
    sampler = PeakSampler()
    sampler.start()
    t0 = time.perf_counter()
    ds = load_dataset("stl10", root=args.dir, download=False)
    t_load = time.perf_counter() - t0
    peak_load = sampler.peak
    # the pool exactly as train.build_training fills it (CPU device: the host buffer is the pool)
    train, extra = ds.x_train, ds.x_unlabeled
    pool = torch.empty((len(train) + len(extra), 3, 96, 96), dtype=torch.uint8)
    for start in range(0, len(pool), 4096):
        stop = min(start + 4096, len(pool))
        parts = [a for a in (train[start:stop], extra[max(start - len(train), 0):max(stop - len(train), 0)]) if len(a)]
        pool[start:stop] = torch.from_numpy(np.concatenate(parts).transpose(0, 3, 1, 2))
    sampler.running = False
    sampler.join()
    unl = extra.nbytes / GB
    print(f"unlabelled images {len(extra)} ({unl:.2f} GB), train + test {(train.nbytes + ds.x_test.nbytes) / GB:.2f} "
          f"GB, pool {pool.numel() / GB:.2f} GB")
    print(f"load_dataset: {t_load:.1f} s, peak anonymous memory above start {(peak_load - base) / GB:.2f} GB")
    print(f"load + pool: peak anonymous memory above start {(sampler.peak - base) / GB:.2f} GB")


if __name__ == "__main__":
    main()
