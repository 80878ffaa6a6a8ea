"""What the broker refused (`basic.nack`), and when each message goes out again.

A quorum queue whose leader is lost refuses every publish until its members have elected another
(about 1.5 s when a node dies). A refusal is not the caller's failure: the client publishes the
message again, with the same message id, after a pause that starts at 25 ms and doubles up to 250 ms
(each with jitter, so that the callers of many clients do not come back together), for as long as
the call's deadline or the event's `publish_timeout` allows. A refused message may still have been
enqueued, so this may deliver one twice (at least once, as after a lost connection).
"""

from __future__ import annotations

import heapq
import random
import threading
from dataclasses import dataclass

_FIRST_PAUSE = 0.025
_LONGEST_PAUSE = 0.25


@dataclass(slots=True)
class Refused:
    """How often the broker refused one message, since when (`time.monotonic()`)."""

    count: int
    since: float

    def said(self, now: float) -> str:
        """Say how often and for how long the broker refused it."""
        times = "once" if self.count == 1 else f"{self.count} times"
        return f"the broker refused it {times} in {now - self.since:.2f} s"


def pause(count: int, rng: random.Random) -> float:
    """Return how long to wait before publishing again after the `count`-th refusal."""
    ceiling = min(_FIRST_PAUSE * 2.0 ** min(count - 1, 16), _LONGEST_PAUSE)
    return ceiling * (0.5 + 0.5 * rng.random())  # half fixed, half jitter


class Refusals:
    """The refused messages to publish again, by when; the I/O thread and the watchdog share it."""

    def __init__(self, rng: random.Random | None = None) -> None:
        #: (when, message id) of each refused message to publish again, a heap; empty but on nacks,
        #: so that the loop's every turn looks at this list alone (no method call on the hot path).
        self.again: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._rng = rng or random.Random()

    def refused(self, message_id: str, refused: Refused, now: float, deadline: float) -> bool:
        """Count a refusal of `message_id`; plan its next publish and return True if `deadline` allows."""
        refused.count += 1
        at = now + pause(refused.count, self._rng)
        if at >= deadline:
            return False  # its deadline settles it, saying the broker kept refusing
        with self._lock:
            heapq.heappush(self.again, (at, message_id))
        return True

    def due(self, now: float) -> tuple[list[str], float | None]:
        """Return the messages to publish again at `now`, and when the next one is due."""
        with self._lock:
            again = self.again
            ids = []
            while again and again[0][0] <= now:
                ids.append(heapq.heappop(again)[1])
            return ids, again[0][0] if again else None
