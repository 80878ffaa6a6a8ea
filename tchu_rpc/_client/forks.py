"""Fork safety: a client made before `fork()` starts afresh in the child, never touching the parent's socket.

gunicorn's `--preload` and multiprocessing's fork start children with a copy of every object of
the parent, its clients' connections, threads' locks and sockets included, but without their
threads. In the child each followed object gets `_after_fork()`: a new connection on first use. The
copies of the parent's connections are kept, unused and never collected: closing them could send a
`connection.close` on a socket the parent still uses.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Protocol


class _Forkable(Protocol):
    def _after_fork(self) -> None: ...


_FOLLOWED: weakref.WeakSet[Any] = weakref.WeakSet()
_PARENTS: list[Any] = []


def follow(obj: _Forkable) -> None:
    """Call `obj._after_fork()` in every child forked from now on."""
    _FOLLOWED.add(obj)


def keep(obj: Any) -> None:
    """Keep `obj` (a copy of the parent's connection) alive and untouched in this child."""
    _PARENTS.append(obj)


def _after_fork_in_child() -> None:
    for obj in list(_FOLLOWED):
        obj._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
