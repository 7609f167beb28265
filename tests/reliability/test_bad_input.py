"""Every bad input of DESIGN §12: a clear error naming the culprit, and the destination unchanged
(issue 9 §4).

Each test first commits a good load (tables, rows, a state version), takes a snapshot of every row of
every table (data, ``_dlt_loads`` and ``_dlt_pipeline_state``), feeds one bad input, and compares.
"""

from __future__ import annotations

import base64
import socket
import threading
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_state_provider import Pipeline, current, incremental, resource, source
from airflow_state_provider.destination.dialects import dialect_for
from airflow_state_provider.destination.engine import create_engine
from airflow_state_provider.destination.store import loads_table, new_load_id, state_table
from airflow_state_provider.exceptions import (
    IncrementalCursorPathMissing,
    IncrementalCursorTypeError,
    PipelineStateError,
    ReadOnlyStateError,
    SchemaConflictError,
    StateConflictError,
    StateCorruptError,
    StateNotSerializableError,
    StateTooLargeError,
)
from airflow_state_provider.state import codec
from tests.reliability import snapshot

NAME = "bad_input"


def new_pipeline(url: str, tmp_path: Path, **kw: Any) -> Pipeline:
    """A Pipeline on a clean pipelines dir, as on a fresh worker."""
    return Pipeline(NAME, destination=url, dataset_name="ds", pipelines_dir=tmp_path / uuid.uuid4().hex, **kw)


def events_source(
    rows: Callable[[], Iterator[Any]] | list[Any], state: dict | None = None, cursor: bool = True
):
    """Source ``src`` with resource ``events`` yielding ``rows`` (incremental on ``updated_at``, unless
    ``cursor`` is False); it counts its runs in the source state and adds ``state`` to its own."""

    def produce() -> Iterator[Any]:
        current.source_state()["seen_runs"] = current.source_state().get("seen_runs", 0) + 1
        current.resource_state().update(state or {})
        if callable(rows):
            yield from rows()
        else:
            yield rows

    @source(name="src")
    def src():
        if not cursor:
            return resource(name="events", primary_key="id")(produce)

        @resource(name="events", primary_key="id")
        def events(updated_at=incremental("updated_at", initial_value=0)):
            yield from produce()

        return events

    return src()


GOOD = [{"id": i, "updated_at": i, "amount": i * 10, "note": f"n{i}"} for i in range(1, 21)]


@pytest.fixture
def seeded(dest_url: str, tmp_path: Path) -> tuple[str, snapshot.Snapshot]:
    """A destination with one committed load of ``GOOD``; returns the URL and its snapshot."""
    info = new_pipeline(dest_url, tmp_path).run(events_source(GOOD))
    assert info.row_counts == {"events": 20}
    return dest_url, snapshot.take(dest_url, "ds")


def unchanged(url: str, before: snapshot.Snapshot) -> None:
    assert snapshot.take(url, "ds") == before, "the failed run changed the destination"


# -- state values ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        ({1, 2}, "set"),
        (object(), "object"),
        (lambda: 1, "function"),
        (complex(1, 2), "complex"),
        ({"deep": [1, {"deeper": frozenset()}]}, "frozenset"),
        (2**70, "64-bit"),
        ("\ud800", "surrogate"),
        ("\uf026 3.14", "marker"),  # a plain str that would come back as a Decimal
    ],
    ids=["set", "object", "function", "complex", "nested", "bigint", "surrogate", "marker"],
)
def test_non_serializable_state_value_names_pipeline_and_path(seeded, tmp_path, bad, kind):
    url, before = seeded
    with pytest.raises(StateNotSerializableError) as failure:
        new_pipeline(url, tmp_path).run(events_source([{"id": 99, "updated_at": 99}], {"cursor_meta": bad}))
    message = str(failure.value)
    assert f"'{NAME}'" in message and "sources.src.resources.events.cursor_meta" in message
    assert kind in message
    unchanged(url, before)


def test_state_over_the_size_limit_names_the_biggest_path(seeded, tmp_path):
    url, before = seeded
    with pytest.raises(StateTooLargeError) as failure:
        new_pipeline(url, tmp_path, max_state_bytes=20_000).run(
            events_source([{"id": 99, "updated_at": 99}], {"seen_ids": list(range(10_000))})
        )
    message = str(failure.value)
    assert f"'{NAME}'" in message and "max_state_bytes" in message
    assert "sources.src.resources.events.seen_ids" in message
    unchanged(url, before)


