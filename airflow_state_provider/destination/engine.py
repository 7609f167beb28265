"""The one engine factory, the one URL mask, and the supported databases.

Every engine the product creates from a URL (``Pipeline(destination=<URL>)``, ``PipelineStateHook``,
``airflow-state --url``) comes from :func:`create_engine`, with the same options; every URL it prints
(CLI output, log lines, error messages) goes through :func:`mask_url`.
"""

from __future__ import annotations

import urllib.parse
import weakref
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from airflow_state_provider.exceptions import ConfigurationError, UnsupportedDestinationError

#: SQLAlchemy backend names the provider supports: each has a commit lock and transactional DDL
SUPPORTED_DIALECTS = ("sqlite", "duckdb", "postgresql")
MASK = "***"
#: query parameters that carry a secret (libpq's ``password``, MotherDuck's token, ...)
SECRET_QUERY_PARAMETERS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "token",
        "access_token",
        "auth_token",
        "motherduck_token",
        "secret",
        "client_secret",
        "api_key",
        "apikey",
        "key",
        "private_key",
        "credentials",
    }
)
_SECRET_SUFFIXES = ("password", "_token", "_secret", "_key", "apikey")


def is_secret_parameter(name: str) -> bool:
    """True for a URL query parameter whose value must never be shown."""
    lowered = name.lower()
    return lowered in SECRET_QUERY_PARAMETERS or lowered.endswith(_SECRET_SUFFIXES)


def _as_url(url: str | sa.URL) -> sa.URL | None:
    if isinstance(url, sa.URL):
        return url
    try:
        return sa.make_url(url)
    except Exception:
        return None


def mask_url(url: str | sa.URL) -> str:
    """``url`` as text with its password and every secret query parameter shown as ``***``.

    Text that is not a URL is returned as ``<unparseable URL>`` (it may hold a secret anywhere).
    """
    parsed = _as_url(url)
    if parsed is None:
        return "<unparseable URL>"
    placeholder = "asp0masked0secret"  # URL-safe: rendering would escape the asterisks of the mask
    secret = {k: placeholder for k in parsed.query if is_secret_parameter(k)}
    if secret:
        parsed = parsed.update_query_dict(secret)
    shown = parsed.render_as_string(hide_password=True).replace(placeholder, MASK)
    return scrub(shown, [v for _, v in _database_query(parsed)])


def _database_query(url: sa.URL) -> list[tuple[str, str]]:
    """Secret parameters of a query string inside the database part (MotherDuck's
    ``duckdb:///md:db?motherduck_token=...``, a DuckDB path given in a connection's host)."""
    database = url.database or ""
    if "?" not in database:
        return []
    pairs = urllib.parse.parse_qsl(database.split("?", 1)[1], keep_blank_values=True)
    return [(k, v) for k, v in pairs if is_secret_parameter(k) and v]


def url_secrets(url: str | sa.URL) -> list[str]:
    """The secret values in ``url`` (password, secret query parameters), to scrub from messages."""
    parsed = _as_url(url)
    if parsed is None:
        return [str(url)]
    found = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if is_secret_parameter(key):
            found += [value] if isinstance(value, str) else list(value)
    found += [value for _, value in _database_query(parsed)]
    return [str(s) for s in found if s]


