"""Model-based test of checkpoints (issue 12): random sources, failures and concurrent writers.

A hypothesis state machine runs resources of one pipeline with random ``checkpoint_every``, page sizes,
kinds of progress tracking and failures at random rows, while other writers commit: runs of other
resources and operator edits (``set``, ``drop``, also of the running resource's own slot), between runs
and at random pages in the middle of them, so between two checkpoints of a run. Most resources track
their progress with ``incremental(..., row_order="asc")`` cursors, the kind that commits at checkpoints:
plain ids, cursor values shared by several rows across page (and checkpoint) boundaries, and ``merge``
on a primary key whose rows are updated by later events. After every step it checks the destination
against the reference model:

* no table holds a row twice;
* every table holds exactly the rows its committed state says were loaded (a cursor's prefix, with the
  boundary rows its stored hashes name; the newest version of each merged key up to the cursor; the
  pages an archive list or page counter names; a complete snapshot), so a retry neither loses nor
  duplicates a row;
* after a successful run, the table holds every row of its source;
* every operator edit (a ``note`` set on a resource) is in the newest state until it is dropped: no
  commit undoes another writer.

Fast profile (default): SQLite. Long profile: ``ASP_CHECKPOINT_MODEL=long`` runs SQLite, DuckDB and
PostgreSQL with many more examples (figures and the command in RELIABILITY.md); its test has no
pytest timeout, since a timeout that fires inside an example is reported by hypothesis as a failure
it cannot replay (``FlakyStrategyDefinition``).
"""

from __future__ import annotations

import collections
import os
import random
import threading
import uuid
from dataclasses import dataclass, field
from queue import Queue

import pytest
import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from airflow_state_provider import Pipeline, current, incremental, resource, source
from airflow_state_provider import operations as ops
from airflow_state_provider.exceptions import StateConflictError

LONG = os.environ.get("ASP_CHECKPOINT_MODEL") == "long"
DIALECTS = ("sqlite", "duckdb", "postgresql") if LONG else ("sqlite",)
#: examples per database: the long profile's budgets fit about 20 minutes each on the shared 2-core machine
BUDGET = {"sqlite": 120, "duckdb": 60, "postgresql": 60} if LONG else {"sqlite": 30}
STEPS = 14 if LONG else 10

#: how a resource tracks its progress; the kinds that commit at checkpoints are drawn most often:
#: ``asc`` (ids as cursor), ``ties`` (a cursor value shared by TIES consecutive rows: boundary rows
#: deduplicated by their hashes), ``upsert`` (``merge`` on ``id`` with an ascending ``ts`` cursor; ids
#: come back with newer events)
KINDS = ("asc", "ties", "upsert") * 2 + ("unordered", "desc", "before", "after", "replace", "merge")
CURSORS = ("asc", "ties", "upsert", "unordered", "desc")
NAMES = ("r0", "r1", "r2")
TIES = 3

#: what the runs of one test did (printed at the end: the figures in RELIABILITY.md)
STATS: collections.Counter[str] = collections.Counter()


class Boom(RuntimeError):
    """The source fails at a chosen row."""


@dataclass
class Spec:
    name: str
    kind: str
    page: int
    #: the source holds pages 0..pages-1 of ``page`` events: events 1..pages*page
    pages: int
    seed: int
    #: the source's rows were all loaded by the last run and none were added since
    complete: bool = False
    #: events of the last complete snapshot (replace) or merge run
    snapshot: int = 0

    @property
    def events(self) -> int:
        return self.pages * self.page

    def row(self, j: int) -> tuple[int, int]:
        """``(id, ts)`` of event ``j`` (1-based)."""
        if self.kind == "ties":
            return j, (j - 1) // TIES + 1
        if self.kind == "upsert":
            keys = 2 * self.page - 1  # fixed per resource: ids come back as the source grows
            return (j - 1) % keys + 1, j
        return j, j

    def prefix(self, count: int) -> set[tuple[int, int]]:
        """What the table holds after the first ``count`` events were loaded (merge: newest per id)."""
        newest: dict[int, int] = {}
        for j in range(1, count + 1):
            i, ts = self.row(j)
            newest[i] = ts
        return set(newest.items())


@dataclass
class Model:
    specs: dict[str, Spec]
    notes: dict[str, str] = field(default_factory=dict)
    #: the ``note`` an operator set on the source (a key the running code's source pins)
    source_note: str | None = None


