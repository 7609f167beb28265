"""Hostile names, decompression bombs, secrets and code execution (issue 9 §5).

* Identifiers are normalized and quoted, or rejected: table, column, dataset and pipeline names with
  quotes, semicolons, ``__``, Unicode and extreme lengths never change the statement they appear in.
  A sentinel table ``y`` (in the dataset and in the default schema) survives every attempt to drop it.
* A decompression-bomb state row is refused within the decode limit: peak memory is measured in a
  fresh subprocess (Linux peak RSS, ``VmHWM``, reset before the restore).
* Passwords never appear in the ``airflow-state`` command's output, whatever fails.
* Nothing in the package unpickles or evaluates: an AST scan of every module.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import socket
import subprocess
import sys
import uuid
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

import airflow_state_provider
from airflow_state_provider import Pipeline, current, resource
from airflow_state_provider.destination.dialects import dialect_for
from airflow_state_provider.destination.engine import create_engine
from airflow_state_provider.destination.store import loads_table, new_load_id, state_table

REPO = Path(__file__).resolve().parents[2]

HOSTILE_TABLES = [
    'x"; DROP TABLE y; --',
    "x'); DROP TABLE y; --",
    "y; DROP TABLE y",
    "`y`; DELETE FROM y",
    "[y]]; DROP TABLE y",
    "naïve tëst",
    "表格",
    "emoji🙂",
    "a__b__c",
    "select",
    "T" * 300,
]
HOSTILE_COLUMNS = [
    'c"; DROP TABLE y; --',
    "c'; DELETE FROM y; --",
    "from",
    "größe",
    "x__y__z",
    "C" * 300,
]
HOSTILE_PIPELINES = [
    'p"; DROP TABLE y; --',
    "p'); DELETE FROM _dlt_loads; --",
    "パイプライン",
    "p__q",
    "P" * 200,
    "Robert'); DROP TABLE students;--",
]
HOSTILE_DATASETS = ['d"; DROP TABLE y; --', "d'x", "dätaset", "d__s", "d" * 60]


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _engine(url: str, *datasets: str) -> sa.Engine:
    engine = create_engine(url)
    for dataset in datasets:
        dialect_for(engine).prepare(dataset)
    return engine


def plant_sentinels(url: str, dataset: str) -> None:
    """A table ``y`` with one row in the dataset and in the default schema."""
    engine = _engine(url, dataset)
    dialect = dialect_for(engine)
    with engine.begin() as conn:
        if dialect.creates_schemas:
            dialect.create_dataset(conn, dataset)
        for schema in (dataset, None):
            table = f"{_quote(schema)}.y" if schema else "y"
            conn.exec_driver_sql(f"CREATE TABLE {table} (v TEXT)")
            conn.exec_driver_sql(f"INSERT INTO {table} VALUES ('still here')")
    engine.dispose()


def sentinels(url: str, dataset: str) -> list[list[tuple]]:
    engine = _engine(url, dataset)
    try:
        with engine.connect() as conn:
            return [
                [tuple(r) for r in conn.exec_driver_sql(f"SELECT v FROM {table}")]
                for table in (f"{_quote(dataset)}.y", "y")
            ]
    finally:
        engine.dispose()


def rows_of(url: str, dataset: str, table: str) -> list[tuple]:
    engine = _engine(url, dataset)
    try:
        with engine.connect() as conn:
            return [
                tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {_quote(dataset)}.{_quote(table)}")
            ]
    finally:
        engine.dispose()


SENTINEL = [[("still here",)], [("still here",)]]


def test_hostile_table_and_column_names_are_normalized_and_quoted(dest_url, tmp_path):
    plant_sentinels(dest_url, "ds")
    pipeline = Pipeline("names", destination=dest_url, dataset_name="ds", pipelines_dir=tmp_path)
    for i, table in enumerate(HOSTILE_TABLES):
        row = {"id": i, **{column: f"{column}={i}" for column in HOSTILE_COLUMNS}}
        info = pipeline.run([row], table_name=table)
        ((normalized, count),) = info.row_counts.items()
        assert count == 1
        assert normalized.isidentifier() and '"' not in normalized and ";" not in normalized
        # names may collide after normalization (as in dlt: both quote attacks become x_drop_table_yxxx)
        (stored,) = [r for r in rows_of(dest_url, "ds", normalized) if i in r]
        for column in HOSTILE_COLUMNS:
            assert f"{column}={i}" in stored  # every value arrived, under a normalized column
    assert sentinels(dest_url, "ds") == SENTINEL


@pytest.mark.parametrize("name", HOSTILE_PIPELINES, ids=range(len(HOSTILE_PIPELINES)))
def test_hostile_pipeline_names_are_bound_values(dest_url, tmp_path, name):
    plant_sentinels(dest_url, "ds")

    @resource(name="events")
    def events():
        current.resource_state()["n"] = current.resource_state().get("n", 0) + 1
        yield {"id": current.resource_state()["n"]}

    for _ in range(2):  # the second run restores the first's state on a clean worker
        Pipeline(
            name, destination=dest_url, dataset_name="ds", pipelines_dir=tmp_path / uuid.uuid4().hex
        ).run(events)
    engine = _engine(dest_url, "ds")
    with engine.connect() as conn:
        names = {r[0] for r in conn.exec_driver_sql('SELECT pipeline_name FROM "ds"._dlt_pipeline_state')}
        loads = conn.exec_driver_sql('SELECT count(*) FROM "ds"._dlt_loads').scalar()
    engine.dispose()
    assert names == {name} and loads == 2
    assert [r[0] for r in rows_of(dest_url, "ds", "events")] == [1, 2]
    assert sentinels(dest_url, "ds") == SENTINEL


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", "a\\b", "nul\0byte", "x" * 256, "\ud800"])
def test_pipeline_names_that_are_not_one_directory_are_rejected(tmp_path, name):
    with pytest.raises(ValueError, match=r"pipeline name .* is not usable"):
        Pipeline(name, destination=f"sqlite:///{tmp_path / 'w.sqlite'}", pipelines_dir=tmp_path / "pipelines")
    assert not (tmp_path / "w.sqlite").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.parametrize("dataset", HOSTILE_DATASETS, ids=range(len(HOSTILE_DATASETS)))
def test_hostile_dataset_names_are_quoted(dest_url, tmp_path, dataset):
    plant_sentinels(dest_url, dataset)

    @resource(name="events")
    def events():
        current.resource_state()["n"] = current.resource_state().get("n", 0) + 1
        yield {"id": current.resource_state()["n"]}

    for _ in range(2):
        pipeline = Pipeline(
            "ds_names", destination=dest_url, dataset_name=dataset, pipelines_dir=tmp_path / uuid.uuid4().hex
        )
        pipeline.run(events)
    # the dataset name is normalized as dlt does it; the configured one is never spliced into SQL
    assert pipeline.state["dataset_name"] == dataset
    assert [r[0] for r in rows_of(dest_url, pipeline.dataset_name, "events")] == [1, 2]
    assert sentinels(dest_url, dataset) == SENTINEL


# -- decompression bomb in bounded memory -------------------------------------------------------------

BOMB_BYTES = 512 * 1024 * 1024

_RESTORE_SCRIPT = """
import json, sys
from airflow_state_provider import Pipeline
from airflow_state_provider.exceptions import StateCorruptError

