"""The ``airflow-state`` command: inspect and operate a pipeline's state (DESIGN §9).

::

    airflow-state {info,get,set,drop,history,rollback,sync} PIPELINE (--conn-id ID | --url URL) [--dataset D]
    airflow-state list (--conn-id ID | --url URL) [--dataset D] [--output table|json|yaml|plain]

The destination comes from an Airflow connection (``--conn-id``, looked up as Airflow's own CLI does:
secrets backends, ``AIRFLOW_CONN_*``, the metadata database; Airflow is imported only then) or a
SQLAlchemy URL (``--url``).
The dataset is ``--dataset``, else the connection's extra ``dataset_name``, else ``<pipeline>_dataset``.
Every edit (``set``, ``drop``, ``rollback``) is a new state version with its own ``_dlt_loads`` row,
written under the pipeline's commit lock; ``--dry-run`` prints the diff and writes nothing.

Exit codes: 0 done (also when there was nothing to change); 1 the operation failed (another version
was committed meanwhile, a database error, corrupt state, the size limit); 2 bad input (usage, an
unknown pipeline, dataset, path, resource or version, or an invalid value).

On Airflow 3.2+, which reads the provider info's ``cli`` key, the same commands also run as
``airflow state ...`` (:func:`get_airflow_cli_commands`).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal, TextIO, get_args

import sqlalchemy as sa

from airflow_state_provider import operations
from airflow_state_provider.destination.engine import create_engine, mask_url, scrub, url_secrets
from airflow_state_provider.exceptions import PipelineStateError, StateCorruptError, printable
from airflow_state_provider.state import codec

if TYPE_CHECKING:
    from airflow_state_provider.pipeline import Pipeline

PROG = "airflow-state"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_FILE_BACKENDS = ("sqlite", "duckdb")
_MAX_PATHS_SHOWN = 12
_MAX_VALUE_SHOWN = 100


# -- argument definitions (shared by argparse and Airflow's CLI) ------------------------------------


@dataclass(frozen=True)
class _Arg:
    flags: tuple[str, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


# -- values typed on the command line (also what the UI plugin's edit form sends) ---------------

#: ``value_type`` choices of :func:`parse_value` (``--type``).
ValueType = Literal["auto", "json", "datetime", "date", "time", "decimal", "uuid", "bytes"]
VALUE_TYPES: tuple[ValueType, ...] = get_args(ValueType)


def parse_value(text: str, *, current: Any = None, value_type: str = "auto") -> Any:
    """The value ``set`` stores for the command-line text ``text``.

    ``text`` is JSON. With ``value_type="auto"`` a value replacing a typed one (datetime, date, time,
    Decimal, UUID, bytes) keeps that type: the JSON string (or, for Decimal, number) is parsed as it.
    An explicit ``value_type`` does the same for new keys; ``"json"`` stores the JSON value as is.
    Where a typed value is expected, text that is not valid JSON is taken as the string itself, so
    ``2024-05-01T00:00:00+00:00`` needs no quotes. Raises :class:`StateOperationError` naming the
    expected form when the text does not parse as the target type.
    """
    if value_type not in VALUE_TYPES:
        raise operations.StateOperationError(
            f"unknown value type {value_type!r}; use one of {', '.join(VALUE_TYPES)}"
        )
    target = value_type if value_type != "auto" else _typed_name(current)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if target == "json":
            raise operations.StateOperationError(
                f"{text!r} is not valid JSON ({exc.msg}); strings need JSON quotes, e.g. '\"text\"'"
            ) from None
        value = text
    if target == "json" or value is None:
        return value
    return _coerce(value, target, auto=value_type == "auto")


def _typed_name(value: Any) -> str:
    if isinstance(value, datetime):
        return "datetime"
    for kind, name in ((date, "date"), (time, "time"), (Decimal, "decimal"), (uuid.UUID, "uuid")):
        if isinstance(value, kind):
            return name
    return "bytes" if isinstance(value, bytes) else "json"


def _coerce(value: Any, target: str, *, auto: bool) -> Any:
    why = "the current value is one" if auto else f"--type {target}"
    try:
        if target == "decimal" and isinstance(value, int | float) and not isinstance(value, bool):
            return Decimal(str(value))
        if not isinstance(value, str):
            raise TypeError
        if target == "datetime":
            return datetime.fromisoformat(value)
        if target == "date":
            return date.fromisoformat(value)
        if target == "time":
            return time.fromisoformat(value)
        if target == "decimal":
            return Decimal(value)
        if target == "uuid":
            return uuid.UUID(value)
        return base64.b64decode(value, validate=True)
    except (TypeError, ValueError, InvalidOperation, binascii.Error):
        form = {
            "datetime": "an ISO 8601 timestamp such as 2024-05-01T00:00:00+00:00",
            "date": "an ISO date such as 2024-05-01",
            "time": "an ISO time such as 10:30:00",
            "decimal": "a decimal number such as 10.25",
            "uuid": "a UUID",
            "bytes": "base64 text",
        }[target]
        hint = " (pass --type json to store the JSON value as it is)" if auto else ""
        raise operations.StateOperationError(
            f"expected {form} because {why} is a {target}, got {operations.to_plain(value)!r}{hint}"
        ) from None


def _arg(*flags: str, **kwargs: Any) -> _Arg:
    return _Arg(flags, kwargs)


_COMMON = (
    _arg("pipeline", metavar="PIPELINE", help="the pipeline name"),
    _arg(
        "--conn-id",
        dest="conn_id",
        metavar="ID",
        help="an Airflow connection (metadata DB, AIRFLOW_CONN_*, secrets backends)",
    ),
    _arg("--url", metavar="URL", help="a SQLAlchemy URL of the destination (no Airflow needed)"),
    _arg(
        "--dataset",
        metavar="D",
        help="the dataset (schema); default: the connection's dataset_name, else <pipeline>_dataset",
    ),
    _arg(
        "--local",
        action="store_true",
        help="use the state kept in the local pipelines dir (pipelines with restore_from_destination=False)",
    ),
    _arg(
        "--pipelines-dir",
        dest="pipelines_dir",
        metavar="DIR",
        help="the local pipelines dir (default: $AIRFLOW_STATE_PIPELINES_DIR or ~/.airflow_state/pipelines)",
    ),
)


class _JsonOutput(argparse.Action):
    """``--json``: ``--output json`` (Airflow's ``Arg`` takes no ``const``, so not ``store_const``)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, "json")


#: ``--output`` formats, as in Airflow's own commands (``airflow dags list -o json``)
OUTPUT_FORMATS = ("table", "json", "yaml", "plain")
_OUTPUT = (
    _arg(
        "-o",
        "--output",
        choices=OUTPUT_FORMATS,
        default="table",
        metavar="(table, json, yaml, plain)",
        help="output format (default: table)",
    ),
    # the flag of earlier releases, same as --output json. No default of its own: Airflow's CLI sorts
    # options by name, so --json comes before --output and its None default would win over "table"
    _arg("--json", dest="output", action=_JsonOutput, default=argparse.SUPPRESS, help=argparse.SUPPRESS),
)
_EDIT = (
    _arg("--dry-run", dest="dry_run", action="store_true", help="print the diff, write nothing"),
    _arg(
        "--expect-version",
        dest="expect_version",
        type=int,
        metavar="N",
        help="fail, writing nothing, unless N is the newest committed state version",
    ),
)

_COMMANDS: dict[str, tuple[str, tuple[_Arg, ...]]] = {
    "info": (
        "show the newest state: version, load, size, sources, resource slots and incrementals",
        (
            _arg("-v", "--verbose", action="store_true", help="also print the whole state document"),
            *_OUTPUT,
        ),
    ),
    "get": (
        "print the value at a state path as JSON (typed values in ISO / str form)",
        (_arg("path", metavar="PATH", nargs="?", default="", help="dot-separated keys; empty: everything"),),
    ),
    "set": (
        "set the value at a state path (a new state version)",
        (
            _arg("path", metavar="PATH", help="dot-separated keys"),
            _arg(
                "value",
                metavar="JSON_VALUE",
                help="a JSON value; replacing a datetime/date/time/Decimal/UUID/bytes keeps its type",
            ),
            _arg(
                "--type",
                dest="value_type",
                choices=VALUE_TYPES,
                default="auto",
                help="store the value as this type (auto: the current value's type; json: as given)",
            ),
            _arg("--create", action="store_true", help="allow a path that does not exist yet"),
            *_EDIT,
        ),
    ),
    "drop": (
        "drop resources (tables and state) and source state paths, as dlt pipeline drop",
        (
            _arg(
                "resources",
                metavar="RESOURCE",
                nargs="*",
                help="resource names, or re:<regex> patterns matched against resource names",
            ),
            _arg(
                "--state-paths",
                dest="state_paths",
                metavar="P",
                nargs="+",
                default=[],
                help="JSONPaths relative to each source's state",
            ),
            _arg("--state-only", dest="state_only", action="store_true", help="keep the tables"),
            _arg("--drop-all", dest="drop_all", action="store_true", help="drop every resource"),
            _arg(
                "--source",
                dest="sources",
                metavar="S",
                action="append",
                help="only in this source (repeatable; default: every source in the state)",
            ),
            *_EDIT,
        ),
    ),
    "history": (
        "list the retained state versions with load ids, times, sizes and the paths each changed",
        (
            _arg("--limit", type=int, metavar="N", help="show the newest N versions only"),
            *_OUTPUT,
        ),
    ),
    "rollback": (
        "commit a new state version whose content equals an earlier, retained version",
        (
            _arg("--to-version", dest="to_version", type=int, metavar="N", required=True, help="the version"),
            *_EDIT,
        ),
    ),
    "sync": (
        "restore the destination's newest state into the local pipelines dir",
        (),
    ),
    "list": (
        "list the pipelines with committed state in a dataset, with their newest version and load",
        _OUTPUT,
    ),
}
#: commands that act on the whole dataset, not on one pipeline
_DATASET_COMMANDS = frozenset({"list"})


def _common_args(command: str) -> tuple[_Arg, ...]:
    return _COMMON[1:] if command in _DATASET_COMMANDS else _COMMON


def build_parser() -> argparse.ArgumentParser:
    """The ``airflow-state`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and operate pipeline state kept by airflow-state-provider.",
        epilog="Exit codes: 0 done, 1 the operation failed, 2 bad input.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, args) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        for arg in (*_common_args(name), *args):
            sub.add_argument(*arg.flags, **arg.kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``airflow-state``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_command(args.command, args)


def run_command(command: str, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one command on parsed arguments, printing to ``out`` (stdout) and errors to stderr."""
    out = out or sys.stdout
    # Airflow logs to stdout; keep stdout for the command's output (``get`` prints JSON to parse)
    with contextlib.redirect_stdout(sys.stderr):
        try:
            return _run(command, args, out)
        except BrokenPipeError:
            # the reader went away (``| head``): stop quietly, and keep Python from failing again
            # when it flushes stdout at exit (the recipe of Python's signal module docs)
            stdout = sys.__stdout__
            if stdout is not None and out is stdout:
                os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
            return EXIT_FAILED


def _run(command: str, args: argparse.Namespace, out: TextIO) -> int:
    if bool(args.conn_id) == bool(args.url):
        return _error("give exactly one of --conn-id ID or --url URL", EXIT_USAGE)
    hook = None
    secrets: list[str] = []
    try:
        pipeline, hook, secrets = _open(args)
    except operations.StateOperationError as exc:
        return _error(str(exc), EXIT_USAGE)
    except Exception as exc:  # unknown connection, bad URL, missing driver: all bad input
        secrets = secrets or (url_secrets(args.url) if args.url else [])
        return _error(_scrub(f"{type(exc).__name__}: {exc}", secrets), EXIT_USAGE)
    try:
        _HANDLERS[command](pipeline, args, out)
        return EXIT_OK
    except operations.StateOperationError as exc:
        return _error(_scrub(str(exc), secrets), EXIT_USAGE)
    except StateCorruptError as exc:
        name = args.pipeline
        hint = (
            f" To repair it: 'airflow-state history {name}' lists the retained versions and "
            f"'airflow-state rollback {name} --to-version N' commits a good one as the newest."
        )
        return _error(_scrub(str(exc), secrets) + hint, EXIT_FAILED)
    except PipelineStateError as exc:
        return _error(_scrub(str(exc), secrets), EXIT_FAILED)
    except sa.exc.SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        return _error(_scrub(f"database error: {type(detail).__name__}: {detail}", secrets), EXIT_FAILED)
    finally:
        pipeline.engine.dispose()
        if hook is not None:
            hook.dispose()


def _error(message: str, code: int) -> int:
    print(printable(f"{PROG}: error: {_as_flags(message)}"), file=sys.stderr)
    return code


def _as_flags(message: str) -> str:
    """Name options as they are typed: ``drop_all`` in a message becomes ``--drop-all``."""
    flags = {
        a.kwargs["dest"]: next(f for f in a.flags if f.startswith("--"))
        for args in (_COMMON, _EDIT, *(c[1] for c in _COMMANDS.values()))
        for a in args
        if "_" in a.kwargs.get("dest", "") and a.kwargs.get("help") is not argparse.SUPPRESS
    }
    return re.sub(
        r"(?<![\w./-])(" + "|".join(map(re.escape, flags)) + r")(?![\w/-])", lambda m: flags[m[1]], message
    )


def _scrub(message: str, secrets: list[str]) -> str:
    return scrub(message, secrets)


def _open(args: argparse.Namespace) -> tuple[Pipeline, Any, list[str]]:
    """The pipeline the arguments name, the hook behind it (if any) and the secrets to scrub."""
    options: dict[str, Any] = {}
    if args.local:
        options["restore_from_destination"] = False
    if args.pipelines_dir:
        options["pipelines_dir"] = args.pipelines_dir
    if args.conn_id:
        # Airflow is heavy to import and not needed for --url
        from airflow_state_provider.hooks.pipeline_state import PipelineStateHook

        hook = PipelineStateHook.outside_task(args.conn_id)  # also the metadata DB, as Airflow's CLI
        url = hook.get_sqlalchemy_url()
        secrets = [s for s in (hook.connection.password, *url_secrets(url)) if s]
        _check_file(url)
        return hook.get_pipeline(_pipeline_name(args), dataset_name=args.dataset, **options), hook, secrets
    from airflow_state_provider.pipeline import Pipeline

    url = sa.make_url(args.url)
    secrets = url_secrets(url)
    _check_file(url)
    engine = create_engine(url)
    pipeline = Pipeline(_pipeline_name(args), destination=engine, dataset_name=args.dataset, **options)
    return pipeline, None, secrets


#: the pipeline a dataset command (``list``) opens to reach the dataset; it reads no state of its own
_DATASET_PIPELINE = "_airflow_state_list"


def _pipeline_name(args: argparse.Namespace) -> str:
    return getattr(args, "pipeline", None) or _DATASET_PIPELINE


def _check_file(url: sa.URL) -> None:
    """A missing database file is a typo, not a new database: do not create it."""
    database = url.database
    if (
        url.get_backend_name() in _FILE_BACKENDS
        and database
        and database != ":memory:"
        and not os.path.exists(database)
    ):
        raise operations.StateOperationError(f"database file {database} does not exist ({mask_url(url)})")


# -- commands ---------------------------------------------------------------------------------------


def _info(pipeline: Pipeline, args: argparse.Namespace, out: TextIO) -> None:
    stored = operations.newest(pipeline)
    state = stored.state
    retained = _retained(pipeline)
    json_size = len(codec.typed_dumps({k: v for k, v in state.items() if k != "_local"}))
    summary = _summarize(state)
    problem = codec.structure_problem(state)
    shown_problem = None
    if problem is not None:
        name = pipeline.pipeline_name
        shown_problem = (
            f"state path {problem[0] or '(the document)'} {problem[1]}: runs fail on this version. "
            f"Fix it with 'airflow-state set {name} {problem[0] or 'PATH'} ...' or 'airflow-state "
            f"rollback {name} --to-version N'"
        )
    if args.output in ("json", "yaml"):
        doc: dict[str, Any] = {
            "pipeline": pipeline.pipeline_name,
            "destination": _destination(pipeline),
            "dataset": pipeline.dataset_name,
            "version": stored.version,
            "version_hash": state.get("_version_hash"),
            "load_id": stored.load_id or None,
            "created_at": _iso(stored.created_at),
            "size": stored.size,
            "json_size": json_size,
            "versions_retained": retained,
            "sources": summary,
            "problem": shown_problem,
        }
        if args.verbose:
            doc["state"] = operations.to_plain(state)
        _print_document(doc, args.output, out)
        return
    lines = [
        f"Pipeline:     {pipeline.pipeline_name}",
        f"Destination:  {_destination(pipeline)}",
        f"Dataset:      {pipeline.dataset_name}",
        f"Version:      {stored.version} (hash {state.get('_version_hash')})",
    ]
    if pipeline.restore_from_destination:
        lines += [
            f"Load id:      {stored.load_id}",
            f"Created at:   {_iso(stored.created_at)}",
            f"Size:         {stored.size} bytes stored, {json_size} bytes as JSON",
            f"History:      {_span(retained)} retained (max_state_versions={pipeline.store.max_versions})",
        ]
    else:
        lines.append(f"Size:         {stored.size} bytes in {pipeline.local_state.path}")
    if shown_problem:
        lines.append(f"Problem:      {shown_problem}")
    lines.append(f"Sources:      {len(summary)}" if summary else "Sources:      none")
    for source_key, source in summary.items():
        keys = f"  (source keys: {', '.join(source['keys'])})" if source["keys"] else ""
        lines.append(f"  {source_key}{keys}")
        for resource_name, slot in source["resources"].items():
            other = f"  (keys: {', '.join(slot['keys'])})" if slot["keys"] else ""
            lines.append(f"    {resource_name}{other}")
            for cursor, inc in slot["incrementals"].items():
                values = ", ".join(f"{k}={_short(v)}" for k, v in inc.items() if k != "unique_hashes")
                lines.append(f"      incremental {cursor}: {values}, unique_hashes={inc['unique_hashes']}")
    if args.verbose:
        lines += ["", "State document:", _dumps(operations.to_plain(state))]
    print("\n".join(lines), file=out)


def _retained(pipeline: Pipeline) -> list[int]:
    if not pipeline.restore_from_destination:
        return []
    with pipeline.engine.connect() as conn:
        return sorted(int(r.version) for r in pipeline.store.history_rows(conn))


def _span(versions: list[int]) -> str:
    if not versions:
        return "no versions"
    return f"{len(versions)} version{'s' if len(versions) != 1 else ''} ({versions[0]}..{versions[-1]})"


def _summarize(state: dict) -> dict[str, Any]:
    """Sources, their own keys, resource slots and incrementals (values in plain form)."""
    out: dict[str, Any] = {}
    sources = state.get("sources")
    for source_key, source in (sources if isinstance(sources, dict) else {}).items():
        if not isinstance(source, dict):
            continue  # shown as the document's problem
        resources: dict[str, Any] = {}
        slots = source.get("resources")
        for resource_name, slot in (slots if isinstance(slots, dict) else {}).items():
            slot = slot if isinstance(slot, dict) else {}
            incrementals: dict[str, Any] = {}
            found = slot.get("incremental")
            for cursor, inc in (found if isinstance(found, dict) else {}).items():
                if not isinstance(inc, dict):
                    continue
                entry = {
                    k: operations.to_plain(inc.get(k)) for k in ("last_value", "start_value", "initial_value")
                }
                if "end_value" in inc:
                    entry["end_value"] = operations.to_plain(inc["end_value"])
                entry["unique_hashes"] = len(inc.get("unique_hashes") or ())
                incrementals[cursor] = entry
            keys = [str(k) for k in slot if k != "incremental" or not incrementals]
            resources[resource_name] = {"keys": keys, "incrementals": incrementals}
        keys = [str(k) for k in source if k != "resources"]
        out[source_key] = {"keys": keys, "resources": resources}
    return out


def _get(pipeline: Pipeline, args: argparse.Namespace, out: TextIO) -> None:
    stored = operations.newest(pipeline)
    value = operations.get_value(stored.state, args.path, pipeline_name=pipeline.pipeline_name)
    print(_dumps(operations.to_plain(value)), file=out)


def _set(pipeline: Pipeline, args: argparse.Namespace, out: TextIO) -> None:
    base = operations.newest(pipeline)
    try:
        current = operations.get_value(base.state, args.path, pipeline_name=pipeline.pipeline_name)
    except operations.StateOperationError:
        if not args.create:
            # planning the edit raises its own error, which says whether --create would add the path
            operations.plan_set(pipeline, args.path, None, base=base)
            raise
        current = None
    value = parse_value(args.value, current=current, value_type=args.value_type)
    plan = operations.plan_set(
        pipeline, args.path, value, create=args.create, expect_version=args.expect_version, base=base
    )
    _finish(plan, args, out)


def _drop(pipeline: Pipeline, args: argparse.Namespace, out: TextIO) -> None:
    plan = operations.plan_drop(
        pipeline,
        args.resources,
        args.state_paths,
        drop_all=args.drop_all,
        state_only=args.state_only,
        sources=args.sources,
        expect_version=args.expect_version,
    )
    _finish(plan, args, out)


def _rollback(pipeline: Pipeline, args: argparse.Namespace, out: TextIO) -> None:
    plan = operations.plan_rollback(pipeline, args.to_version, expect_version=args.expect_version)
    _finish(plan, args, out)


def _finish(plan: operations.EditPlan, args: argparse.Namespace, out: TextIO) -> None:
    """Print the plan's diff, then apply it unless ``--dry-run``."""
    pipeline, base = plan.pipeline, plan.base
    against = f"version {base.version}" + (f" (load {base.load_id})" if base.load_id else "")
    lines = [
        f"Pipeline {pipeline.pipeline_name!r}, {operations.where(pipeline)}: {plan.action}, against {against}"
    ]
    lines += [f"  {_change(c)}" for c in plan.changes]
    lines += [f"  drop table {pipeline.dataset_name}.{t}" for t in plan.drop_tables]
    lines += [f"  warning: {w}" for w in plan.warnings]
    if plan.empty:
        lines.append(f"Nothing to change: state version {base.version} already has this content.")
    elif args.dry_run:
        lines.append(f"Dry run: nothing written. Apply exactly this with --expect-version {base.version}.")
    else:
        result = operations.apply(plan)
        lines.append(f"Committed state version {result.version} (load {result.load_id}).")
    print("\n".join(lines), file=out)


def _change(change: operations.Change) -> str:
    if change.kind == "added":
        return f"+ {change.path} = {_short(change.new)}"
    if change.kind == "removed":
        return f"- {change.path} (was {_short(change.old)})"
    return f"~ {change.path}: {_short(change.old)} -> {_short(change.new)}"


def _history(pipeline: Pipeline, args: argparse.Namespace, out: TextIO) -> None:
    entries = operations.history(pipeline, args.limit)
    if args.output != "table":
        records = [
            {
                "version": e.version,
                "load_id": e.load_id or None,
                "created_at": _iso(e.created_at),
                "size": e.size,
                "changed_paths": e.changed_paths,
                "error": e.error,
            }
            for e in entries
        ]
        _print_records(records, args.output, out)
        return
    rows = [("VERSION", "LOAD ID", "CREATED AT (UTC)", "SIZE", "CHANGED PATHS")]
    extra: list[list[str]] = []
    for i, e in enumerate(entries):
        if e.error:
            paths = [f"(corrupt: {e.error})"]
        elif e.changed_paths is None:
            oldest = i == len(entries) - 1
            paths = ["(first version)" if oldest and e.version <= 1 else "(previous version not retained)"]
        else:
            paths = e.changed_paths or ["(content unchanged)"]
        if len(paths) > _MAX_PATHS_SHOWN:
            paths = [*paths[:_MAX_PATHS_SHOWN], f"... and {len(paths) - _MAX_PATHS_SHOWN} more"]
        rows.append((str(e.version), e.load_id or "-", _when(e.created_at), str(e.size), paths[0]))
        extra.append(paths[1:])
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[c]) for c, cell in enumerate(row[:4])) + "  " + row[4])
        if n:
            pad = " " * (sum(widths) + 8)
            lines += [pad + p for p in extra[n - 1]]
    print("\n".join(line.rstrip() for line in lines), file=out)