def build(spec: Spec, fail_at: int | None, hook, tag: str):
    """The resource of ``spec`` for one run: it raises :class:`Boom` before yielding row ``fail_at``
    and calls ``hook(page)`` before each page after the first (page counts from 1 in this run)."""
    yielded = [0]
    pages = [0]

    def check(rows: int) -> None:
        if hook is not None and pages[0] > 0:
            hook(pages[0])
        if fail_at is not None and yielded[0] + rows > fail_at:
            raise Boom(f"{spec.name}: failed at row {fail_at}")
        yielded[0] += rows
        pages[0] += 1

    def page_rows(events: list[int]) -> list[dict]:
        return [dict(zip(("id", "ts"), spec.row(j), strict=True), tag=tag) for j in events]

    def chunks(events: list[int]):
        for i in range(0, len(events), spec.page):
            part = events[i : i + spec.page]
            check(len(part))
            yield page_rows(part)

    kind = spec.kind
    n = spec.events
    if kind in CURSORS:
        order = {"unordered": None}.get(kind, kind if kind == "desc" else "asc")
        hints = {"write_disposition": "merge", "primary_key": "id"} if kind == "upsert" else {}
        if kind == "ties":
            hints = {"primary_key": "id"}  # the boundary rows' hashes are their keys (the tag changes)

        @resource(name=spec.name, **hints)
        def by_cursor(cursor=incremental("ts", initial_value=0, row_order=order)):
            if kind == "ties":
                # from the boundary value: the rows already loaded there are dropped by their hashes
                events = [j for j in range(1, n + 1) if spec.row(j)[1] >= cursor.start_value]
            else:
                events = list(range(cursor.start_value + 1, n + 1))
            if kind == "desc":
                events.reverse()
            elif kind == "unordered":
                random.Random(spec.seed).shuffle(events)
            yield from chunks(events)

        return by_cursor
    if kind == "before":

        @resource(name=spec.name)
        def archives():
            done = current.resource_state().setdefault("pages", [])
            for p in range(spec.pages):
                if p in done:
                    continue
                done.append(p)  # written before the yield (the README's pattern); a failure follows it
                events = list(range(p * spec.page + 1, (p + 1) * spec.page + 1))
                check(len(events))
                yield page_rows(events)

        return archives
    if kind == "after":

        @resource(name=spec.name)
        def paged():
            state = current.resource_state()
            for p in range(state.get("page", 0), spec.pages):
                events = list(range(p * spec.page + 1, (p + 1) * spec.page + 1))
                check(len(events))
                yield page_rows(events)
                state["page"] = p + 1

        return paged

    @resource(name=spec.name, write_disposition=kind, primary_key="id")
    def everything():
        yield from chunks(list(range(1, n + 1)))

    return everything


def make_source(resources):
    @source(name="s")
    def s():
        return resources

    return s()


#: a writer committing in the middle of a run: before page ``at``, ``what`` on the resource ``target``
#: positions away from the running one (0: the running resource itself, only for ``set``)
WRITERS = st.lists(
    st.tuples(st.integers(1, 4), st.sampled_from(("set", "drop", "run", "source set")), st.integers(0, 2)),
    max_size=2,
)


