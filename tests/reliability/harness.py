"""Fault-injection harness: a child process runs a real ``Pipeline`` load; the parent SIGKILLs it.

How a kill lands where it should, without hooks in the product:

* **extract** -- the test's own resource generator counts the rows it yields;
* **insert** -- the child wraps its pipeline's ``dialect.insert_rows`` so the rows reach the bulk path
  (PostgreSQL ``COPY``, SQLite ``executemany``) through a lazy iterator that counts them: the trip fires
  *inside* the running ``COPY`` / ``executemany``, with part of the batch already sent. DuckDB's
  columnar path (``insert_columns``) runs one statement per batch: the trip fires right before it;
* **commit** -- the child wraps its engine dialect's ``do_commit``; a commit counts when its transaction
  inserted a ``_dlt_loads`` row (seen with a ``before_cursor_execute`` listener), i.e. a load commit.

When the chosen point is reached, the child sends ``("trip", ...)`` on a pipe and blocks waiting for an
answer. The parent either kills it there (``at``, ``before``, ``after``) or answers ``go`` and kills it a
random moment later (``later``, ``during``). ``anywhere`` kills after a random delay from the start of
the run. Children fork from a ``forkserver`` that preloaded this module: cheap, and no database
connection of the test process is ever inherited.

The invariant checked after every kill (:func:`check_committed`): the newest committed state decodes,
and the table holds exactly the ids ``1..max_id`` that the committed state records -- no duplicate, no
gap -- and every row and state row belongs to a committed load. The next, un-killed run must then end
with exactly the ids ``1..total`` (:func:`check_final`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from airflow_state_provider import Pipeline, current, incremental, resource
from airflow_state_provider.destination.dialects.base import Dialect

PIPELINE = "faulty"
DATASET = "ds"
TABLE = "items"
#: merge runs re-deliver this many already committed ids: the merge must not duplicate them
MERGE_OVERLAP = 5
PHASES = ("extract", "insert", "commit")
LONG_PHASES = (*PHASES, "anywhere")
VARIANTS = {
    "extract": ("at", "later"),
    "insert": ("at", "later"),
    "commit": ("before", "during", "after"),
    "anywhere": ("delay",),
}
#: the variant of each phase whose kill always lands (the child waits for it at the trip point)
FIRM = {"extract": "at", "insert": "at", "commit": "before"}
#: how long the parent waits for a trip (or the end of a run) before calling the child hung
CHILD_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Scenario:
    """One series of trials: a destination and how the pipeline loads into it."""

    url: str
    dialect: str
    disposition: str
    checkpoints: bool


@dataclass(frozen=True)
class Trip:
    """Where the child stops and waits: the ``index``-th row yielded / inserted, or load commit."""

    phase: str
    index: int
    #: for commits: stop ``before`` or ``after`` the database COMMIT
    when: str = "before"


@dataclass(frozen=True)
class Job:
    """One child run: load ids ``1..total`` (what is not committed yet) with these knobs."""

    url: str
    disposition: str
    total: int
    tag: str
    page_size: int
    batch_size: int
    checkpoint_every: int | None
    pipelines_dir: str
    trip: Trip | None


def uses_cursor(disposition: str, checkpoint_every: int | None) -> bool:
    """Checkpointed append and merge runs track their progress with an ascending cursor, the one kind
    of progress a checkpoint commits early (docs/checkpoints.md); the others keep ``max_id`` in their
    own state, written after each ``yield``, so their rows wait for the final commit."""
    return checkpoint_every is not None and disposition != "replace"


def first_id(disposition: str, committed_max: int, cursor: bool = False) -> int:
    """The first id a run yields, given the committed ``max_id``."""
    if disposition == "replace":
        return 1  # the resource state is reset at the start of every replace run (dlt semantics)
    if disposition == "merge" and not cursor:
        return max(1, committed_max - MERGE_OVERLAP + 1)
    return committed_max + 1


def items_resource(job: Job, wire: Wire | None = None):
    """The resource under test: ids ``first..total`` in pages, the high-water mark written after each
    ``yield`` (so it belongs to the rows before it, DESIGN §5.2)."""

    def pages(start: int) -> Iterator[list[dict]]:
        for low in range(start, job.total + 1, job.page_size):
            ids = range(low, min(low + job.page_size, job.total + 1))
            if wire is not None:
                wire.count("extract", len(ids))
            yield [{"id": i, "tag": job.tag, "payload": f"{job.tag}:{i}"} for i in ids]

    if uses_cursor(job.disposition, job.checkpoint_every):

        @resource(name=TABLE, primary_key="id", write_disposition=job.disposition)
        def by_cursor(cursor=incremental("id", initial_value=0, row_order="asc")) -> Iterator[list[dict]]:
            yield from pages(first_id(job.disposition, int(cursor.start_value), cursor=True))

        return by_cursor()

    @resource(name=TABLE, primary_key="id", write_disposition=job.disposition)
    def items() -> Iterator[list[dict]]:
        slot = current.resource_state()
        for page in pages(first_id(job.disposition, int(slot.get("max_id", 0)))):
            yield page
            slot["max_id"] = max(int(slot.get("max_id", 0)), page[-1]["id"])
            slot["tag"] = job.tag

    return items()


# ------------------------------------------------------------------------------------------- child


class Wire:
    """The child's end: counts events per phase and stops at the trip point."""

    def __init__(self, trip: Trip | None, pipe: multiprocessing.connection.Connection) -> None:
        self.trip = trip
        self.pipe = pipe
        self.counts = dict.fromkeys(PHASES, 0)
        self.load_pending = False

    def count(self, phase: str, n: int = 1) -> None:
        """``n`` more rows (or one more commit) of ``phase`` are about to go through."""
        old = self.counts[phase]
        self.counts[phase] = new = old + n
        trip = self.trip
        if trip is not None and trip.phase == phase and trip.when == "before" and old < trip.index <= new:
            self.stop(f"{phase} #{trip.index}")

    def committed(self) -> None:
        """The database COMMIT of the current load commit has returned."""
        trip = self.trip
        here = ("commit", "after", self.counts["commit"])
        if trip is not None and (trip.phase, trip.when, trip.index) == here:
            self.stop(f"commit #{trip.index} (after COMMIT)")

    def stop(self, where: str) -> None:
        self.pipe.send(("trip", where))
        self.pipe.recv()  # "go" -- or a SIGKILL while waiting here