def _sync(pipeline: Pipeline, args: argparse.Namespace, out: TextIO) -> None:
    stored, path = operations.sync_local(pipeline)
    print(
        f"Restored state version {stored.version} (load {stored.load_id}) of pipeline "
        f"{pipeline.pipeline_name!r} from {operations.where(pipeline)} into {path}",
        file=out,
    )


def _list(pipeline: Pipeline, args: argparse.Namespace, out: TextIO) -> None:
    if (
        not args.dataset
        and pipeline.pipeline_name == _DATASET_PIPELINE
        and (pipeline.dataset_name == f"{_DATASET_PIPELINE}_dataset")
    ):
        raise operations.StateOperationError(
            "give the dataset (--dataset D), or set the connection's extra dataset_name"
        )
    records = [
        {
            "pipeline": p.pipeline_name,
            "version": p.version,
            "load_id": p.load_id,
            "created_at": _iso(p.created_at),
            "versions_retained": p.versions_retained,
        }
        for p in operations.list_pipelines(pipeline)
    ]
    if args.output == "table" and not records:
        print(f"No pipeline has committed state in {operations.where(pipeline)}.", file=out)
        return
    _print_records(records, args.output, out)


_HANDLERS: dict[str, Callable[[Pipeline, argparse.Namespace, TextIO], None]] = {
    "info": _info,
    "get": _get,
    "set": _set,
    "drop": _drop,
    "history": _history,
    "rollback": _rollback,
    "sync": _sync,
    "list": _list,
}


