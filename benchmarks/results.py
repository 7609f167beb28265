"""What a benchmark case produces: one :class:`Measure` per row of the results table."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.timing import Series

TIMES = "\u00d7"  # the multiplication sign of ratios


@dataclass
class Measure:
    """One row of the table: our series against a reference, reduced to one ratio and its target.

    ``ratio`` is ``reference median / ours median`` for ``higher_is_better`` targets (how many times
    faster we are, or our share of the reference's throughput) and ``ours / reference`` otherwise (how
    many times longer or bigger we get: history, memory).
    """

    key: str
    title: str
    target: float
    higher_is_better: bool
    ours: Series
    reference: Series
    #: what the ratio means, e.g. "dlt time / our time"
    ratio_label: str
    unit: str = "s"
    #: other series measured in the same alternation (e.g. a slower raw path), for the details table
    extras: list[Series] = field(default_factory=list)
    #: rows per sample, for throughput columns
    rows: int | None = None
    notes: list[str] = field(default_factory=list)
    #: a cProfile summary of one extra run of ours, added when the target is not met
    profile: str | None = None

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.reference.median / self.ours.median
        return self.ours.median / self.reference.median

    @property
    def met(self) -> bool:
        return self.ratio >= self.target if self.higher_is_better else self.ratio <= self.target

    @property
    def target_text(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:g}{TIMES}"