class _CountedRows:
    """The rows of one bulk insert, counted one by one as the driver consumes them."""

    def __init__(self, rows: list[tuple], wire: Wire) -> None:
        self.rows = rows
        self.wire = wire

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple]:
        for row in self.rows:
            self.wire.count("insert")
            yield row


def instrument(pipeline: Pipeline, wire: Wire) -> None:
    """Test-side wrappers on this child's own objects (nothing in the product changes)."""
    dialect = pipeline.dialect
    if type(dialect).insert_columns is not Dialect.insert_columns:
        # a columnar bulk path (DuckDB): one statement from whole columns, so the trip comes right
        # before it runs ("at") or while it runs ("later")
        insert_columns = dialect.insert_columns

        def counted_columns(conn: sa.Connection, table: sa.Table, columns: list[str], data: list) -> None:
            wire.count("insert", len(data[0]) if data else 0)
            insert_columns(conn, table, columns, data)

        dialect.insert_columns = counted_columns  # type: ignore[method-assign]
    else:
        # row by row into COPY (PostgreSQL) or executemany (SQLite): the trip comes mid-statement
        insert_rows = dialect.insert_rows

        def counted_rows(conn: sa.Connection, table: sa.Table, columns: list[str], rows: list[tuple]) -> None:
            insert_rows(conn, table, columns, _CountedRows(rows, wire))  # type: ignore[arg-type]

        dialect.insert_rows = counted_rows  # type: ignore[method-assign]

    engine = pipeline.engine

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _seen(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("INSERT") and "_dlt_loads" in statement:
            wire.load_pending = True

    @sa.event.listens_for(engine, "rollback")
    def _rolled_back(conn) -> None:
        wire.load_pending = False

    do_commit = engine.dialect.do_commit

    def counted_commit(dbapi_connection: Any) -> None:
        if not wire.load_pending:
            do_commit(dbapi_connection)
            return
        wire.load_pending = False
        wire.count("commit")
        do_commit(dbapi_connection)
        wire.committed()

    engine.dialect.do_commit = counted_commit  # type: ignore[method-assign]


def child_main(job: Job, pipe: multiprocessing.connection.Connection) -> None:
    """Entry point of the child process."""
    try:
        engine = sa.create_engine(job.url)
        wire = Wire(job.trip, pipe)
        pipeline = Pipeline(
            PIPELINE,
            destination=engine,
            dataset_name=DATASET,
            pipelines_dir=job.pipelines_dir,
            batch_size=job.batch_size,
        )
        instrument(pipeline, wire)
        pipe.send(("ready", None))
        info = pipeline.run(items_resource(job, wire), checkpoint_every=job.checkpoint_every)
        engine.dispose()
        pipe.send(("done", {"rows": info.row_counts.get(TABLE, 0), "checkpoints": info.checkpoints}))
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
        raise


_CONTEXT: Any = None


def context() -> Any:
    """The forkserver context, with this module preloaded in the server."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        _CONTEXT = ctx
    return _CONTEXT


@dataclass
class Outcome:
    killed: bool
    where: str | None
    seconds: float
    result: dict | None = None


def run_child(job: Job, variant: str, rng: random.Random, anywhere_within: float = 0.5) -> Outcome:
    """Run ``job`` in a child; kill it per ``variant`` at its trip point (or at a random moment)."""
    ctx = context()
    parent_end, child_end = ctx.Pipe()
    proc = ctx.Process(target=child_main, args=(job, child_end), daemon=True)
    started = time.perf_counter()
    proc.start()
    child_end.close()
    where: str | None = None
    result: dict | None = None
    kill_at: float | None = None
    try:
        while True:
            timeout = CHILD_TIMEOUT if kill_at is None else max(0.0, kill_at - time.perf_counter())
            if not parent_end.poll(timeout):
                if kill_at is not None:
                    break  # the moment to kill has come
                raise AssertionError(f"child hung: no message within {CHILD_TIMEOUT}s ({job})")
            try:
                kind, payload = parent_end.recv()
            except EOFError:
                break  # the child exited
            if kind == "ready":
                if variant == "delay":
                    kill_at = time.perf_counter() + rng.uniform(0, anywhere_within)
                    where = "anywhere"
            elif kind == "trip":
                where = payload
                if variant in ("at", "before", "after"):
                    break
                # "later" / "during": let it go on and kill it a moment later
                delay = rng.uniform(0, 0.001) if variant == "during" else rng.uniform(0, 0.005)
                parent_end.send("go")
                kill_at = time.perf_counter() + delay
            elif kind == "done":
                result = payload
            elif kind == "error":
                raise AssertionError(f"the child failed instead of being killed ({job}):\n{payload}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
        parent_end.close()
    seconds = time.perf_counter() - started
    killed = proc.exitcode == -signal.SIGKILL and result is None
    if not killed and proc.exitcode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child exited with {proc.exitcode} ({job})")
    return Outcome(killed, where if killed else None, seconds, result)


# ------------------------------------------------------------------------------------ observation


@dataclass
class Committed:
    """What the destination holds, as a fresh reader sees it."""

    max_id: int
    tag: str | None
    state_version: int
    ids: list[int]
    row_tags: set[str]
    orphan_rows: int
    orphan_states: int
    staging_tables: list[str]
    load_ids: int


def observe(url: str, pipeline: str = PIPELINE) -> Committed:
    """Restore the pipeline's state with a fresh ``Pipeline`` and read every committed row."""
    engine = sa.create_engine(url)
    try:
        reader = Pipeline(pipeline, destination=engine, dataset_name=DATASET, pipelines_dir=os.devnull)
        state = reader.state  # restore: decodes and verifies the newest committed version
        slots = [s.get("resources", {}).get(TABLE) for s in state.get("sources", {}).values()]
        slot = next((s for s in slots if s is not None), {})
        q = f'"{DATASET}".'
        with reader.engine.connect() as conn:  # SQLite attaches the dataset on the pipeline's engine
            tables = _tables(conn, engine.dialect.name)
            rows: list[tuple] = []
            if TABLE in tables:
                rows = conn.exec_driver_sql(f"SELECT id, tag, _dlt_load_id FROM {q}{TABLE}").all()
            loads: set[str] = set()
            state_loads: list[str] = []
            if "_dlt_loads" in tables:
                loads = {
                    r[0] for r in conn.exec_driver_sql(f"SELECT load_id FROM {q}_dlt_loads WHERE status = 0")
                }
                state_loads = [
                    r[0] for r in conn.exec_driver_sql(f"SELECT _dlt_load_id FROM {q}_dlt_pipeline_state")
                ]
        cursor = ((slot.get("incremental") or {}).get("id") or {}).get("last_value")
        return Committed(
            max_id=int(slot.get("max_id", cursor or 0)),
            tag=slot.get("tag"),
            state_version=int(state.get("_state_version", 0)),
            ids=sorted(r[0] for r in rows),
            row_tags={r[1] for r in rows},
            orphan_rows=sum(1 for r in rows if r[2] not in loads),
            orphan_states=sum(1 for s in state_loads if s not in loads),
            staging_tables=sorted(t for t in tables if t.startswith("_asp_stage")),
            load_ids=len(loads),
        )
    finally:
        engine.dispose()


def _tables(conn: sa.Connection, dialect: str) -> set[str]:
    if dialect == "sqlite":
        sql = f"SELECT name FROM \"{DATASET}\".sqlite_master WHERE type = 'table'"
        return {r[0] for r in conn.exec_driver_sql(sql)}
    sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
    if dialect == "postgresql":
        sql = sql.replace("?", "%(s)s")
        return {r[0] for r in conn.exec_driver_sql(sql, {"s": DATASET})}
    return {r[0] for r in conn.exec_driver_sql(sql, (DATASET,))}


def check_committed(seen: Committed, disposition: str, context_: str) -> None:
    """The committed state describes exactly the committed rows."""
    expected = list(range(1, seen.max_id + 1))
    if seen.ids != expected:
        duplicates = len(seen.ids) - len(set(seen.ids))
        missing = sorted(set(expected) - set(seen.ids))[:10]
        extra = sorted(set(seen.ids) - set(expected))[:10]
        raise AssertionError(
            f"{context_}: state says max_id={seen.max_id} but the table holds {len(seen.ids)} rows "
            f"({duplicates} duplicates, missing {missing}, beyond the state {extra})"
        )
    if disposition == "replace" and seen.ids:
        mixed = f"{context_}: replace mixes runs {seen.row_tags} (state {seen.tag})"
        assert seen.row_tags == {seen.tag}, mixed
    assert seen.orphan_rows == 0, f"{context_}: {seen.orphan_rows} rows belong to no committed load"
    assert seen.orphan_states == 0, f"{context_}: {seen.orphan_states} state rows belong to no committed load"
    assert not seen.staging_tables, f"{context_}: staging tables left behind: {seen.staging_tables}"


def check_final(seen: Committed, total: int, tag: str, disposition: str, context_: str) -> None:
    """After an un-killed run: exactly ids 1..total, once each, and the state says so."""
    check_committed(seen, disposition, context_)
    assert seen.max_id == total, f"{context_}: state max_id {seen.max_id}, expected {total}"
    if disposition == "replace":
        assert seen.row_tags == {tag}, f"{context_}: replace left rows of other runs: {seen.row_tags}"


# --------------------------------------------------------------------------------- other writers


class Editor:
    """An operator who keeps setting ``sources.<source>.resources.other.note`` to 1, 2, 3, ... (through
    the one commit path, like ``airflow-state set``) while a checkpointed child loads: no commit of the
    child may write an older note back."""

    def __init__(self, url: str, pipelines_dir: Path) -> None:
        self.url = url
        self.pipelines_dir = pipelines_dir
        self.committed = 0
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        from airflow_state_provider import operations as ops

        engine = sa.create_engine(self.url)
        try:
            while not self._stop:
                pipeline = Pipeline(
                    PIPELINE, destination=engine, dataset_name=DATASET, pipelines_dir=self.pipelines_dir
                )
                try:
                    source = pipeline.state["default_schema_name"]
                    path = f"sources.{source}.resources.other.note"
                    ops.apply(ops.plan_set(pipeline, path, self.committed + 1, create=True))
                    self.committed += 1
                except (ops.StateOperationError, ops.ConcurrentEditError, sa.exc.OperationalError):
                    pass  # no state yet, a commit came in between, or SQLite's lock was busy: again
                time.sleep(0.01)
        finally:
            engine.dispose()

    def stop(self) -> int:
        """Stop editing; returns the edits committed."""
        self._stop = True
        self._thread.join(60)
        return self.committed

    def check(self, context_: str) -> None:
        engine = sa.create_engine(self.url)
        try:
            reader = Pipeline(PIPELINE, destination=engine, dataset_name=DATASET, pipelines_dir=os.devnull)
            state = reader.state
        finally:
            engine.dispose()
        source = state.get("default_schema_name")
        slot = (state.get("sources", {}).get(source) or {}).get("resources", {}).get("other") or {}
        note = slot.get("note", 0)
        last = self.committed
        assert note == last, f"{context_}: the state holds note {note}, the last edit set {last}"


# ---------------------------------------------------------------------------------------- trials


@dataclass
class Stats:
    """Figures of one series, summed up for RELIABILITY.md."""

    dialect: str
    disposition: str
    checkpoints: bool
    trials: int = 0
    kills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LONG_PHASES, 0))
    variants: dict[str, int] = field(default_factory=dict)
    not_killed: int = 0
    #: ids whose exactly-once presence was verified, summed over every check
    rows_verified: int = 0
    duplicates: int = 0
    missing: int = 0
    seconds: float = 0.0
    #: operator edits committed to another resource's slot while checkpointed children ran
    concurrent_edits: int = 0

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


