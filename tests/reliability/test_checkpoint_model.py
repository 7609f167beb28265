"""Model-based test of checkpoints (issue 12): random sources, failures and concurrent writers.

A hypothesis state machine runs resources of one pipeline with random ``checkpoint_every``, page sizes,
kinds of progress tracking and failures at random rows, while other writers commit: runs of other
resources and operator edits (``set``, ``drop``), between runs and in the middle of them. After every
step it checks the destination against the reference model:

* no table holds a row twice;
* every table holds exactly the rows its committed state says were loaded (a cursor's prefix, the
  pages an archive list or page counter names, a complete snapshot), so a retry neither loses nor
  duplicates a row;
* after a successful run, the table holds every row of its source;
* every operator edit (a ``note`` set on a resource) is in the newest state until it is dropped: no
  commit undoes another writer.

Fast profile (default): SQLite, a few dozen examples. Long profile: ``ASP_CHECKPOINT_MODEL=long`` runs
SQLite, DuckDB and PostgreSQL with many more (figures in RELIABILITY.md).
"""

from __future__ import annotations

import os
import random
import threading
import uuid
from dataclasses import dataclass, field

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
EXAMPLES = int(os.environ.get("ASP_CHECKPOINT_MODEL_EXAMPLES", 150 if LONG else 12))
STEPS = 14 if LONG else 8

#: how a resource tracks its progress
KINDS = ("asc", "unordered", "desc", "before", "after", "replace", "merge")
NAMES = ("r0", "r1", "r2")


class Boom(RuntimeError):
    """The source fails at a chosen row."""


@dataclass
class Spec:
    name: str
    kind: str
    page: int
    #: the source holds pages 0..pages-1 of ``page`` rows: ids 1..pages*page
    pages: int
    seed: int
    #: the source's rows were all loaded by the last run and none were added since
    complete: bool = False
    #: rows of the last complete snapshot (replace) or merge run
    snapshot: int = 0


@dataclass
class Model:
    specs: dict[str, Spec]
    notes: dict[str, str] = field(default_factory=dict)


def build(spec: Spec, fail_at: int | None, hook, tag: str):
    """The resource of ``spec`` for one run: it raises :class:`Boom` before yielding row ``fail_at``
    and calls ``hook`` once, before its second page."""
    n = spec.pages * spec.page
    yielded = [0]

    def check(rows: int) -> None:
        if fail_at is not None and yielded[0] + rows > fail_at:
            raise Boom(f"{spec.name}: failed at row {fail_at}")
        if hook is not None and yielded[0] > 0:
            hook()
        yielded[0] += rows

    def page_rows(ids: list[int]) -> list[dict]:
        return [{"id": i, "tag": tag} for i in ids]

    def chunks(ids: list[int]):
        for i in range(0, len(ids), spec.page):
            part = ids[i : i + spec.page]
            check(len(part))
            yield page_rows(part)

    kind = spec.kind
    if kind in ("asc", "unordered", "desc"):
        order = {"asc": "asc", "desc": "desc", "unordered": None}[kind]

        @resource(name=spec.name)
        def by_cursor(cursor=incremental("id", initial_value=0, row_order=order)):
            ids = list(range(cursor.start_value + 1, n + 1))
            if kind == "desc":
                ids.reverse()
            elif kind == "unordered":
                random.Random(spec.seed).shuffle(ids)
            yield from chunks(ids)

        return by_cursor
    if kind == "before":

        @resource(name=spec.name)
        def archives():
            done = current.resource_state().setdefault("pages", [])
            for p in range(spec.pages):
                if p in done:
                    continue
                done.append(p)  # written before the yield (the README's pattern); a failure follows it
                ids = list(range(p * spec.page + 1, (p + 1) * spec.page + 1))
                check(len(ids))
                yield page_rows(ids)

        return archives
    if kind == "after":

        @resource(name=spec.name)
        def paged():
            state = current.resource_state()
            for p in range(state.get("page", 0), spec.pages):
                ids = list(range(p * spec.page + 1, (p + 1) * spec.page + 1))
                check(len(ids))
                yield page_rows(ids)
                state["page"] = p + 1

        return paged
    disposition = {"replace": "replace", "merge": "merge"}[kind]

    @resource(name=spec.name, write_disposition=disposition, primary_key="id")
    def everything():
        yield from chunks(list(range(1, n + 1)))

    return everything


def make_source(resources):
    @source(name="s")
    def s():
        return resources

    return s()


