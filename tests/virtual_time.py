"""An asyncio event loop whose clock is virtual: a wait of any length takes no real time.

The limiter, the gate and the token keeper take a clock and sleep on the loop. Run on this loop with
`clock=loop.time`, they are driven deterministically, however busy the machine is: when every task waits,
the loop jumps its clock to the next timer instead of sleeping. Nothing else changes: the real asyncio
scheduler runs the real code. A test on this loop may do no I/O and start no thread (nothing could wake
the loop), which is why waiting forever raises instead of hanging.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

_T = TypeVar("_T")


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0


class _NoIoSelector(selectors.BaseSelector):
    """Never reports a file ready; a wait with a timeout moves the clock on by the timeout instead."""

    def __init__(self, clock: _Clock) -> None:
        self._clock = clock
        self._keys: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._keys.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("every task waits for something no timer will bring: a deadlock under virtual time")
        self._clock.now += max(0.0, timeout)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._keys

    def close(self) -> None:
        self._keys.clear()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """`time()` is the virtual clock (starting at 0.0); timers fire in order, at once in real time."""

    def __init__(self) -> None:
        self._virtual = _Clock()
        super().__init__(_NoIoSelector(self._virtual))

    def time(self) -> float:
        return self._virtual.now


def run_virtual(main: Callable[[VirtualTimeLoop], Awaitable[_T]]) -> _T:
    """Run `main(loop)` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()
