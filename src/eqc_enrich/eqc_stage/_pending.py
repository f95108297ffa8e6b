"""The side file: answers EQC gave that the index could not take yet, kept on disk until it can.

While the index cannot be written (locked by another process, disk full, connection lost), every answer
in hand and every answer still arriving is appended to a JSON-lines file and flushed at once, so even a
SIGKILL loses nothing the quota paid for. The next run against the same index loads these files first.

One file per run, in a folder derived from the index: beside a SQLite file (`index.db.pending/`), or
under the state folder (`$EQC_ENRICH_STATE_DIR`, default `~/.local/state/eqc-enrich/`) for a database
server. A live run holds an exclusive lock on its own file, so another run never loads (and deletes) a
file that is still being written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from eqc_enrich._errors import IndexStoreError
from eqc_enrich.store import CompanyRecord, IndexEntry, IndexStore, Payload, WriteBatch, redact_url

try:  # POSIX advisory locks; where they do not exist (Windows) files are loaded without the liveness check
    import fcntl
except ImportError:  # pragma: no cover - not reachable on the platforms CI runs
    fcntl = None  # type: ignore[assignment]

__all__ = ["PendingFile", "load_pending", "load_side_files", "pending_dirs"]

STATE_ENV = "EQC_ENRICH_STATE_DIR"
_SUFFIX = ".answers.jsonl"


def pending_dirs(url: str, schema: str | None = None) -> list[Path]:
    """Where the side files of this index live: beside a SQLite file first, then the state folder.

    The state folder is the fallback when the first cannot be written (a full disk takes the database
    and the folder beside it together), so the loader looks in both.
    """
    state = Path(os.environ.get(STATE_ENV) or Path.home() / ".local" / "state" / "eqc-enrich")
    digest = hashlib.sha256(f"{redact_url(url)}|{schema or ''}".encode()).hexdigest()[:16]
    folders = [state / f"pending-{digest}"]
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        database = Path(parsed.database).resolve()
        folders.insert(0, database.with_name(database.name + ".pending"))
    return folders


class PendingFile:
    """This run's side file; created on the first append, removed once everything in it is committed."""

    def __init__(self, folders: list[Path], run_id: str) -> None:
        self._candidates = [folder / f"{run_id}{_SUFFIX}" for folder in folders]
        self.path = self._candidates[0]
        self._handle: IO[str] | None = None
        self.batches = 0

    @property
    def exists(self) -> bool:
        """Something was written to it and not yet discarded."""
        return self.batches > 0

    def append(self, batch: WriteBatch) -> None:
        """Append and flush to disk: what a killed process wrote stays there. Moves to the next folder (with
        everything written so far) when one cannot be written; raises OSError when none can."""
        if not len(batch):
            return
        line = json.dumps(batch_to_json(batch), ensure_ascii=False) + "\n"
        while True:
            try:
                handle = self._open()
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                if not self._move_on():
                    raise
                continue
            self.batches += 1
            return

    def _move_on(self) -> bool:
        """Carry what this file holds to the next candidate folder; False when there is none."""
        index = self._candidates.index(self.path)
        if index + 1 >= len(self._candidates):
            return False
        held = ""
        if self._handle is not None:
            with contextlib.suppress(OSError):
                self._handle.close()
            self._handle = None
            with contextlib.suppress(OSError):
                held = self.path.read_text(encoding="utf-8")
        # complete lines only: a line cut by the full disk is written again by the caller
        held = held[: held.rfind("\n") + 1]
        self.path = self._candidates[index + 1]
        handle = self._open()
        handle.write(held)
        old = self._candidates[index]
        with contextlib.suppress(OSError):
            old.unlink(missing_ok=True)
        return True

    def discard(self) -> None:
        """Everything in the file is committed now."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.path.unlink(missing_ok=True)
        self.batches = 0

    def close(self) -> None:
        """Keep the file (its answers are not committed) and let the next run load it."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def _open(self) -> IO[str]:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("a", encoding="utf-8")
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._handle = handle
        return self._handle


@contextlib.contextmanager
def load_pending(folders: list[Path]) -> Iterator[tuple[WriteBatch, list[Path]]]:
    """Every batch left by runs that ended (files of live runs are skipped), as one batch.

    The files are removed only when the caller's block finishes without an error, that is, after the
    caller committed the batch.
    """
    merged = WriteBatch()
    taken: list[tuple[Path, IO[str]]] = []
    try:
        paths = [path for folder in folders if folder.is_dir() for path in sorted(folder.glob(f"*{_SUFFIX}"))]
        for path in paths:
            handle = _lock_if_dead(path)
            if handle is None:
                continue
            taken.append((path, handle))
            for line in handle:
                if line.strip():
                    with contextlib.suppress(ValueError, TypeError, KeyError):  # a line cut by a crash
                        merged.extend(batch_from_json(json.loads(line)))
        yield merged, [path for path, _ in taken]
        for path, _ in taken:
            path.unlink(missing_ok=True)
    finally:
        for _, handle in taken:
            handle.close()


def load_side_files(store: IndexStore, schema: str | None) -> str | None:
    """Commit the answers earlier runs could not, before anything is asked: nothing paid for is asked twice.

    Returns a note for the run's warnings (None when there was nothing to load); a failure to commit keeps
    the files and says where they wait.
    """
    folders = pending_dirs(store.url, schema)
    with load_pending(folders) as (batch, files):
        if not files:
            return None
        try:
            store.write(batch)
        except IndexStoreError as exc:
            raise IndexStoreError(
                f"{exc}; {len(files)} side file(s) of answers from earlier runs wait in {files[0].parent}"
            ) from exc
    answers = len(batch.payloads) + len(batch.negatives)
    return (
        f"loaded {answers:,} EQC answers ({len(batch.payloads):,} found, {len(batch.negatives):,} not found) "
        f"from {len(files)} side file(s) of earlier runs into the index"
    )


def _lock_if_dead(path: Path) -> IO[str] | None:
    """Open the file and take its lock, or None when a live run holds it."""
    try:
        handle = path.open("r", encoding="utf-8")
    except FileNotFoundError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
    return handle


def batch_to_json(batch: WriteBatch) -> dict[str, Any]:
    return {
        "entries": [{k: v for k, v in asdict(e).items() if k != "updated_at"} for e in batch.entries],
        "negatives": list(batch.negatives),
        "payloads": [asdict(p) for p in batch.payloads],
        "cleared_negatives": list(batch.cleared_negatives),
        "companies": [asdict(c) for c in batch.companies],
    }


def batch_from_json(data: dict[str, Any]) -> WriteBatch:
    entry_fields = {f.name for f in fields(IndexEntry)} - {"updated_at"}
    payload_fields = {f.name for f in fields(Payload)}
    company_fields = {f.name for f in fields(CompanyRecord)}
    return WriteBatch(
        entries=[IndexEntry(**{k: v for k, v in e.items() if k in entry_fields}) for e in data.get("entries", [])],
        negatives=[str(name) for name in data.get("negatives", [])],
        payloads=[Payload(**{k: v for k, v in p.items() if k in payload_fields}) for p in data.get("payloads", [])],
        cleared_negatives=[str(name) for name in data.get("cleared_negatives", [])],
        companies=[
            CompanyRecord(**{k: v for k, v in c.items() if k in company_fields}) for c in data.get("companies", [])
        ],
    )