class CheckpointMachine(RuleBasedStateMachine):
    url_factory = None  # set per dialect by the test
    dir_factory = None

    def __init__(self) -> None:
        super().__init__()
        self.url = type(self).url_factory()
        self.engine = sa.create_engine(self.url)
        self.dir = type(self).dir_factory()
        self.model: Model | None = None
        self.runs = 0

    def teardown(self) -> None:
        self.engine.dispose()

    def pipeline(self) -> Pipeline:
        return Pipeline("m", destination=self.engine, dataset_name="ds", pipelines_dir=self.dir)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @initialize(
        kinds=st.lists(st.sampled_from(KINDS), min_size=len(NAMES), max_size=len(NAMES)),
        pages=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=3, max_size=3),
    )
    def setup(self, kinds, pages):
        specs = {
            name: Spec(name, kind, page, count, seed=i)
            for i, (name, kind, (page, count)) in enumerate(zip(NAMES, kinds, pages, strict=True))
        }
        self.model = Model(specs)

    # -- rules ----------------------------------------------------------------------------------------

    @rule(
        name=st.sampled_from(NAMES),
        every=st.one_of(st.none(), st.integers(1, 8)),
        fail=st.one_of(st.none(), st.integers(0, 40)),
        writers=WRITERS,
    )
    def run(self, name, every, fail, writers):
        self.load(name, every, fail, writers)

    @rule(
        name=st.sampled_from(NAMES),
        every=st.integers(1, 4),
        fail=st.one_of(st.none(), st.integers(2, 30)),
        writers=WRITERS,
        grow=st.integers(0, 2),
    )
    def run_with_checkpoints(self, name, every, fail, writers, grow):
        """A run with frequent checkpoints over new rows: most of them commit at checkpoints."""
        assert self.model is not None
        self.model.specs[name].pages += grow
        self.load(name, every, fail, writers)

    def load(self, name: str, every: int | None, fail: int | None, writers: list) -> None:
        assert self.model is not None
        spec = self.model.specs[name]
        before = self.cursor(name)
        self.runs += 1
        tag = f"run{self.runs}"
        errors: list[BaseException] = []
        fired: list[tuple[str, str]] = []
        plan: list[tuple[int, str, str]] = []
        for at, what, offset in writers:
            target = NAMES[(NAMES.index(name) + (offset if what == "set" else offset or 1)) % len(NAMES)]
            if what == "source set":
                target = "s"
            if (what, target) not in [(w, t) for _, w, t in plan]:
                plan.append((at, what, target))
        # on SQLite a load holds the write lock: the other writers wait for it, as other tasks would, and
        # commit when a checkpoint or the end of the run releases it. One thread runs them in the order
        # they were started, so the model sees their commits in that order.
        queue: Queue[tuple[str, str] | None] = Queue()
        worker = threading.Thread(target=self.other_writers, args=(queue, errors), daemon=True)
        if self.dialect == "sqlite":
            worker.start()

        def hook(page: int) -> None:
            for at, what, target in plan:
                if at != page:
                    continue
                fired.append((what, target))
                if self.dialect == "sqlite":
                    queue.put((what, target))
                else:
                    self.other_writer(what, target, errors)

        resources = build(spec, fail, hook, tag)
        failed = False
        STATS["runs"] += 1
        STATS[f"runs with checkpoint_every ({spec.kind})" if every else "runs without checkpoint_every"] += 1
        info = None
        try:
            info = self.pipeline().run(make_source(resources), checkpoint_every=every)
        except Boom:
            failed = True
            STATS["runs failed at a random row"] += 1
            if self.cursor(name) != before:
                STATS["runs failed after a checkpoint had committed"] += 1
        except StateConflictError:
            # another writer changed this run's own slot (an operator's set) and the run changed it too;
            # on DuckDB also any concurrent commit (its snapshot cannot merge)
            assert fired and (self.dialect == "duckdb" or ("set", name) in fired), fired
            failed = True
            STATS["runs refused after a concurrent commit"] += 1
        if self.dialect == "sqlite":
            queue.put(None)
            worker.join()
        if errors:
            raise errors[0]
        for what, target in fired:
            STATS[f"concurrent {what}s" + (" of the running resource" if target == name else "")] += 1
        if info is not None:
            STATS["checkpoints committed"] += info.checkpoints
            STATS[f"checkpoints committed ({spec.kind})"] += info.checkpoints
        self.finished(spec, failed, note_set=("set", name) in fired)

    def finished(self, spec: Spec, failed: bool, note_set: bool = False) -> None:
        assert self.model is not None
        spec.complete = not failed
        if not failed and spec.kind in ("replace", "merge"):
            spec.snapshot = spec.events
        if not failed and spec.kind == "replace" and not note_set:
            self.model.notes.pop(spec.name, None)  # a replace run starts from empty resource state

    def other_writers(self, queue: Queue[tuple[str, str] | None], errors: list[BaseException]) -> None:
        while (job := queue.get()) is not None:
            self.other_writer(*job, errors)

    def other_writer(self, what: str, target: str, errors: list[BaseException]) -> None:
        """Another task or an operator commits to resource ``target``, concurrently."""
        assert self.model is not None
        try:
            if what == "run":
                spec = self.model.specs[target]
                self.pipeline().run(make_source(build(spec, None, None, "other")))
                self.finished(spec, False)
            else:
                self.edit(what, target)
        except BaseException as e:  # reported by the run rule, in the test's thread
            errors.append(e)

    def edit(self, what: str, target: str) -> None:
        assert self.model is not None
        for _ in range(100):  # an operator runs the command again after a ConcurrentEditError
            try:
                p = self.pipeline()
                if what == "source set":
                    note = uuid.uuid4().hex[:8]
                    ops.apply(ops.plan_set(p, "sources.s.note", note, create=True))
                    self.model.source_note = note
                elif what == "set":
                    note = uuid.uuid4().hex[:8]
                    ops.apply(ops.plan_set(p, f"sources.s.resources.{target}.note", note, create=True))
                    self.model.notes[target] = note
                else:
                    try:
                        plan = ops.plan_drop(p, [target])
                    except ops.StateOperationError:
                        return  # nothing of it committed yet
                    ops.apply(plan)
                    self.model.notes.pop(target, None)
                    spec = self.model.specs[target]
                    spec.complete, spec.snapshot = False, 0
                return
            except ops.ConcurrentEditError:
                continue
            except ops.StateOperationError:
                return  # no state yet at all
        raise AssertionError("the edit never got through")

    @rule(name=st.sampled_from(NAMES), what=st.sampled_from(("set", "drop")))
    def edit_between_runs(self, name, what):
        STATS[f"{what}s between runs"] += 1
        self.edit(what, name)

    @rule(name=st.sampled_from(NAMES), pages=st.integers(1, 3))
    def source_grows(self, name, pages):
        assert self.model is not None
        spec = self.model.specs[name]
        spec.pages += pages
        spec.complete = False

    # -- the reference model ---------------------------------------------------------------------------

    @invariant()
    def tables_match_the_committed_state(self):
        if self.model is None:
            return
        state = self.pipeline().state
        slots = (state.get("sources", {}).get("s") or {}).get("resources") or {}
        for name, spec in self.model.specs.items():
            rows = self.rows(name) if self.exists(name) else []
            loaded = [(r[0], r[1]) for r in rows]
            ids = [r[0] for r in rows]
            where = f"{name} ({spec.kind}, page {spec.page}, {spec.pages} pages)"
            assert len(ids) == len(set(ids)), f"{where}: duplicate rows {sorted(ids)}"
            slot = slots.get(name) or {}
            cursor = (slot.get("incremental") or {}).get("ts") or {}
            last = cursor.get("last_value") or 0
            if spec.kind == "ties":
                # rows before the boundary value, and the boundary rows the stored hashes name
                count = (last - 1) * TIES + len(cursor.get("unique_hashes") or []) if last else 0
                expected = spec.prefix(count)
            elif spec.kind in CURSORS:
                expected = spec.prefix(last)
            elif spec.kind == "before":
                done = slot.get("pages", [])
                events = [j for p in done for j in range(p * spec.page + 1, (p + 1) * spec.page + 1)]
                expected = {spec.row(j) for j in events}
            elif spec.kind == "after":
                expected = spec.prefix(slot.get("page", 0) * spec.page)
            else:
                expected = spec.prefix(spec.snapshot)
                assert len({r[2] for r in rows}) <= 1, f"{where}: rows of several runs {rows}"
            assert set(loaded) == expected, (
                f"{where}: table {sorted(loaded)} but the state {slot} says {sorted(expected)}"
            )
            if spec.complete:
                assert set(loaded) == spec.prefix(spec.events), f"{where}: incomplete {sorted(loaded)}"
            assert slot.get("note") == self.model.notes.get(name), f"{where}: note {slot.get('note')!r}"
            STATS["rows checked"] += len(ids)
        source_note = (state.get("sources", {}).get("s") or {}).get("note")
        assert source_note == self.model.source_note, f"source note {source_note!r}"
        STATS["checks"] += 1

    def cursor(self, name: str):
        slots = (self.pipeline().state.get("sources", {}).get("s") or {}).get("resources") or {}
        return ((slots.get(name) or {}).get("incremental") or {}).get("ts")

    def exists(self, name: str) -> bool:
        # through the pipeline's engine: the caller's engine is never set up (on SQLite, "ds" is a file
        # attached to the pipeline's connections only)
        pipeline = self.pipeline()
        try:
            with pipeline.engine.connect() as conn:
                return sa.inspect(conn).has_table(name, schema="ds")
        finally:
            pipeline.engine.dispose()

    def rows(self, name: str) -> list[tuple]:
        with self.pipeline().sql_client() as client:
            return client.execute_sql(f'SELECT id, ts, tag FROM "{name}" ORDER BY id')


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.timeout(0 if LONG else 600)
def test_checkpoints_against_the_reference_model(dialect, tmp_path, request):
    from tests.conftest import make_url

    if dialect == "postgresql":
        request.applymarker(pytest.mark.postgres)

    def fresh_url() -> str:
        """A new empty database for every example."""
        if dialect != "postgresql":
            return make_url(dialect, tmp_path, request)
        server = request.getfixturevalue("postgres_server")
        if isinstance(server, str):
            pytest.skip("needs the throwaway PostgreSQL cluster (one database per example)")
        return server.url(server.create_database())

    def fresh_dir() -> str:
        return str(tmp_path / f"pipelines-{uuid.uuid4().hex}")

    class Machine(CheckpointMachine):
        url_factory = staticmethod(fresh_url)
        dir_factory = staticmethod(fresh_dir)

    examples = int(os.environ.get("ASP_CHECKPOINT_MODEL_EXAMPLES", BUDGET[dialect]))
    STATS.clear()
    run_state_machine_as_test(
        Machine, settings=settings(max_examples=examples, stateful_step_count=STEPS, deadline=None)
    )
    print(f"\ncheckpoint model, {dialect}: {examples} examples: {dict(sorted(STATS.items()))}")