def _knobs(rng: random.Random, checkpoints: bool) -> tuple[int, int, int | None]:
    page_size = rng.choice([1, 3, 10, 25, 60, 150])
    batch_size = rng.choice([7, 50, 200, 1000])
    checkpoint_every = rng.randint(20, 300) if checkpoints else None
    return page_size, batch_size, checkpoint_every


def choose_trip(
    rng: random.Random,
    phase: str,
    rows: int,
    page_size: int,
    checkpoint_every: int | None,
    disposition: str = "append",
) -> Trip | None:
    """A trip point this run is sure to reach: it yields and inserts ``rows`` rows."""
    if phase in ("extract", "insert"):
        return Trip(phase, rng.randint(1, rows))
    if phase == "commit":
        early = uses_cursor(disposition, checkpoint_every)
        commits = 1 if not early else 1 + rows // (checkpoint_every + page_size)
        return Trip(phase, rng.randint(1, commits))
    return None


def run_series(
    scenario: Scenario, trials: int, seed: int, workdir: Path, phases: tuple[str, ...] = PHASES
) -> Stats:
    """``trials`` kill-and-recover cycles on one destination; raises on the first broken invariant."""
    rng = random.Random(seed)
    stats = Stats(scenario.dialect, scenario.disposition, scenario.checkpoints)
    started = time.perf_counter()
    total = 0
    run_seconds = 0.2
    for n in range(trials):
        phase = phases[(n + seed) % len(phases)]
        total = rng.randint(30, 900) if scenario.disposition == "replace" else total + rng.randint(1, 600)
        attempts = 2 if rng.random() < 0.2 else 1  # sometimes the retry is killed too
        attempt, forced = 0, None
        while attempt < attempts:
            if forced is not None and scenario.disposition != "replace":
                total += rng.randint(1, 600)  # new rows: the run that escaped its kill loaded the rest
            seen = observe(scenario.url)
            page_size, batch_size, checkpoint_every = _knobs(rng, scenario.checkpoints)
            cursor = uses_cursor(scenario.disposition, checkpoint_every)
            rows = total - first_id(scenario.disposition, seen.max_id, cursor) + 1
            if rows < 1:
                break  # the killed attempt had committed everything already: nothing left to kill
            variant = forced or rng.choice(VARIANTS[phase])
            trip = choose_trip(rng, phase, rows, page_size, checkpoint_every, scenario.disposition)
            if phase == "commit":
                trip = dataclasses.replace(trip, when="after" if variant == "after" else "before")
            tag = f"t{n}a{attempt}{'f' if forced else ''}"
            job = Job(
                scenario.url,
                scenario.disposition,
                total,
                tag,
                page_size,
                batch_size,
                checkpoint_every,
                str(workdir / f"worker-{tag}"),
                trip,
            )
            context_ = f"seed {seed} trial {n} attempt {attempt} {phase}/{variant} {trip} {job}"
            # DuckDB allows one writer process per file: no concurrent editor there
            concurrent = scenario.checkpoints and scenario.dialect != "duckdb"
            editor = Editor(scenario.url, workdir / "editor") if concurrent else None
            try:
                outcome = run_child(job, variant, rng, anywhere_within=run_seconds * 1.2)
            finally:
                if editor is not None:
                    stats.concurrent_edits += editor.stop()
            if editor is not None:
                editor.check(f"after the kill: {context_}")
            if outcome.killed:
                stats.kills[phase] += 1
                key = f"{phase}/{variant}"
                stats.variants[key] = stats.variants.get(key, 0) + 1
            else:
                stats.not_killed += 1
                run_seconds = 0.7 * run_seconds + 0.3 * outcome.seconds
            seen = observe(scenario.url)
            check_committed(seen, scenario.disposition, f"after the kill: {context_}")
            stats.rows_verified += len(seen.ids)
            if not outcome.killed and phase in FIRM and forced is None:
                # a "later"/"during" kill came after the run ended: kill this trial where it must land
                forced = FIRM[phase]
                continue
            attempt, forced = attempt + 1, None
            phase = phases[(n + seed + attempt) % len(phases)]
        # the next run is not killed: it must end with every id exactly once
        tag = f"t{n}ok"
        page_size, batch_size, checkpoint_every = _knobs(rng, scenario.checkpoints)
        job = Job(
            scenario.url, scenario.disposition, total, tag, page_size, batch_size, checkpoint_every, "", None
        )
        t0 = time.perf_counter()
        pipeline = Pipeline(
            PIPELINE,
            destination=scenario.url,
            dataset_name=DATASET,
            pipelines_dir=workdir / f"recovery-{n}",
            batch_size=batch_size,
        )
        pipeline.run(items_resource(job), checkpoint_every=checkpoint_every)
        pipeline.engine.dispose()
        run_seconds = 0.7 * run_seconds + 0.3 * (time.perf_counter() - t0)
        final = observe(scenario.url)
        stats.duplicates += len(final.ids) - len(set(final.ids))
        stats.missing += len(set(range(1, total + 1)) - set(final.ids))
        check_final(final, total, tag, scenario.disposition, f"after recovery: seed {seed} trial {n}")
        stats.trials += 1
        stats.rows_verified += len(final.ids)
    stats.seconds = round(time.perf_counter() - started, 2)
    return stats


def hammer(
    url: str,
    pipelines_dir: str,
    rounds: int,
    step: int,
    barrier: Any,
    queue: Any,
) -> None:
    """A worker process of the overlap test: every round, all workers load ids up to ``step * round``
    into the same slot at once, retrying on ``StateConflictError`` until their run commits."""
    from airflow_state_provider.exceptions import StateConflictError

    try:
        conflicts = rows = 0
        for r in range(rounds):
            job = Job(url, "append", step * (r + 1), "", 30, 50, None, pipelines_dir, None)
            barrier.wait(120)
            while True:
                pipeline = Pipeline(
                    "hammer", destination=url, dataset_name=DATASET, pipelines_dir=pipelines_dir
                )
                try:
                    info = pipeline.run(items_resource(job))
                    rows += info.row_counts.get(TABLE, 0)
                    break
                except StateConflictError:
                    conflicts += 1
                finally:
                    pipeline.engine.dispose()
        queue.put({"conflicts": conflicts, "rows": rows})
    except BaseException:
        barrier.abort()  # the other workers fail now instead of waiting for this one
        queue.put({"error": traceback.format_exc()})
