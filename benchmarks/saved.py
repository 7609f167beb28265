"""The raw results of a run as JSON, so the report can be written again (e.g. after editing
``benchmarks/analysis.md``) without measuring again: ``python -m benchmarks --render FILE``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from benchmarks.cases import Sizes
from benchmarks.report import RunInfo
from benchmarks.results import Measure
from benchmarks.timing import Series


def save(path: Path, info: RunInfo, measures: list[Measure], plans: dict[str, dict[str, str]]) -> None:
    doc = {
        "info": {**dataclasses.asdict(info), "started": info.started.isoformat()},
        "measures": [dataclasses.asdict(m) for m in measures],
        "plans": plans,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def _series(d: dict[str, Any]) -> Series:
    return Series(d["name"], list(d["samples"]))


def load_parts(paths: list[Path]) -> tuple[RunInfo, list[Measure], dict[str, dict[str, str]]]:
    """Several runs' results as one report (a full run split in parts: each row is still measured side by
    side with its reference, within its part)."""
    parts = [load(p) for p in paths]
    if len(parts) == 1:
        return parts[0]
    first = parts[0][0]
    info = RunInfo(
        first.sizes,
        " ; ".join(p[0].command for p in parts),
        first.started,
        sum(p[0].seconds for p in parts),
        first.postgres_version,
        first.environment,
    )
    measures = [m for p in parts for m in p[1]]
    plans = {k: v for p in parts for k, v in p[2].items()}
    return info, measures, plans


def load(path: Path) -> tuple[RunInfo, list[Measure], dict[str, dict[str, str]]]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    raw = doc["info"]
    info = RunInfo(
        Sizes(**raw["sizes"]),
        raw["command"],
        dt.datetime.fromisoformat(raw["started"]),
        raw["seconds"],
        raw["postgres_version"],
        raw["environment"],
    )
    measures = []
    for m in doc["measures"]:
        m = dict(m)
        m["ours"], m["reference"] = _series(m["ours"]), _series(m["reference"])
        m["extras"] = [_series(e) for e in m["extras"]]
        measures.append(Measure(**m))
    return info, measures, doc["plans"]