# -- corrupt rows in the state table -----------------------------------------------------------------


def _bomb(size: int) -> str:
    packer = zlib.compressobj(9)
    chunk = bytes(1024 * 1024)
    body = b"".join(packer.compress(chunk) for _ in range(size // len(chunk))) + packer.flush()
    return base64.b64encode(body).decode("ascii")


def _tampered(url: str) -> tuple[str, str]:
    """A well-encoded blob whose content differs from its (copied) version hash."""
    state = Pipeline(NAME, destination=url, dataset_name="ds", pipelines_dir="/nonexistent").state
    good_hash = state["_version_hash"]
    state["sources"]["src"]["resources"]["events"]["incremental"]["updated_at"]["last_value"] = 10**6
    return codec.encode_state(state), good_hash


CORRUPT: dict[str, Callable[[str], tuple[str, str | None]]] = {
    "not_base64_nor_json": lambda url: ("this is { not state", None),
    "base64_not_zlib": lambda url: (base64.b64encode(b"garbage bytes").decode(), None),
    "truncated_zlib": lambda url: (base64.b64encode(zlib.compress(b'{"a": 1}' * 50)[:-9]).decode(), None),
    "json_array": lambda url: (base64.b64encode(zlib.compress(b"[1, 2, 3]")).decode(), None),
    "hash_mismatch": _tampered,
    "decompression_bomb": lambda url: (_bomb(200 * 1024 * 1024), None),
}


def insert_state_row(url: str, blob: str, version: int, version_hash: str | None) -> str:
    """Write a state row and its ``_dlt_loads`` row, as a buggy or hostile writer would."""
    engine = create_engine(url)
    dialect_for(engine).prepare("ds")
    metadata = sa.MetaData()
    load_id = new_load_id()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(loads_table(metadata, "ds")).values(
                load_id=load_id, schema_name=NAME, status=0, inserted_at=datetime.now(UTC)
            )
        )
        conn.execute(
            sa.insert(state_table(metadata, "ds")).values(
                version=version,
                engine_version=4,
                pipeline_name=NAME,
                state=blob,
                created_at=datetime.now(UTC),
                version_hash=version_hash,
                _dlt_load_id=load_id,
                _dlt_id=uuid.uuid4().hex[:14],
            )
        )
    engine.dispose()
    return load_id


def delete_state_row(url: str, load_id: str) -> None:
    engine = create_engine(url)
    dialect_for(engine).prepare("ds")
    metadata = sa.MetaData()
    with engine.begin() as conn:
        states = state_table(metadata, "ds")
        conn.execute(sa.delete(states).where(states.c._dlt_load_id == load_id))
    engine.dispose()


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_corrupt_state_row_fails_loudly_and_is_never_silently_reset(seeded, tmp_path, kind):
    url, _ = seeded
    blob, version_hash = CORRUPT[kind](url)
    load_id = insert_state_row(url, blob, 99, version_hash)
    before = snapshot.take(url, "ds")
    ran: list[int] = []

    def rows() -> Iterator[dict]:
        ran.append(1)
        yield {"id": 100, "updated_at": 100}

    with pytest.raises(StateCorruptError) as failure:
        new_pipeline(url, tmp_path).run(events_source(rows))
    message = str(failure.value)
    assert f"pipeline '{NAME}'" in message and "version 99" in message and load_id in message
    if kind == "decompression_bomb":
        assert "limit" in message
    assert ran == []  # restore failed before any user code: no run on a reset state
    unchanged(url, before)
    with pytest.raises(StateCorruptError):
        _ = new_pipeline(url, tmp_path).state

    # the way out: drop the bad version; the previous one is restored and nothing was lost
    delete_state_row(url, load_id)
    info = new_pipeline(url, tmp_path).run(events_source([*GOOD, {"id": 21, "updated_at": 21}]))
    assert info.row_counts == {"events": 1}


# -- cursors -----------------------------------------------------------------------------------------


def test_cursor_path_missing_raises_by_default(seeded, tmp_path):
    url, before = seeded
    rows = [{"id": 30, "updated_at": 30}, {"id": 31, "amount": 5}]
    with pytest.raises(IncrementalCursorPathMissing) as failure:
        new_pipeline(url, tmp_path).run(events_source(rows))
    message = str(failure.value)
    assert f"`{NAME}`" in message and "`events`" in message and "`updated_at`" in message
    assert "{'id': 31" in message  # the row that lacks it
    unchanged(url, before)


@pytest.mark.parametrize(("policy", "expected"), [("exclude", [30]), ("include", [30, 31])])
def test_cursor_path_missing_per_policy(dest_url, tmp_path, policy, expected):
    @resource(name="events")
    def events(updated_at=incremental("updated_at", on_cursor_value_missing=policy)):
        yield [{"id": 30, "updated_at": 30}, {"id": 31, "amount": 5}]

    info = new_pipeline(dest_url, tmp_path).run(events)
    assert info.row_counts == {"events": len(expected)}
    with new_pipeline(dest_url, tmp_path).sql_client() as client:
        assert [r[0] for r in client.execute_sql("SELECT id FROM events ORDER BY id")] == expected


def test_cursor_type_change_between_runs(seeded, tmp_path):
    url, before = seeded  # the stored last_value is the int 20
    with pytest.raises(IncrementalCursorTypeError) as failure:
        new_pipeline(url, tmp_path).run(events_source([{"id": 40, "updated_at": "2024-05-01T00:00:00Z"}]))
    message = str(failure.value)
    assert f"`{NAME}`" in message and "`events`" in message and "`updated_at`" in message
    assert "int" in message and "str" in message
    unchanged(url, before)


# -- rows --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_row",
    ["a string", 42, (1, 2), b"bytes", 3.5, {"set"}],
    ids=["str", "int", "tuple", "bytes", "float", "set"],
)
def test_rows_that_are_not_dicts(seeded, tmp_path, bad_row):
    url, before = seeded

    def rows() -> Iterator[Any]:
        # good rows first, in small batches that reach the database, then the bad one
        yield [{"id": 100 + i, "updated_at": 100 + i} for i in range(30)]
        yield [bad_row]

    with pytest.raises(PipelineStateError) as failure:
        new_pipeline(url, tmp_path, batch_size=7).run(events_source(rows, cursor=False))
    message = str(failure.value)
    assert f"'{NAME}'" in message and "table 'events'" in message and "must be dicts" in message
    assert type(bad_row).__name__ in message
    unchanged(url, before)


