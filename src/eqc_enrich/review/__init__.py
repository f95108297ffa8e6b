"""`eqc-enrich review`: a local page where a person settles the names a run could not.

    server = ReviewServer(IndexStore(db), EqcAccess(eqc_url, token), port=0)
    print(server.url)      # http://127.0.0.1:PORT/?token=...
    server.serve()

Layout: `_app` (routes, the session guard), `_pages` and `_static` (HTML, CSS, the key bindings),
`_queue` (what is listed, a file's names), `_decide` (decisions and undo, journaled), `_search` ("search
EQC" through the runs' quota, token keeper and claims), `_server` (uvicorn on loopback).
"""

from eqc_enrich.config import EqcAccess
from eqc_enrich.review._app import COOKIE, PAGE_SIZE, ReviewState, create_app, render_queue
from eqc_enrich.review._command import review_command
from eqc_enrich.review._decide import MANUAL_DOMAIN, MANUAL_SOURCE, Decider, Undone, manual_entry
from eqc_enrich.review._pages import KEYS_HELP
from eqc_enrich.review._queue import FileScope, scope_of_file
from eqc_enrich.review._search import EqcSearcher, SearchAnswer, seconds_to_next_slot
from eqc_enrich.review._server import ReviewServer, is_loopback

__all__ = [
    "COOKIE",
    "KEYS_HELP",
    "MANUAL_DOMAIN",
    "MANUAL_SOURCE",
    "PAGE_SIZE",
    "Decider",
    "EqcAccess",
    "EqcSearcher",
    "FileScope",
    "ReviewServer",
    "ReviewState",
    "SearchAnswer",
    "Undone",
    "create_app",
    "is_loopback",
    "manual_entry",
    "render_queue",
    "review_command",
    "scope_of_file",
    "seconds_to_next_slot",
]
