"""`eqc-enrich review`: a local page where a person settles the names a run could not.

    server = ReviewServer(IndexStore(db), EqcAccess(eqc_url, token), port=0)
    print(server.url)      # http://127.0.0.1:PORT/<server id>/?token=... (works once)
    server.serve()

Layout: `_app` (routes, the session guard), `_pages` and `_static` (HTML, CSS, the key bindings),
`_queue` (what is listed, a file's names), `_decide` (decisions made against the state the page showed,
and undo, journaled), `_search` ("search EQC" and a typed id's check, through the runs' quota, token keeper
and claims), `_server` (uvicorn on one address, loopback by default).
"""

from eqc_enrich.config import EqcAccess
from eqc_enrich.review._app import COOKIE_PREFIX, MAX_PAGE, PAGE_SIZE, ReviewState, create_app, render_queue
from eqc_enrich.review._command import review_command
from eqc_enrich.review._decide import (
    COMPANY_ID_DIGITS,
    MANUAL_DOMAIN,
    MANUAL_SOURCE,
    Decider,
    DecisionRefused,
    NameState,
    Undone,
    eqc_company_id,
    manual_entry,
)
from eqc_enrich.review._pages import KEYS_HELP
from eqc_enrich.review._queue import FileScope, scope_of_file
from eqc_enrich.review._search import EqcSearcher, IdCheck, SearchAnswer, seconds_to_next_slot
from eqc_enrich.review._server import ReviewServer, check_host, is_loopback

__all__ = [
    "COMPANY_ID_DIGITS",
    "COOKIE_PREFIX",
    "KEYS_HELP",
    "MANUAL_DOMAIN",
    "MANUAL_SOURCE",
    "MAX_PAGE",
    "PAGE_SIZE",
    "Decider",
    "DecisionRefused",
    "EqcAccess",
    "EqcSearcher",
    "FileScope",
    "IdCheck",
    "NameState",
    "ReviewServer",
    "ReviewState",
    "SearchAnswer",
    "Undone",
    "check_host",
    "create_app",
    "eqc_company_id",
    "is_loopback",
    "manual_entry",
    "render_queue",
    "review_command",
    "scope_of_file",
    "seconds_to_next_slot",
]