# -- formatting -------------------------------------------------------------------------------------


def _destination(pipeline: Pipeline) -> str:
    return mask_url(pipeline.engine.url)


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _print_json(value: Any, out: TextIO) -> None:
    print(_dumps(value), file=out)


def _print_document(doc: Any, output: str, out: TextIO) -> None:
    """``doc`` as JSON or YAML (PyYAML, which Airflow brings; the core does not need it otherwise)."""
    if output == "yaml":
        try:
            import yaml
        except ImportError:
            raise operations.StateOperationError("--output yaml needs PyYAML: pip install pyyaml") from None
        print(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), end="", file=out)
    else:
        _print_json(doc, out)


def _print_records(records: list[dict[str, Any]], output: str, out: TextIO) -> None:
    """Rows as Airflow's commands print them: ``table`` (headers, a rule, aligned columns), ``plain``
    (headers and aligned columns), ``json`` (a list of objects) or ``yaml``."""
    if output in ("json", "yaml"):
        _print_document(records, output, out)
        return
    if not records:
        return
    headers = [str(k) for k in records[0]]
    rows = [[_cell(r.get(k)) for k in records[0]] for r in records]
    widths = [max(len(c) for c in column) for column in zip(headers, *rows, strict=True)]
    lines = [headers] + ([["-" * w for w in widths]] if output == "table" else []) + rows
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _short(value: Any) -> str:
    text = json.dumps(operations.to_plain(value), ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _MAX_VALUE_SHOWN else text[: _MAX_VALUE_SHOWN - 3] + "..."


def _utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every timestamp we store is UTC
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else _utc(value).isoformat()


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{_utc(value):%Y-%m-%d %H:%M:%S}"


# -- Airflow's CLI ------------------------------------------------------------------------------------


def get_airflow_cli_commands() -> list[Any]:
    """``airflow state {info,get,set,drop,history,rollback,sync} ...``: the same commands for Airflow's
    CLI, registered through the provider info's ``cli`` key (read by Airflow 3.2+, ignored by 3.1)."""
    from airflow.cli.cli_config import ActionCommand, Arg, GroupCommand

    def entry(name: str) -> Callable[[argparse.Namespace], None]:
        def command(args: argparse.Namespace) -> None:
            code = run_command(name, args)
            if code:
                sys.exit(code)

        command.__name__ = f"state_{name}"
        return command

    subcommands = [
        ActionCommand(
            name=name,
            help=help_text,
            func=entry(name),
            args=tuple(Arg(flags=a.flags, **a.kwargs) for a in (*_common_args(name), *args)),
        )
        for name, (help_text, args) in _COMMANDS.items()
    ]
    return [
        GroupCommand(
            name="state",
            help="Inspect and operate pipeline state kept by airflow-state-provider",
            subcommands=subcommands,
        )
    ]


if __name__ == "__main__":
    sys.exit(main())
