"""The command line's exit codes: what a scheduler reads. The library reports a status; this maps it.

0 completed; 1 an unexpected error (a bug); 2 bad input, options or settings; 3 no usable EQC token;
4 some names failed after every retry; 5 EQC unavailable; 6 the index could not be written (answers kept
in a side file); 7 the outputs could not be written after the work was done (answers in the index);
130 interrupted. In every ending but 1, 2 and 7 the outputs are complete, with temporary ids where needed.
"""

from __future__ import annotations

__all__ = ["EXIT_BUG", "EXIT_CODES", "EXIT_INTERRUPTED", "EXIT_USAGE", "exit_code", "worker_exit_code"]

EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[str, int] = {
    "completed": 0,
    "token_unavailable": 3,
    "names_failed": 4,
    "eqc_unavailable": 5,
    "index_unavailable": 6,
    "output_failed": 7,
    "interrupted": EXIT_INTERRUPTED,
}
"""The process exit code of each status a run ends with (`eqc_enrich.STATUSES`)."""


def exit_code(status: str) -> int:
    """A run's exit code; a status this table does not know is a bug."""
    return EXIT_CODES.get(status, EXIT_BUG)


def worker_exit_code(status: str) -> int:
    """The worker's: 0 when it drained what was due or was stopped; a run's codes for a token, EQC or the index."""
    return 0 if status in ("completed", "interrupted") else exit_code(status)