def scrub(message: str, secrets: list[str]) -> str:
    """``message`` with every secret replaced by ``***``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            message = message.replace(secret, MASK)
    return message


def check_supported(engine_or_url: sa.Engine | sa.URL | str) -> None:
    """Raise :class:`UnsupportedDestinationError` unless the database is SQLite, DuckDB or PostgreSQL.

    Another database would get no commit lock, and on MySQL/MariaDB DDL commits implicitly: the
    one-transaction promise would silently not hold.
    """
    if isinstance(engine_or_url, sa.Engine):
        name, shown = engine_or_url.dialect.name, mask_url(engine_or_url.url)
        check_transactional(engine_or_url)
    else:
        parsed = _as_url(engine_or_url)
        if parsed is None:
            raise UnsupportedDestinationError(f"{mask_url(engine_or_url)} is not a SQLAlchemy URL")
        name, shown = parsed.get_backend_name(), mask_url(parsed)
    if name not in SUPPORTED_DIALECTS:
        raise UnsupportedDestinationError(
            f"destination {shown}: the {name!r} database is not supported; supported: "
            f"{', '.join(SUPPORTED_DIALECTS)}. Only these have a commit lock and transactional DDL, which "
            "the one-transaction commit of data and state needs."
        )


def check_transactional(engine: sa.Engine) -> None:
    """Raise :class:`ConfigurationError` for an engine whose connections autocommit.

    ``create_engine(..., isolation_level="AUTOCOMMIT")`` or ``engine.execution_options(isolation_level=
    "AUTOCOMMIT")`` makes every statement commit by itself: a load that fails half-way would leave rows
    committed without their state (PostgreSQL reports such a session as ``read committed``, so the
    commit's own isolation check cannot see it; DuckDB's driver cannot switch it at all).
    """
    # SQLAlchemy keeps create_engine's isolation_level on the dialect (no public accessor)
    levels = (
        engine.get_execution_options().get("isolation_level"),
        getattr(engine.dialect, "_on_connect_isolation_level", None),
    )
    if any(str(level).upper() == "AUTOCOMMIT" for level in levels if level is not None):
        raise ConfigurationError(
            f"destination {mask_url(engine.url)}: the engine's isolation_level is 'AUTOCOMMIT', so every "
            "statement commits by itself and a failed load would leave part of its rows committed without "
            "their state. Create the engine without isolation_level='AUTOCOMMIT' (or pass the URL and let "
            "the pipeline create the engine); use a separate engine for autocommit work."
        )


def create_engine(url: str | sa.URL, **options: Any) -> sa.Engine:
    """The engine for a destination URL, with the options every engine of the product has.

    ``hide_parameters=True`` keeps row values out of SQL error messages (and so out of task logs);
    ``pool_pre_ping=True`` replaces a pooled connection the server dropped before it is used.
    ``options`` are passed on to :func:`sqlalchemy.create_engine`. Raises
    :class:`UnsupportedDestinationError` for a database other than SQLite, DuckDB or PostgreSQL.
    """
    check_supported(url)
    options.setdefault("hide_parameters", True)
    options.setdefault("pool_pre_ping", True)
    try:
        engine = sa.create_engine(url, **options)
    except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as e:
        backend = sa.make_url(url).get_backend_name()
        hint = install_hint(backend)
        if not hint:
            raise
        raise ModuleNotFoundError(f"the {backend} driver is not installed ({e}){hint}") from e
    sa.event.listen(engine, "connect", _refuse_autocommit_connection)
    _created.add(engine)
    return engine


def _refuse_autocommit_connection(dbapi_connection: Any, _record: Any) -> None:
    """A driver connection in autocommit mode (psycopg's ``connect_args={"autocommit": True}``, a
    ``creator`` or connect hook that sets it, sqlite3's ``autocommit=True``) commits every statement by
    itself, whatever SQLAlchemy's isolation level says: refuse it before anything is written."""
    if getattr(dbapi_connection, "autocommit", None) is True:
        raise ConfigurationError(
            "the destination's driver connections are in autocommit mode (autocommit=True, set by "
            "connect_args, a creator or a connect hook), so every statement would commit by itself and a "
            "failed load would leave part of its rows committed without their state. Create the engine "
            "without it (or pass the URL and let the pipeline create the engine)."
        )


#: the engines :func:`create_engine` made: the dialects may set these up (events); any other engine is
#: the caller's and is only ever used through :func:`borrowing_engine`
_created: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def created_here(engine: sa.Engine) -> bool:
    """True for an engine :func:`create_engine` made (not for a copy of it from ``execution_options``)."""
    return engine in _created


def borrowing_engine(
    engine: sa.Engine, open_connection: Callable[[Callable[[], Any]], Any] | None = None
) -> sa.Engine:
    """A private engine for the caller's ``engine``: its connections are opened as ``engine`` opens
    them, but pooled, set up and closed apart from ``engine``'s.

    Each new DBAPI connection comes from a copy of ``engine``'s pool (``Pool.recreate()``: the same
    creator, so the same URL, ``connect_args``, ``do_connect`` hooks and pool listeners such as the
    caller's connect-time settings) and is detached from it at once, so ``engine``'s own pool, dialect
    and events are never touched. The private engine has :func:`create_engine`'s options and the
    copied pool's class; a dialect may then add its events to it (:func:`created_here` is True).
    ``open_connection``, if given, is called with the function that opens one connection and returns
    it (DuckDB retries it while another process holds the file). Raises what :func:`check_supported`
    raises.
    """
    check_supported(engine)
    shown = mask_url(engine.url)
    if isinstance(engine.pool, _SHARED_CONNECTION_POOLS):
        raise ConfigurationError(
            f"destination {shown}: the engine's {type(engine.pool).__name__} hands one connection to every "
            "user, but a run needs its own connections (the load's transaction, reads of the destination "
            "while it runs). Pass the URL, or an engine with the default QueuePool or a NullPool."
        )
    if engine.get_execution_options().get("schema_translate_map"):
        raise ConfigurationError(
            f"destination {shown}: the engine has a schema_translate_map, which the pipeline does not "
            "apply (its tables go to dataset_name). Pass an engine without it and choose the schema with "
            "dataset_name."
        )
    source = engine.pool.recreate()

    def borrow() -> Any:
        proxied = source.connect()
        proxied.detach()
        return proxied.dbapi_connection

    def creator() -> Any:
        return borrow() if open_connection is None else open_connection(borrow)

    return create_engine(engine.url, creator=creator, poolclass=type(engine.pool))


#: pools that give one connection to every checkout (in a process, or per thread)
_SHARED_CONNECTION_POOLS = (sa.pool.StaticPool, sa.pool.SingletonThreadPool, sa.pool.AssertionPool)

#: the package extra that brings each database's driver (SQLite's is in the standard library)
INSTALL_EXTRAS = {"duckdb": "duckdb", "postgresql": "postgres"}


def install_hint(backend: str) -> str:
    """``": install the '<extra>' extra (...)"`` for a SQLAlchemy backend name whose driver comes
    with an extra of the package, else ``""``: the end of a missing-driver message."""
    extra = INSTALL_EXTRAS.get(backend)
    return f": {extra_hint(extra)}" if extra else ""


def extra_hint(extra: str) -> str:
    """How to install a package extra, both from an index and from a checkout of the repository."""
    return (
        f"install the {extra!r} extra (pip install 'airflow-state-provider[{extra}]', "
        f"or pip install -e '.[{extra}]' from a checkout)"
    )
