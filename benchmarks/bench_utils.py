"""Helpers shared by the benchmark scripts: timing, memory, sgemm reference, subprocess workers.

Every implementation runs in its own process (``run_worker``) so that peak RSS, allocator state,
thread pools and compile caches of one never affect another.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_memory_gb() -> float:
    try:
        import psutil

        return psutil.virtual_memory().available / 2**30
    except ImportError:  # pragma: no cover - psutil is a dev dependency
        return float("inf")


def sgemm_gflops(n: int = 4096, repeats: int = 5) -> float:
    """fp32 matrix-multiply rate of this machine, all threads, in GFLOP/s (median)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    ms = median_ms(lambda: torch.mm(a, b), repeats, warmup=2)
    return 2 * n**3 / (ms * 1e-3) / 1e9


def run_worker(script: Path, args: list[str], timeout: float) -> dict:
    """Run ``script --worker args`` in a fresh interpreter; return the JSON object it prints last."""
    cmd = [sys.executable, str(script), "--worker", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else " | ".join(tail)
        return {"error": f"exit {proc.returncode}: {why}"}
    return json.loads(lines[-1])


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