class CheckpointMachine(RuleBasedStateMachine):
    url_factory = None  # set per dialect by the test

    def __init__(self) -> None:
        super().__init__()
        self.url = type(self).url_factory()
        self.engine = sa.create_engine(self.url)
        self.dir = f"/tmp/asp-model-{uuid.uuid4().hex}"
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
        pages=st.lists(st.tuples(st.integers(1, 6), st.integers(1, 4)), min_size=3, max_size=3),
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
        every=st.one_of(st.none(), st.integers(1, 12)),
        fail=st.one_of(st.none(), st.integers(0, 30)),
        other=st.sampled_from(("none", "none", "set", "drop", "run")),
    )
    def run(self, name, every, fail, other):
        assert self.model is not None
        spec = self.model.specs[name]
        self.runs += 1
        tag = f"run{self.runs}"
        others = [n for n in NAMES if n != name]
        target = others[self.runs % len(others)]
        threads: list[threading.Thread] = []
        fired: list[bool] = []

        def hook():
            if fired or other == "none":
                return
            fired.append(True)
            if self.dialect == "sqlite":
                # a load holds SQLite's write lock: the other writer waits for it, as another task would
                threads.append(threading.Thread(target=self.other_writer, args=(other, target)))
                threads[0].start()
            else:
                self.other_writer(other, target)

        resources = build(spec, fail, hook, tag)
        failed = False
        try:
            self.pipeline().run(make_source(resources), checkpoint_every=every)
        except Boom:
            failed = True
        except StateConflictError:
            # DuckDB refuses a checkpoint after a concurrent commit (its snapshot cannot merge)
            assert self.dialect == "duckdb" and fired
            failed = True
        for thread in threads:
            thread.join()
        self.finished(spec, failed)

    def finished(self, spec: Spec, failed: bool) -> None:
        assert self.model is not None
        spec.complete = not failed
        if not failed and spec.kind in ("replace", "merge"):
            spec.snapshot = spec.pages * spec.page
        if not failed and spec.kind == "replace":
            self.model.notes.pop(spec.name, None)  # a replace run starts from empty resource state

    def other_writer(self, other: str, target: str) -> None:
        """Another task or an operator commits to resource ``target``, concurrently."""
        assert self.model is not None
        if other == "run":
            spec = self.model.specs[target]
            self.pipeline().run(make_source(build(spec, None, None, "other")))
            self.finished(spec, False)
        else:
            self.edit(other, target)

    def edit(self, other: str, target: str) -> None:
        assert self.model is not None
        for _ in range(100):  # an operator runs the command again after a ConcurrentEditError
            try:
                p = self.pipeline()
                if other == "set":
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

    @rule(name=st.sampled_from(NAMES), other=st.sampled_from(("set", "drop")))
    def edit_between_runs(self, name, other):
        self.edit(other, name)

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
            ids = [r[0] for r in rows]
            where = f"{name} ({spec.kind}, page {spec.page}, {spec.pages} pages)"
            assert len(ids) == len(set(ids)), f"{where}: duplicate rows {sorted(ids)}"
            slot = slots.get(name) or {}
            size = spec.page
            if spec.kind in ("asc", "unordered", "desc"):
                last = ((slot.get("incremental") or {}).get("id") or {}).get("last_value") or 0
                expected = set(range(1, last + 1))
            elif spec.kind == "before":
                expected = {i for p in slot.get("pages", []) for i in range(p * size + 1, (p + 1) * size + 1)}
            elif spec.kind == "after":
                expected = set(range(1, slot.get("page", 0) * size + 1))
            else:
                expected = set(range(1, spec.snapshot + 1))
                assert len({r[1] for r in rows}) <= 1, f"{where}: rows of several runs {rows}"
            assert set(ids) == expected, f"{where}: table {sorted(ids)} but the state says {sorted(expected)}"
            if spec.complete:
                assert set(ids) == set(range(1, spec.pages * spec.page + 1)), f"{where}: incomplete"
            assert slot.get("note") == self.model.notes.get(name), f"{where}: note {slot.get('note')!r}"

    def exists(self, name: str) -> bool:
        with self.engine.connect() as conn:
            return sa.inspect(conn).has_table(name, schema="ds")

    def rows(self, name: str) -> list[tuple]:
        with self.pipeline().sql_client() as client:
            return client.execute_sql(f'SELECT id, tag FROM "{name}" ORDER BY id')


@pytest.mark.parametrize("dialect", DIALECTS)
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

    class Machine(CheckpointMachine):
        url_factory = staticmethod(fresh_url)

    run_state_machine_as_test(
        Machine, settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None)
    )