@pytest.mark.parametrize(
    ("column", "value", "found"),
    [
        ("amount", "not a number", "text"),
        ("amount", 2**70, "integer beyond 64 bits"),
        ("amount", datetime(2024, 1, 1, tzinfo=UTC), "timestamp"),
        ("note", Decimal("1.5"), "decimal"),
        ("amount", {"nested": "dict"}, None),  # becomes amount__nested: no conflict, a new column
    ],
    ids=["text_in_bigint", "huge_int", "timestamp_in_bigint", "decimal_in_text", "nested_dict"],
)
def test_column_type_conflicts(seeded, tmp_path, column, value, found):
    url, before = seeded

    def rows() -> Iterator[list[dict]]:
        for page in range(5):  # five batches reach the database before the conflicting row
            yield [{"id": 200 + page * 10 + i, "updated_at": 200 + page * 10 + i} for i in range(10)]
        yield [{"id": 300, "updated_at": 300, column: value}]

    pipeline = new_pipeline(url, tmp_path, batch_size=10)
    if found is None:
        assert pipeline.run(events_source(rows)).row_counts == {"events": 51}
        return
    with pytest.raises(SchemaConflictError) as failure:
        pipeline.run(events_source(rows))
    message = str(failure.value)
    assert f"'{NAME}'" in message and f"column {column!r} of table ds.events" in message
    assert found in message
    unchanged(url, before)


def test_type_conflict_after_checkpoints_keeps_exactly_the_checkpointed_rows(seeded, tmp_path):
    """With checkpoints, what was committed stays, and the state says exactly that much."""
    url, _ = seeded

    def rows() -> Iterator[list[dict]]:
        for page in range(6):
            yield [{"id": 500 + page * 10 + i, "updated_at": 500 + page * 10 + i} for i in range(10)]
        yield [{"id": 600, "updated_at": 600, "amount": "oops"}]

    @source(name="src")
    def src():
        # ascending cursor, no state written by the code: what checkpoints commit early
        @resource(name="events", primary_key="id")
        def events(updated_at=incremental("updated_at", initial_value=0, row_order="asc")):
            yield from rows()

        return events

    with pytest.raises(SchemaConflictError):
        new_pipeline(url, tmp_path).run(src(), checkpoint_every=20)
    pipeline = new_pipeline(url, tmp_path)
    last = pipeline.state["sources"]["src"]["resources"]["events"]["incremental"]["updated_at"]["last_value"]
    with pipeline.sql_client() as client:
        ids = [r[0] for r in client.execute_sql("SELECT id FROM events ORDER BY id")]
    # checkpoints after pages 2, 4 and 6 (when the next item arrives); only the bad row's chunk is lost
    assert last == 559
    assert ids == [*range(1, 21), *range(500, 560)]


