"""The error hierarchy: one base so callers can catch everything of ours, subclasses they can act on."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EqcEnrichError",
    "IndexBusyError",
    "IndexConnectionError",
    "IndexStoreError",
    "InputError",
    "OutputError",
]


class EqcEnrichError(Exception):
    """Base of every error eqc-enrich raises on purpose; its message is one line fit for a user."""


class ConfigError(EqcEnrichError):
    """A setting or option is malformed or contradicts another one."""


class InputError(EqcEnrichError):
    """The input file cannot be read as the table the run needs (missing, unreadable, wrong columns)."""


class OutputError(EqcEnrichError):
    """A file could not be written (a full disk, a folder gone, no permission); nothing was half-written.

    Before a run asks anything this is a bad option (exit 2); after EQC answered, it is the run's own ending,
    `output_failed`: the answers are in the index, and a rerun writes the files without asking again.
    """


class IndexStoreError(EqcEnrichError):
    """The enrichment index cannot be opened, read or written."""

    transient: bool = False
    """True when the same call may succeed later unchanged (a lock held by another process, a lost connection)."""


class IndexBusyError(IndexStoreError):
    """Another process holds the lock this call waited for past the timeout (SQLite busy, PostgreSQL lock timeout,
    serialization failure or deadlock): retrying later is the remedy."""

    transient = True


class IndexConnectionError(IndexStoreError):
    """The database could not be reached, or the connection was lost mid-call."""

    transient = True
