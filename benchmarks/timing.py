"""Samples, their statistics and the alternating A/B runner."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Series:
    """Repeated measurements of one contender (seconds, or KiB for memory)."""

    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


#: a contender: called with the repetition index, returns its own measurement (setup excluded)
Contender = Callable[[int], float]


def alternate(contenders: dict[str, Contender], reps: int, log: Callable[[str], None]) -> dict[str, Series]:
    """Run every contender ``reps`` times, interleaved, rotating who goes first.

    Repetition ``i`` runs the contenders in their order rotated by ``i`` (A B, then B A, ...), so a
    drift of the machine (caches, the PostgreSQL server's autovacuum, disk) hits each one alike. A
    garbage collection runs before every sample, outside the measurement.
    """
    names = list(contenders)
    series = {n: Series(n) for n in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            value = contenders[name](rep)
            series[name].samples.append(value)
            log(f"    {name:<28} rep {rep + 1}/{reps}: {value:.4f}")
    return series


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    seconds: float = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
