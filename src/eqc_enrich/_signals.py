"""Stop signals for the long-running commands (`run`, `worker`): SIGINT and SIGTERM go to the event loop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

__all__ = ["on_stop_signals"]


def on_stop_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> Callable[[], None]:
    """Route SIGINT and SIGTERM to `handler` on the loop; returns the undo.

    The loop's own signal handlers do not exist on Windows (where many users of this tool work), so there
    the plain `signal` module hands the signal over to the loop thread-safely.
    """
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for sig in signals:
            loop.add_signal_handler(sig, handler)
    except NotImplementedError:
        previous: dict[signal.Signals, Any] = {sig: signal.getsignal(sig) for sig in signals}
        for sig in signals:
            signal.signal(sig, lambda _sig, _frame: loop.call_soon_threadsafe(handler))

        def restore_plain() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore_plain

    def restore_loop() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return restore_loop
