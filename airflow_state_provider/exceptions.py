"""Every error type the provider raises on purpose.

Each message names what was wrong and where: the pipeline, and the state path, resource, table or column
involved. The same facts are attributes of the exception (``None`` when the message does not name one),
so code can act on them without parsing the message::

    PipelineStateError                      pipeline_name, state_path, resource, table, column
    ├── StateConflictError                  a state slot changed concurrently; nothing committed
    │   └── ConcurrentEditError             an edit's base version is no longer the newest
    ├── StateCorruptError                   a stored state row does not decode or fails its hash
    ├── StateNotSerializableError (TypeError)
    ├── StateTooLargeError
    ├── ReadOnlyStateError
    ├── MissingLoadsError                   state rows without a committed load
    ├── LockTimeoutError                    a lock wait exceeded ``lock_timeout``
    ├── SchemaConflictError                 a value does not fit its column's type
    ├── InvalidRowError (ValueError)        a row value that cannot be written
    ├── ConfigurationError (ValueError)     a bad connection, argument or setting
    │   └── InvalidIdentifierError          a name that normalizes to no identifier
    ├── UnsupportedDestinationError (ValueError)
    ├── StateOperationError (ValueError)    bad input to get/set/drop/rollback/history/sync
    │   ├── StatePathError                  a state path that is malformed, unsupported or absent
    │   └── PipelineNotFoundError           no committed state of the pipeline where it was looked for
    ├── IncrementalCursorPathMissing (KeyError)
    ├── IncrementalPrimaryKeyMissing (KeyError)
    ├── IncrementalCursorTypeError (TypeError)
    ├── IncrementalNoIntervalError          no range from the scheduler, and the run asked to raise
    ├── MappedSlotConflictError             mapped task instances sharing one state slot
    ├── BrowserError                        a state-browser request that cannot be served (``status``)
    └── FormError (ValueError)              a state-browser form that does not validate (``lines``)

:data:`PERMANENT_ERRORS` lists the types an Airflow task fails on without retrying.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every character that has no UTF-8 form (a lone surrogate, e.g. from a key read
    with ``surrogateescape``) written as its escape (``\\ud800``), so it prints and logs anywhere."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class PipelineStateError(Exception):
    """Base class of every error this provider raises on purpose.

    The keyword arguments are the context the message names; each becomes an attribute of the same
    name (``None`` when not given). String arguments pass through :func:`printable`: a message quoting
    a bad key or value (a lone surrogate) renders on any console and in any task log instead of failing
    to print.
    """

    def __init__(
        self,
        *args: object,
        pipeline_name: str | None = None,
        state_path: str | None = None,
        resource: str | None = None,
        table: str | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(*(printable(a) if isinstance(a, str) else a for a in args))
        #: the pipeline involved
        self.pipeline_name = pipeline_name
        #: the state path involved (dotted or JSONPath, as given)
        self.state_path = state_path
        #: the resource involved
        self.resource = resource
        #: the table involved (unqualified)
        self.table = table
        #: the column involved
        self.column = column


class _PlainKeyError(KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class StateConflictError(PipelineStateError):
    """Two commits changed the same state slot concurrently; the later one is rolled back."""


class ConcurrentEditError(StateConflictError):
    """Another state version was committed after the edit was planned. Nothing was written."""


class StateCorruptError(PipelineStateError):
    """A stored state row does not decode, or its hash does not match its content."""


class StateNotSerializableError(PipelineStateError, TypeError):
    """A value in the state cannot be stored (not JSON-serializable nor one of the typed values)."""


class StateTooLargeError(PipelineStateError):
    """The encoded state document exceeds the configured size limit."""


class ReadOnlyStateError(PipelineStateError):
    """A write to state that is read-only here (source body, non-writer task)."""


class MissingLoadsError(PipelineStateError):
    """State rows exist but none of their loads is recorded as committed in ``_dlt_loads`` (the load
    records were deleted, or the table dropped): restoring would silently start over, so it refuses."""


class LockTimeoutError(PipelineStateError):
    """A lock wait took longer than ``lock_timeout``; nothing was committed.

    Retryable: the lock is held by another task (a long load, a stalled task, another process on a
    DuckDB file), so a later try usually gets it. The message names the pipeline, the database and what
    was waited for.
    """


class SchemaConflictError(PipelineStateError):
    """A value does not fit the type of its existing column."""


class InvalidRowError(PipelineStateError, ValueError):
    """A row value cannot be written: invalid text (a lone surrogate, NUL on PostgreSQL) or nesting
    deeper than the loader can follow. The message names the table, the column and the row."""


class ConfigurationError(PipelineStateError, ValueError):
    """A connection, an argument or a setting is invalid; retrying cannot help."""


class InvalidIdentifierError(ConfigurationError):
    """A name (table, column, dataset) that normalizes to an empty identifier."""


class UnsupportedDestinationError(PipelineStateError, ValueError):
    """The destination's database is not one the provider supports (SQLite, DuckDB, PostgreSQL)."""


class StateOperationError(PipelineStateError, ValueError):
    """Bad input to a state operation: an unknown pipeline, path, resource, source or version, or a
    value that cannot be stored. Nothing was written."""


class StatePathError(StateOperationError):
    """A state path that is not valid JSONPath, has a shape the operation does not support (set needs
    one location), or names no value. ``state_path`` is the path as given."""


class PipelineNotFoundError(StateOperationError):
    """The pipeline has no committed state where it was looked for (no state table in the dataset, no
    row of the pipeline in it, or no local state file). ``pipeline_name`` names it."""


class IncrementalCursorPathMissing(PipelineStateError, _PlainKeyError):
    """A row has no value at the incremental's cursor path and the policy is ``raise``."""


class IncrementalPrimaryKeyMissing(PipelineStateError, _PlainKeyError):
    """A row lacks a primary key column needed for boundary deduplication."""


class IncrementalCursorTypeError(PipelineStateError, TypeError):
    """The cursor values cannot be compared with the stored ones (type changed between runs)."""


class IncrementalNoIntervalError(PipelineStateError):
    """``allow_external_schedulers`` without a range, when the run asked to raise in that case."""


class MappedSlotConflictError(PipelineStateError):
    """Two mapped instances of one task would read and write the same state slot."""


class BrowserError(PipelineStateError):
    """A request the state browser cannot serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, **context: str | None) -> None:
        super().__init__(message, **context)
        self.status = status


class FormError(PipelineStateError, ValueError):
    """A submitted state-browser form that does not validate; ``lines`` name the fields."""

    def __init__(self, lines: list[str] | str, **context: str | None) -> None:
        lines = [lines] if isinstance(lines, str) else lines  # a str: unpickling passes the message
        super().__init__("; ".join(lines), **context)
        self.lines = lines


#: Errors that fail the same way on every try: an Airflow task ends on them without retrying.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    ConfigurationError,
    SchemaConflictError,
    StateNotSerializableError,
    StateTooLargeError,
    IncrementalCursorTypeError,
    InvalidRowError,
    UnsupportedDestinationError,
    MissingLoadsError,
)
