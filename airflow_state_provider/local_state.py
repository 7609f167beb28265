"""The local state file ``<pipelines_dir>/<pipeline>/state.json``.

Pipelines with ``restore_from_destination=False`` keep their state only there; every other pipeline
keeps a copy of its newest committed state there (``airflow-state sync`` rewrites it from the
destination). The file is replaced atomically (write to a temporary file, then rename).
"""

from __future__ import annotations

from pathlib import Path

from airflow_state_provider.destination.store import StoredState
from airflow_state_provider.state import codec, model


class LocalStateFile:
    """One pipeline's ``state.json`` in its working dir."""

    def __init__(self, working_dir: Path, *, dev_mode: bool = False) -> None:
        self.working_dir = working_dir
        self.dev_mode = dev_mode

    @property
    def path(self) -> Path:
        return self.working_dir / "state.json"

    def read(self) -> StoredState | None:
        """The stored document (``load_id`` is ``""``: the file keeps no history), or None if absent.

        Raises :class:`~airflow_state_provider.exceptions.StateCorruptError` if the file does not decode.
        """
        path = self.path
        if not path.exists():
            return None
        raw = path.read_bytes()
        state = codec.decode_state(raw.decode("utf-8"), where=f"local state file {path}")
        state.pop(model.LOCAL_KEY, None)
        return StoredState(int(state.get("_state_version", 0)), "", None, state, len(raw))

    def write(self, state: dict, load_id: str | None) -> None:
        """Replace the file with ``state`` plus dlt's ``_local`` bookkeeping (last load id, dev mode)."""
        self.working_dir.mkdir(parents=True, exist_ok=True)
        doc = dict(state)
        doc[model.LOCAL_KEY] = {"first_run": False, "last_load_id": load_id, "_dev_mode": self.dev_mode}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(codec.typed_dumps(doc))
        tmp.replace(self.path)