# -- identifiers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["__", "   ", "____", "\t"], ids=["dunder", "spaces", "underscores", "tab"])
def test_table_names_that_normalize_to_nothing(seeded, tmp_path, table):
    url, before = seeded
    with pytest.raises(PipelineStateError) as failure:
        new_pipeline(url, tmp_path).run([{"id": 1}], table_name=table)
    message = str(failure.value)
    assert f"'{NAME}'" in message and f"table name {table!r}" in message and "Rename it" in message
    unchanged(url, before)


@pytest.mark.parametrize("key", [1, None, ("a", "b"), 2.5], ids=["int", "none", "tuple", "float"])
def test_column_names_that_are_not_strings(seeded, tmp_path, key):
    url, before = seeded
    with pytest.raises(PipelineStateError) as failure:
        new_pipeline(url, tmp_path).run([{"id": 1, key: "x"}], table_name="cols")
    message = str(failure.value)
    assert f"'{NAME}'" in message and "table 'cols'" in message and "names must be strings" in message
    unchanged(url, before)


# -- the destination ---------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on return: nothing listens there


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_unreachable_destination_fails_before_user_code_and_writes_nothing(tmp_path, kind):
    port = _closed_port()
    url = {
        "postgresql": f"postgresql+psycopg://loader:s3cret@127.0.0.1:{port}/warehouse",
        "sqlite": f"sqlite:///{tmp_path / 'missing-dir' / 'w.sqlite'}",
    }[kind]
    ran: list[int] = []

    def rows() -> Iterator[dict]:
        ran.append(1)
        yield {"id": 1, "updated_at": 1}

    workdir = tmp_path / "pipelines"
    with pytest.raises(sa.exc.OperationalError) as failure:
        Pipeline(NAME, destination=url, dataset_name="ds", pipelines_dir=workdir).run(events_source(rows))
    message = str(failure.value)
    if kind == "postgresql":
        assert f'"127.0.0.1", port {port} failed' in message and "Connection refused" in message
        assert "s3cret" not in message
    else:
        assert "unable to open database file" in message
    assert ran == []
    assert not workdir.exists() or not any(workdir.rglob("*"))
    assert not (tmp_path / "missing-dir").exists()


def test_concurrent_conflicting_writer_leaves_only_the_winner(seeded, tmp_path):
    """The loser restored the same version as the winner, then committed after it: it fails naming
    the slot, and the destination is exactly what the winner left."""
    url, _ = seeded
    restored, winner_done = threading.Event(), threading.Event()

    @source(name="src")
    def slow_src():
        restored.set()
        assert winner_done.wait(60)

        @resource(name="events", primary_key="id")
        def events(updated_at=incremental("updated_at", initial_value=0)):
            yield [{"id": 700 + i, "updated_at": 700 + i} for i in range(50)]

        return events

    outcome: list[BaseException | None] = []

    def loser() -> None:
        try:
            new_pipeline(url, tmp_path).run(slow_src())
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=loser)
    thread.start()
    assert restored.wait(60)
    new_pipeline(url, tmp_path).run(events_source([{"id": 800, "updated_at": 800}]))
    after_winner = snapshot.take(url, "ds")
    winner_done.set()
    thread.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0], StateConflictError), outcome
    message = str(outcome[0])
    assert f"'{NAME}'" in message and "Retry" in message
    if not url.startswith("duckdb"):
        assert "sources.src.resources.events" in message
    unchanged(url, after_winner)


def test_source_state_write_in_a_non_writer_run(seeded, tmp_path):
    url, before = seeded
    reason = (
        f"pipeline {NAME!r}: source state sources.src is read-only in task 'src.events': "
        "the state writer of source 'src' is task 'src.users'"
    )
    with pytest.raises(ReadOnlyStateError) as failure:
        new_pipeline(url, tmp_path).run(
            events_source([{"id": 900, "updated_at": 900}]), read_only_sources={"src": reason}
        )
    assert str(failure.value) == reason  # the caller's reason is the message (decompose_source's)
    unchanged(url, before)
