"""Whatever a publisher puts on the wire, the worker keeps its connection and settles each message once.

Hypothesis draws batches of messages (`wire_fuzz.drafts`: every basic property, every AMQP field
type in and out of range, `CC`/`BCC` naming the service's own queues and another's, long and
non-UTF-8 strings, deep and wide tables) published byte by byte (`wire_frames`) through both
exchanges and by the default exchange straight into the service's queues. The worker connects
through a proxy that swaps in what the broker refuses at publish (`wire_fuzz`). After each batch
(`wire_service.WireService.settle`):

- the worker is still on its first connection (its loop's generation), and answers a call;
- every time the broker put a message in the call or event queue (or the retry delay queue, which
  hands it back to the event queue) the worker either ran its handler or dead-lettered it: handler
  runs + the worker's dead letters of that message = its arrivals, exactly;
- the dead-letter queue holds, besides, only the broker's own `CC` copies, and stays still; another
  queue named in `CC` holds only the broker's copy of the original publish, never the worker's.

Seeded (`derandomize`), with the fast path on and off. `TCHU_WIRE_FUZZ_EXAMPLES` runs more batches;
`TCHU_WIRE_FUZZ_WITHOUT` (comma-separated `wire_fuzz.FAMILIES`) leaves families of hostile values
out, to tell which one breaks a worker.
"""

from __future__ import annotations

import os
from itertools import count

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from wire_fuzz import FAMILIES, Draft, build, drafts
from wire_service import WireService

BATCH = 50
EXAMPLES = int(os.environ.get("TCHU_WIRE_FUZZ_EXAMPLES", "12"))  # 600 messages per run
WITHOUT = frozenset(filter(None, os.environ.get("TCHU_WIRE_FUZZ_WITHOUT", "").split(",")))
assert WITHOUT <= set(FAMILIES), f"TCHU_WIRE_FUZZ_WITHOUT: unknown families {WITHOUT - set(FAMILIES)}"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("wire_service", [True, False], ids=["fast_path", "no_fast_path"], indirect=True)
def test_worker_keeps_its_connection_and_settles_each_message_once_whatever_is_on_the_wire(
    wire_service: WireService,
) -> None:
    # Given a worker through the proxy, a caller's reply queue and another service's queue
    service = wire_service
    ids = count(1)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a broken worker stays broken
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(drafts(service.names, WITHOUT), min_size=BATCH, max_size=BATCH))
    def batch_is_settled_once(batch: list[Draft]) -> None:
        built = [build(draft, f"wf{next(ids):06d}", service.names) for draft in batch]
        # When a batch is published, each message confirmed by the broker
        service.publish(built)
        # Then the worker settles each message once on its first connection, and answers a call
        service.settle(built)

    batch_is_settled_once()
    published = next(ids) - 1
    assert published >= min(500, EXAMPLES * BATCH), f"hypothesis drew {published} messages only"
