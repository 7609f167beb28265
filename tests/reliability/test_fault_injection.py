"""SIGKILL a loading process during extract, mid-insert and at commit; nothing is lost (issue 9 §1).

Every series below runs kill-and-recover trials on one destination (see :mod:`.harness`). The fast
default (CI) runs ``FAST_TRIALS`` trials per series: 12 series, at least 60 kills, spread evenly over the
three phases. The long mode spreads ``ASP_FAULT_TRIALS`` trials over the series and adds a fourth phase,
``anywhere`` (a kill after a random delay)::

    ASP_FAULT_TRIALS=1000 ASP_FAULT_REPORT=faults.jsonl pytest tests/reliability/test_fault_injection.py

``ASP_FAULT_SEED`` replays a seed printed by a failure; ``ASP_FAULT_REPORT`` appends each series' figures
as a JSON line (``scripts/fault_injection.py`` runs the long mode and renders them as a table).
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path

import pytest

from tests.reliability import harness

FAST_TRIALS = 5
SERIES = [
    (disposition, checkpoints)
    for disposition in ("append", "merge", "replace")
    for checkpoints in (False, True)
]
DIALECTS = [d.strip() for d in os.environ.get("ASP_FAULT_DIALECTS", "sqlite,postgresql").split(",")]


def _trials() -> int:
    requested = int(os.environ.get("ASP_FAULT_TRIALS", "0") or 0)
    if requested <= 0:
        return FAST_TRIALS
    return max(1, math.ceil(requested / (len(SERIES) * len(DIALECTS))))


def _seed() -> int:
    """``ASP_FAULT_SEED`` (the seed a failure message printed replays its series), else a random one."""
    given = os.environ.get("ASP_FAULT_SEED")
    return int(given) if given else random.SystemRandom().randrange(1_000_000)


@pytest.fixture(params=DIALECTS)
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    dialect = request.param
    if dialect == "postgresql":
        request.applymarker(pytest.mark.postgres)
        server = request.getfixturevalue("postgres_server")
        if isinstance(server, str):
            return dialect, server
        return dialect, server.url(server.create_database())
    return dialect, f"{dialect}:///{tmp_path / ('dest.' + dialect)}"


SERIES_IDS = [f"{d}-{'ckpt' if c else 'one_tx'}" for d, c in SERIES]


@pytest.mark.parametrize(("disposition", "checkpoints"), SERIES, ids=SERIES_IDS)
def test_kills_never_lose_or_duplicate_rows(destination, disposition, checkpoints, tmp_path):
    dialect, url = destination
    long_mode = int(os.environ.get("ASP_FAULT_TRIALS", "0") or 0) > 0
    trials = _trials()
    seed = _seed()
    scenario = harness.Scenario(url, dialect, disposition, checkpoints)
    phases = harness.LONG_PHASES if long_mode else harness.PHASES

    stats = harness.run_series(scenario, trials, seed, tmp_path, phases)

    report = os.environ.get("ASP_FAULT_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as out:
            out.write(stats.as_json() + "\n")
    assert stats.trials == trials
    assert stats.duplicates == 0 and stats.missing == 0
    # every trial of the three phases ends with a kill there: a "later"/"during" kill that came after
    # the run ended is followed by one that waits at the trip point
    for phase in harness.PHASES:
        assert stats.kills[phase] >= trials // len(phases), stats
    assert sum(stats.kills[phase] for phase in harness.PHASES) >= trials * len(harness.PHASES) // len(phases)