def status_mib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: VmHWM (peak RSS) := current RSS

def peak_mib():
    return status_mib("VmHWM")

url, limits = sys.argv[1], json.loads(sys.argv[2])
out = []
for max_state_bytes in limits:
    pipeline = Pipeline("bombed", destination=url, dataset_name="ds", pipelines_dir="/nonexistent",
                        max_state_bytes=max_state_bytes)
    pipeline.engine.connect().close()  # the driver and the pool are loaded before the baseline
    reset_peak()
    before = status_mib("VmRSS")
    try:
        pipeline.sync_destination()
        error = None
    except StateCorruptError as e:
        error = str(e)
    out.append({"limit": max_state_bytes, "before": before, "after": peak_mib(), "error": error})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def bomb() -> str:
    packer = zlib.compressobj(6)
    chunk = bytes(1024 * 1024)
    body = b"".join(packer.compress(chunk) for _ in range(BOMB_BYTES // len(chunk))) + packer.flush()
    return base64.b64encode(body).decode("ascii")


def test_decompression_bomb_is_refused_in_bounded_memory(tmp_path, bomb):
    url = f"sqlite:///{tmp_path / 'w.sqlite'}"
    Pipeline("bombed", destination=url, dataset_name="ds", pipelines_dir=tmp_path).run(
        [{"id": 1}], table_name="t"
    )
    engine = _engine(url, "ds")
    metadata, load_id = sa.MetaData(), new_load_id()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(loads_table(metadata, "ds")).values(
                load_id=load_id, schema_name="bombed", status=0, inserted_at=datetime.now(UTC)
            )
        )
        conn.execute(
            sa.insert(state_table(metadata, "ds")).values(
                version=7,
                engine_version=4,
                pipeline_name="bombed",
                state=bomb,
                created_at=datetime.now(UTC),
                version_hash=None,
                _dlt_load_id=load_id,
                _dlt_id="bombbombbombbo",
            )
        )
    engine.dispose()
    assert len(bomb) < BOMB_BYTES / 200  # ~1.4 MB of text that inflates to 512 MiB

    # 1 MiB state limit -> 4 MiB decode limit; the default 16 MiB -> 64 MiB
    limits = [1024 * 1024, 16 * 1024 * 1024]
    done = subprocess.run(
        [sys.executable, "-c", _RESTORE_SCRIPT, url, json.dumps(limits)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for result in json.loads(done.stdout):
        decode_limit_mib = result["limit"] * 4 / 2**20
        grown = result["after"] - result["before"]
        assert result["error"] and "version 7" in result["error"] and "limit" in result["error"]
        # peak growth is the decode limit plus slack, never the 512 MiB the bomb inflates to
        assert grown < decode_limit_mib * 1.3 + 16, (result, grown)
        print(
            f"bomb of {BOMB_BYTES >> 20} MiB, decode limit {decode_limit_mib:.0f} MiB: peak +{grown:.1f} MiB"
        )


# -- secrets ------------------------------------------------------------------------------------------

SECRET = "Zq8-pw-never-printed"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    script = str(Path(sys.executable).with_name("airflow-state"))
    return subprocess.run([script, *argv], capture_output=True, text=True, timeout=300, env=env)


COMMANDS = [
    ["info"],
    ["get", "sources"],
    ["set", "sources.events.x", "1"],
    ["history"],
    ["rollback", "--to-version", "1"],
    ["drop", "--state-paths", "sources.events"],
    ["sync"],
]


def test_cli_never_prints_a_password_when_the_destination_fails(tmp_path):
    port = _closed_port()
    urls = [
        f"postgresql+psycopg://loader:{SECRET}@127.0.0.1:{port}/warehouse",  # nothing listens
        f"postgresql+psycopg://loader:{SECRET}@127.0.0.1:notaport/warehouse",  # unparsable port
        f"postgresql+psycopg://loader:{SECRET}@127.0.0.1:{port}/w?sslmode=bogus",  # driver rejects it
        f"postgresql+nosuchdriver://loader:{SECRET}@127.0.0.1/warehouse",
    ]
    for url in urls:
        for command in COMMANDS:
            done = _cli(command[0], "p", *command[1:], "--url", url, "--pipelines-dir", str(tmp_path))
            assert done.returncode in (1, 2), (url, command, done.stdout, done.stderr)
            assert done.stderr.strip(), (url, command)
            assert SECRET not in done.stdout + done.stderr, (url, command, done.stderr)


@pytest.mark.postgres
def test_cli_never_prints_a_password_of_a_working_destination(postgres_url, tmp_path):
    # the throwaway server trusts every login: any password connects
    url = sa.make_url(postgres_url).set(password=SECRET).render_as_string(hide_password=False)

    @resource(name="events")
    def events():
        current.resource_state()["x"] = 0
        yield {"id": 1}

    Pipeline("p", destination=url, dataset_name="ds", pipelines_dir=tmp_path).run(events)
    for command in COMMANDS:
        done = _cli(
            command[0], "p", *command[1:], "--url", url, "--dataset", "ds", "--pipelines-dir", str(tmp_path)
        )
        assert SECRET not in done.stdout + done.stderr, (command, done.stdout, done.stderr)
    info = _cli("info", "p", "--url", url, "--dataset", "ds")
    assert info.returncode == 0 and ":***@" in info.stdout


def test_cli_never_prints_the_password_of_an_airflow_connection(tmp_path):
    """``--conn-id`` reads ``AIRFLOW_CONN_*`` through the hook (Airflow imported in the subprocess)."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    conn = {
        "conn_type": "pipeline_state",
        "host": "127.0.0.1",
        "port": _closed_port(),
        "login": "loader",
        "password": SECRET,
        "schema": "warehouse",
        "extra": {"dialect": "postgresql"},
    }
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW_CONN_WAREHOUSE": json.dumps(conn)})
    done = _cli("info", "p", "--conn-id", "warehouse", env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "127.0.0.1" in done.stderr
    assert SECRET not in done.stdout + done.stderr


# -- no code execution on the state read path --------------------------------------------------------

_FORBIDDEN_MODULES = {"pickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "jsonpickle"}
#: builtins that run code from data (``re.compile`` and the like are attributes, not these)
_FORBIDDEN_BUILTINS = {"eval", "exec", "compile", "__import__"}
_UNSAFE_LOADERS = {("yaml", "load"), ("yaml", "unsafe_load"), ("pickle", "load"), ("pickle", "loads")}


def _violations(path: Path, root: Path = REPO) -> list[str]:
    """Imports of unpickling modules, calls of code-running builtins and of unsafe loaders."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in _FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _FORBIDDEN_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in _FORBIDDEN_BUILTINS:
                found.append(f"{func.id}(...) at line {node.lineno}")
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                owner, name = func.value.id, func.attr
                if (owner == "builtins" and name in _FORBIDDEN_BUILTINS) or (owner, name) in _UNSAFE_LOADERS:
                    found.append(f"{owner}.{name}(...) at line {node.lineno}")
    return [f"{path.relative_to(root)}: {v}" for v in found]


def test_nothing_in_the_package_unpickles_or_evaluates():
    package = Path(airflow_state_provider.__file__).parent
    modules = sorted(package.rglob("*.py"))
    assert len(modules) > 20
    # the read path in particular: codec, model, store, pipeline restore
    for must in ("state/codec.py", "state/model.py", "destination/store.py", "pipeline.py"):
        assert package / must in modules
    assert [v for m in modules for v in _violations(m)] == []


def test_the_scan_finds_what_it_looks_for(tmp_path):
    """The scanner itself: each forbidden construct in a sample module is reported."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import pickle\nfrom marshal import loads\nimport yaml\n"
        "eval('1')\nexec('x=1')\nyaml.load(s)\npickle.loads(b'')\n__import__('os')\n"
        "conn.exec_driver_sql('x')\nconn.execute(q)\njson.loads(s)\nre.compile('x')\n"
    )
    assert len(_violations(sample, tmp_path)) == 7, _violations(sample, tmp_path)
