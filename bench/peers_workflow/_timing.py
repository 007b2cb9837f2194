"""What every workflow peer script shares: the graph shapes, block timestamps, the JSON line.

The peer scripts run with a throwaway virtual environment's python (never Atrium's), so
this module uses the standard library only. Each script imports it from its own folder.

Shapes (50 blocks each, every block ``x -> x + 1``):

- ``chain``: block 0 -> block 1 -> ... -> block 49;
- ``fanout``: 10 independent branches of 5 blocks, all started at once.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

BLOCKS = 50
BRANCHES = 10
BRANCH_LENGTH = 5
SHAPES = ("chain", "fanout")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation, as ``bench/_common.py``."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> dict[str, float | int]:
    """n, p50, p99, min and max of a sample (ms), rounded for the JSON line."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 4),
        "p99": round(percentile(values, 99), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


@dataclass
class BlockClock:
    """Timestamps taken when each block starts, per branch (chain: one branch).

    The gap between the starts of two consecutive blocks of a branch is one block's
    latency as its successor sees it: the block itself (trivial here) plus everything
    the engine does before the next one starts (persisting, scheduling, handing over).
    """

    starts: dict[int, list[float]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        """Forget the previous repetition's timestamps."""
        with self.lock:
            self.starts = {}

    def mark(self, branch: int) -> None:
        """Record that a block of ``branch`` starts now."""
        now = time.perf_counter()
        with self.lock:
            self.starts.setdefault(branch, []).append(now)

    def gaps_ms(self) -> list[float]:
        """Start-to-start gaps between consecutive blocks of each branch, in ms."""
        gaps: list[float] = []
        for stamps in self.starts.values():
            gaps += [(b - a) * 1000 for a, b in itertools.pairwise(stamps)]
        return gaps

    def started(self) -> int:
        """How many blocks started in this repetition."""
        return sum(len(stamps) for stamps in self.starts.values())


def arguments(description: str, storages: Sequence[str]) -> argparse.Namespace:
    """The command line every peer script takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shape", choices=SHAPES, default="chain")
    parser.add_argument("--storage", choices=storages, default=storages[0])
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workdir", required=True, help="a folder for the peer's files")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL, if needed")
    return parser.parse_args()


def measure(
    run_once: Callable[[int], Any],
    check: Callable[[Any], None],
    clock: BlockClock,
    repetitions: int,
    warmup: int,
) -> dict[str, Any]:
    """Run ``warmup`` untimed and ``repetitions`` timed graphs; ms per block per repetition.

    ``run_once(i)`` runs one whole graph (a fresh run id each time) and returns its result,
    which ``check`` verifies. A full collection runs before each repetition; the collector
    stays on while timing, since what an engine allocates is part of what it costs.
    """
    per_block: list[float] = []
    gaps: list[float] = []
    for index in range(warmup + repetitions):
        clock.reset()
        gc.collect()
        started = time.perf_counter()
        result = run_once(index)
        elapsed = time.perf_counter() - started
        check(result)
        if clock.started() != BLOCKS:
            msg = f"{clock.started()} blocks ran, expected {BLOCKS}"
            raise RuntimeError(msg)
        if index >= warmup:
            per_block.append(elapsed * 1000 / BLOCKS)
            gaps += clock.gaps_ms()
    return {
        "ms_per_block": [round(v, 4) for v in per_block],
        "ms_per_block_summary": spread(per_block),
        "block_gap_ms": spread(gaps),
    }


def emit(result: dict[str, Any]) -> None:
    """Print the one JSON line the harness reads (last line of stdout)."""
    result.setdefault("python", platform.python_version())
    result.setdefault("blocks", BLOCKS)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
