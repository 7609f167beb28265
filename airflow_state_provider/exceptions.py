"""Error types. Every message names the pipeline and the state path, table or column involved."""

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

    String arguments pass through :func:`printable`: a message quoting a bad key or value (a lone
    surrogate) renders on any console and in any task log instead of failing to print.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(printable(a) if isinstance(a, str) else a for a in args))


class StateConflictError(PipelineStateError):
    """Two commits changed the same state slot concurrently; the later one is rolled back."""


class StateCorruptError(PipelineStateError):
    """A stored state row does not decode, or its hash does not match its content."""


class StateNotSerializableError(PipelineStateError, TypeError):
    """A value in the state cannot be stored (not JSON-serializable nor one of the typed values)."""


class StateTooLargeError(PipelineStateError):
    """The encoded state document exceeds the configured size limit."""


class ReadOnlyStateError(PipelineStateError):
    """A write to state that is read-only here (source body, non-writer task)."""


class IncrementalCursorPathMissing(PipelineStateError, KeyError):
    """A row has no value at the incremental's cursor path and the policy is ``raise``."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class IncrementalCursorTypeError(PipelineStateError, TypeError):
    """The cursor values cannot be compared with the stored ones (type changed between runs)."""


class SchemaConflictError(PipelineStateError):
    """A value does not fit the type of its existing column."""


class LockTimeoutError(PipelineStateError):
    """A lock wait took longer than ``lock_timeout``; nothing was committed.

    Retryable: the lock is held by another task (a long load, a stalled task, another process on a
    DuckDB file), so a later try usually gets it. The message names the pipeline, the database and what
    was waited for.
    """


class ConcurrentEditError(StateConflictError):
    """Another state version was committed after the edit was planned. Nothing was written."""


class MissingLoadsError(PipelineStateError):
    """State rows exist but none of their loads is recorded as committed in ``_dlt_loads`` (the load
    records were deleted, or the table dropped): restoring would silently start over, so it refuses."""


class UnsupportedDestinationError(PipelineStateError, ValueError):
    """The destination's database is not one the provider supports (SQLite, DuckDB, PostgreSQL)."""


class InvalidRowError(PipelineStateError, ValueError):
    """A row value cannot be written: invalid text (a lone surrogate, NUL on PostgreSQL) or nesting
    deeper than the loader can follow. The message names the table, the column and the row."""


class ConfigurationError(PipelineStateError, ValueError):
    """A connection, an argument or a setting is invalid; retrying cannot help."""


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
