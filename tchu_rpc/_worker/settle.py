"""Settle deliveries: publish what each needs, then ack it once the broker took all of it.

What a delivery needs is a reply, a copy to the dead-letter queue, a counted copy back to its own
queue (a redelivery on a classic queue), or an event's retry copies to its service's delay queues
(`retries`). On a call channel (transactional, see `publisher`) those publishes and the ack are one
AMQP transaction: the broker applies all or none. Elsewhere the ack waits for every publish's
confirm. Either way a worker that dies in between leaves the delivery to be redelivered, never lost.
A reply to a caller on another node leaves through the `Relay`, and the rest follows its confirm.
The `Settler` also counts the deliveries in flight, so that a worker can stop when they are settled.
Runs on the worker's I/O thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kombu import Connection

from tchu_rpc import topology, wire
from tchu_rpc._amqp.connection import is_amqp
from tchu_rpc._amqp.publisher import Publisher
from tchu_rpc._amqp.reply_to import node_of, own_node
from tchu_rpc._worker import outgoing, retries
from tchu_rpc._worker.dispatch import EventOutcome, Outcome
from tchu_rpc._worker.messages import delivery_of, describe
from tchu_rpc._worker.relay import Relay
from tchu_rpc.config import Settings
from tchu_rpc.log import get_logger
from tchu_rpc.middleware import Middleware, run_after
from tchu_rpc.registry import Kind

logger = get_logger(__name__)


@dataclass(slots=True, eq=False)
class Job:
    """A delivery the worker has not settled yet."""

    kind: Kind
    generation: int  # of the connection it came on: its ack and reply address die with it
    message: Any
    #: When it arrived (`time.monotonic()`), at the earliest: when the loop that read it began to
    #: wait for the socket (`Loop.looked_at`), so that a pause of the process counts as waiting.
    received: float = field(default_factory=time.monotonic)
    #: Answered with HandlerTimeLimit, or its handler exited: its handler's result is discarded.
    timed_out: bool = False


class Settler:
    """Publish for deliveries, ack them with their commit or on their confirms; count those in flight."""

    def __init__(
        self,
        service: str,
        settings: Settings,
        handoff: Callable[[Callable[[], None]], None],
        middleware: tuple[Middleware, ...] = (),
    ) -> None:
        self.service = service
        self._middleware = middleware  # its `on_dead_letter` hooks
        self.publishers: dict[Kind, Publisher] = {}  # one per lane's channel, set on each connection
        self.relay = Relay(service, settings, self.returned)  # for replies to callers on other nodes
        self._handoff = handoff  # runs a command on the I/O thread (the relay calls back on its own)
        self.node: str | None = None  # of direct reply-to addresses on the node we are connected to
        #: The connection's login: the `user_id` of our copies, which marks them as ours (`outgoing`).
        self.login: str | None = None
        self._here: dict[str, bool] = {}  # reply address -> on that node
        self.inflight = 0
        #: Notified when nothing is in flight any more (and by the worker when it stops consuming).
        self.idle = threading.Condition()
        self._awaiting: set[Job] = set()  # sent, waiting for the broker's commit-ok or confirms

    def received(self) -> None:
        """Count one more delivery in flight."""
        self.inflight += 1

    def send_then_ack(self, job: Job, sends: list[dict[str, Any]]) -> None:
        """Publish `sends` (publish arguments) for `job`, then ack it once the broker took them all.

        On a transactional channel the publishes and the ack go out as one transaction; otherwise
        the ack waits for every publish's confirm, and a refused publish requeues the delivery.
        """
        publisher = self.publishers[job.kind]
        if publisher.transactional:

            def writes() -> None:
                for send in sends:
                    publisher.publish(**send)
                publisher.ack(job.message)

            self._awaiting.add(job)
            publisher.transact(writes, partial(self._committed, job))
            return
        if not sends:
            self.ack(job, True)
            return
        results: list[bool] = []

        def confirmed(ok: bool) -> None:
            results.append(ok)
            if len(results) == len(sends):
                self._awaiting.discard(job)
                self.ack(job, all(results))

        self._awaiting.add(job)
        for send in sends:
            publisher.publish(on_confirm=confirmed, **send)

    def reply_then_ack(self, job: Job, reply: dict[str, Any] | None, sends: list[dict[str, Any]]) -> None:
        """Publish `reply` (if any) and the copies `sends` for `job`, then ack it.

        A reply to a caller on another node goes through the relay first (`relay`); the copies
        and the ack follow once it is confirmed.
        """
        if reply is None:
            self.send_then_ack(job, sends)
        elif self._is_here(reply["routing_key"]):
            self.send_then_ack(job, [*sends, reply])
        else:

            def relayed(ok: bool) -> None:  # on the relay's thread
                self._handoff(partial(self._relayed, job, sends, ok))

            self._awaiting.add(job)
            self.relay.send(reply, relayed)

    def progress(self, job: Job, send: dict[str, Any]) -> None:
        """Publish `send`, a progress message of `job` to its caller (through the relay if need be)."""
        if self._is_here(send["routing_key"]):
            self.publishers[job.kind].publish(**send)
        else:
            self.relay.send(send, None)

    def _is_here(self, address: str) -> bool:
        """Tell whether a reply to `address` may go on our connection: its node is ours, or no node."""
        here = self._here.get(address)
        if here is None:
            if len(self._here) >= 4096:
                self._here.clear()
            node = node_of(address)
            here = self._here[address] = node is None or node == self.node
        return here

    def connected(self, conn: Connection, timeout: float) -> None:
        """Learn the node `conn`, a new connection, reached: replies to callers there go on it."""
        amqp_conn = is_amqp(conn)
        self.login = conn.userid if amqp_conn else None
        self.node = own_node(conn, timeout) if amqp_conn else None
        self._here.clear()
        if self.node is None and amqp_conn:
            hint = "every reply to direct reply-to goes through the relay"
            logger.warning("reply_node_unknown", service=self.service, hint=hint)

    def _relayed(self, job: Job, sends: list[dict[str, Any]], ok: bool) -> None:
        if job not in self._awaiting:
            return  # its connection was lost meanwhile: the broker redelivers it
        self._awaiting.discard(job)
        if ok:
            self.send_then_ack(job, sends)
        else:
            self.ack(job, False)

    def copies(self, job: Job, outcome: Outcome) -> list[dict[str, Any]]:
        """Return the publish arguments of the copies `outcome` asks for: dead letter, retries."""
        message = job.message
        if outcome.dead_reason is not None and self._middleware:
            about, reason = {"service": self.service, **describe(message)}, outcome.dead_reason
            run_after("on_dead_letter", self._middleware, delivery_of(job.kind, message), reason, **about)
        if not isinstance(outcome, EventOutcome):
            if outcome.dead_reason is None:
                return []
            return [self.dead_letter(message, outcome.dead_reason, {wire.HEADER_KIND: job.kind})]
        sends = [self.retry_copy(message, rescheduled) for rescheduled in outcome.rescheduled]
        if outcome.dead_reason is not None:
            extra = {**(outcome.dead_headers or {}), wire.HEADER_KIND: job.kind}
            sends.append(self.dead_letter(message, outcome.dead_reason, extra))
        return sends

    def dead_letter(self, message: Any, reason: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the publish arguments of `message`'s copy to the dead-letter queue, with `reason`."""
        logger.warning("message_dead_lettered", service=self.service, reason=reason, **describe(message))
        headers = {wire.HEADER_ERROR: reason[:1000], **(extra or {})}
        # When it was dead-lettered (`tchu-rpc dead` shows its age).
        send = outgoing.copy(message, f"{self.service}.dead", headers, self.login)
        return {**send, "timestamp": int(time.time())}

    def retry_copy(self, message: Any, rescheduled: retries.Rescheduled) -> dict[str, Any]:
        """Return the publish arguments of an event's copy to the delay queue of its handler's retry.

        Persistent whatever the original was: a waiting retry survives a broker restart.
        """
        queue = topology.retry_queue_name(self.service, rescheduled.queue_ms)
        logger.info(
            "retry_scheduled",
            service=self.service,
            handler=rescheduled.handler,
            attempt=rescheduled.attempt,
            delay_ms=round(rescheduled.wait * 1000),
            queue=queue,
            **describe(message),
        )
        send = outgoing.copy(message, queue, rescheduled.headers(), self.login)
        retries.strip_stale(send["headers"])
        return {**send, "delivery_mode": 2, "expiration": rescheduled.wait}

    def counted_copy(self, job: Job, earlier: int) -> dict[str, Any]:
        """Return the publish arguments of `job`'s copy to its own queue, counting deliveries.

        A call's copy keeps the time its caller has left, less what it spent here, in its header and
        as its `expiration`: a copy must not give an expired call a fresh window.
        """
        message = job.message
        queue = f"{self.service}.{'calls' if job.kind == 'call' else 'events'}"
        extra: dict[str, Any] = {wire.HEADER_DELIVERIES: earlier}
        remaining = (message.headers or {}).get(wire.HEADER_TIMEOUT)
        if job.kind == "call" and isinstance(remaining, int | float) and not isinstance(remaining, bool):
            extra[wire.HEADER_TIMEOUT] = left = remaining - (time.monotonic() - job.received)
            return {**outgoing.copy(message, queue, extra, self.login), "expiration": max(left, 0.001)}
        return outgoing.copy(message, queue, extra, self.login)

    def abandon(self, job: Job) -> None:
        """Give up on `job`: its connection is gone, and the broker redelivers it."""
        logger.warning("message_abandoned", service=self.service, **describe(job.message))
        self.done()

    def ack(self, job: Job, ok: bool) -> None:
        """Ack `job` (or requeue it when `ok` is False) and count it settled."""
        publisher = self.publishers[job.kind]
        settle = publisher.ack if ok else publisher.requeue
        if publisher.transactional:
            # Either takes effect at a commit only: one of its own, or the lane may wait for ever.
            self._awaiting.add(job)
            publisher.transact(partial(settle, job.message), partial(self._committed, job, ok))
            return
        try:
            settle(job.message)
            self._settled(job, "message_acked" if ok else "message_requeued")
        finally:
            self.done()

    def _committed(self, job: Job, acked: bool = True) -> None:
        self._awaiting.discard(job)
        try:
            self._settled(job, "message_acked" if acked else "message_requeued")
        finally:
            self.done()

    def _settled(self, job: Job, event: str) -> None:
        if not logger.enabled():
            return
        logger.debug(
            event,
            service=self.service,
            duration_ms=round((time.monotonic() - job.received) * 1000, 3),
            **describe(job.message),
        )

    def done(self) -> None:
        """Count one delivery settled."""
        with self.idle:
            self.inflight -= 1
            if self.inflight <= 0:
                self.idle.notify_all()

    def returned(self, routing_key: str, exchange: str, text: str, props: dict[str, Any]) -> None:
        """Log a publish the broker could not route (the publishers' `on_return`)."""
        logger.warning(
            "message_unroutable",
            service=self.service,
            routing_key=routing_key,
            reason=text,
            correlation_id=props.get("correlation_id"),
        )

    def lost(self) -> None:
        """Forget the connection's publishers and the deliveries awaiting the broker."""
        self.publishers.clear()
        for _job in list(self._awaiting):
            self.done()  # its commit-ok or confirm can no longer come; the broker redelivers it
        self._awaiting.clear()
