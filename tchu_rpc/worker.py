"""Worker: consume a service's call and event queues, run handlers, reply and ack.

The I/O thread receives deliveries and hands them to handler threads (one lane for calls, one for
events), so heartbeats keep flowing while a handler runs; with one call thread, it runs a call's
handler itself after its reads (`DeferringLoop.defer`: no hand-over, and a standby thread serves the
connection if the handler runs long). A finished call's reply and the request's ack are one AMQP
transaction on the delivery's channel (`settling`, `publisher`); if the worker dies before the
commit, the broker redelivers the request to another worker.

A call handler that runs past `handler_time_limit` is answered with `HandlerTimeLimit` and its
request acked (see `timelimit`); a handler's `report_progress()` sends progress to the caller through
the I/O thread; with a `reply_cache`, a request whose message id has a cached reply is answered
from it without running the handler (see `reply_cache`).

A message delivered `delivery_limit` times without an ack (its handler keeps killing the worker)
is dead-lettered, and a caller gets `DeliveryLimitExceeded`. Quorum queues count deliveries in
`x-delivery-count`; on classic queues the worker re-publishes a redelivered message with its count
in `x-tchu-deliveries` (at the back of the queue) and acks the original. Where every other
unhandleable message goes is listed in `dispatch` and the README.
"""

from __future__ import annotations

import codecs
import signal
import threading
import time
from functools import partial
from typing import Any

from kombu import Connection, Consumer

from tchu_rpc import log, topology, wire
from tchu_rpc._amqp import properties
from tchu_rpc._amqp.inline_calls import DeferringLoop
from tchu_rpc._amqp.publisher import Publisher
from tchu_rpc._worker import outgoing
from tchu_rpc._worker.dispatch import Dispatcher, Outcome, describe, previous_deliveries
from tchu_rpc._worker.lanes import Lane
from tchu_rpc._worker.settle import Job, Settler
from tchu_rpc._worker.time_limits import TimeLimits, check_consumer_timeout
from tchu_rpc.config import Settings
from tchu_rpc.errors import ConfigError, ConnectionLost
from tchu_rpc.log import logger, mask_url
from tchu_rpc.registry import Kind, Registry, default_registry
from tchu_rpc.reply_cache import RedisReplyCache, ReplyCache


def _raw_body(message: Any) -> None:
    """Give `message` back the bytes that came: py-amqp decodes bodies that name a content encoding."""
    if isinstance(message.body, str):
        message.body = message.body.encode(_text_encoding(message.content_encoding))


def _text_encoding(name: str | None) -> str:
    try:
        return codecs.lookup(name or "utf-8").name
    except LookupError:
        return "utf-8"


class Worker:
    """Serve a registry's handlers as the service `queue`.

    Args:
        url: broker URL; defaults to `settings.broker_url` (`TCHU_RPC_BROKER_URL`).
        queue: the service's name; its queues are `<queue>.calls`, `<queue>.events`, `<queue>.dead`.
        registry: the handlers to serve; defaults to the registry that `@subscribe` fills.
        settings: all other knobs; defaults to `Settings.from_env()`.
        reply_cache: answer requests whose message id it holds a reply for without running their
            handler, and keep successful replies there (for `settings.reply_cache_ttl` seconds);
            defaults to a `RedisReplyCache` on `settings.reply_cache_url` when that is set.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        queue: str,
        registry: Registry | None = None,
        settings: Settings | None = None,
        reply_cache: ReplyCache | None = None,
    ) -> None:
        settings = settings or Settings.from_env()
        self.settings = settings.replace(broker_url=url) if url else settings
        self.service = topology.check_service(queue)
        self.registry = default_registry if registry is None else registry
        if reply_cache is None and self.settings.reply_cache_url:
            reply_cache = RedisReplyCache(url=self.settings.reply_cache_url)
        self._dispatcher = Dispatcher(self.service, self.registry, self.settings, reply_cache)
        self._limits = TimeLimits(self.settings.handler_time_limit)
        self._consumers: dict[Kind, Consumer] = {}
        self._lanes: dict[Kind, Lane] = {}
        self._settler = Settler(self.service)
        self._started = threading.Event()
        self._stop_requested = threading.Event()
        self._start_error: BaseException | None = None
        self._cancelled = False
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._loop = DeferringLoop(
            f"tchu-worker-{queue}",
            self.settings,
            on_connect=self._setup,
            on_lost=self._lost,
            on_tick=self._enforce_time_limit,
        )

    # -- public API ---------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> Worker:
        """Connect, declare the service's queues, start consuming; return once consuming.

        Raises:
            ConfigError: the registry has no handlers.
            ConnectionLost: the broker could not be reached or refused the set-up.
        """
        if not len(self.registry):
            raise ConfigError(f"worker {self.service!r} has no handlers registered")
        if "call" in self.registry.kinds():
            check_consumer_timeout(self.settings, self.service)
        self._lanes = {
            "call": Lane(f"tchu-call-{self.service}", self.settings.call_concurrency, self._handle),
            "event": Lane(f"tchu-event-{self.service}", self.settings.event_concurrency, self._handle),
        }
        self._loop.start()
        wait = timeout if timeout is not None else self.settings.connect_timeout * 2 + 5
        if not self._started.wait(wait):
            self._start_error = ConnectionLost(f"worker not consuming after {wait} s")
        if self._start_error is not None:
            error = self._start_error
            self.stop(0)
            raise ConnectionLost(
                f"worker {self.service!r} cannot start on {mask_url(self.settings.broker_url)}: {error}"
            ) from error
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop consuming, let in-flight messages finish and be acked, then close; idempotent.

        Messages still unfinished after `timeout` (default `settings.shutdown_grace`) stay unacked
        and the broker redelivers them when the connection closes.
        """
        with self._stop_lock:  # a second caller returns once the first has stopped the worker
            if not self._stopped:
                self._stop(timeout)
                self._stopped = True

    def _stop(self, timeout: float | None) -> None:
        self._stop_requested.set()
        grace = self.settings.shutdown_grace if timeout is None else timeout
        self._loop.submit(self._cancel)
        with self._settler.idle:
            drained = self._settler.idle.wait_for(self._drained, grace)
        if not drained:
            logger.warning("shutdown_grace_expired", service=self.service, inflight=self._settler.inflight)
        self._loop.stop()
        for lane in self._lanes.values():
            lane.close()
        logger.info("worker_stopped", service=self.service)

    def run(self) -> None:
        """Start, serve until `stop()`, SIGTERM or SIGINT, then stop gracefully."""
        self.start()
        signalled = False

        def on_signal(signum: int, frame: object) -> None:
            # No lock here (not even Event.set): a second signal could interrupt this handler.
            nonlocal signalled
            signalled = True

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, on_signal)
        while not signalled and not self._stop_requested.wait(0.2):
            pass
        self.stop()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the I/O thread -----------------------------------------------------------------------
    def _setup(self, conn: Connection) -> None:
        self._consumers = {}
        kinds = self.registry.kinds()
        for kind in ("call", "event"):
            if kind in kinds:
                self._consume(conn, kind)
        channel = self._settler.publishers[next(iter(kinds))].channel
        topology.dead_letter_queue(self.service, self.settings)(channel).declare()
        self._cancelled = False
        if self._stop_requested.is_set():
            self._cancel()
        logger.info(
            "worker_consuming",
            service=self.service,
            calls=self.registry.patterns("call"),
            events=self.registry.patterns("event"),
        )
        self._started.set()

    def _consume(self, conn: Connection, kind: Kind) -> None:
        channel = conn.channel()
        patterns = self.registry.patterns(kind)
        if kind == "call":
            queue = topology.call_queue(self.service, self.settings, patterns)
            prefetch = self.settings.call_concurrency
        else:
            queue = topology.event_queue(self.service, self.settings, patterns)
            prefetch = self.settings.event_prefetch
        queue(channel).declare()
        # Calls settle as transactions (reply and ack committed together, see `publisher`); events,
        # mostly acked with nothing to publish, need no round trip for that.
        self._settler.publishers[kind] = Publisher(
            conn,
            channel,
            on_return=self._settler.returned,
            transactional=kind == "call",
            fast=self._loop.fast,
        )
        consumer = Consumer(
            channel,
            queues=[queue],
            auto_declare=False,
            on_message=partial(self._receive, kind, self._loop.generation),
            on_decode_error=partial(self._undecodable, kind, self._loop.generation),
        )
        consumer.qos(prefetch_count=prefetch)
        consumer.consume()
        self._consumers[kind] = consumer

    def _receive(self, kind: Kind, generation: int, message: Any) -> None:
        self._settler.received()
        _raw_body(message)
        job = Job(kind, generation, message)
        classic = self.settings.queue_type == "classic"
        earlier = previous_deliveries(message, classic=classic)
        malformed = (message.headers or {}).get(properties.MALFORMED)
        if malformed is not None:  # see `properties`: its addresses cannot be trusted, no answer
            self._finish(job, Outcome(dead_reason=f"DecodeError: {malformed}"))
        elif earlier >= self.settings.delivery_limit:
            self._finish(job, self._dispatcher.exhausted(kind, message, earlier))
        elif classic and message.delivery_info.get("redelivered"):
            self._settler.send_then_ack(job, [self._settler.counted_copy(kind, message, earlier)])
        else:
            if kind == "call":
                # The clock starts on receipt: a call channel prefetches one call per handler thread, so
                # its handler starts at once (timing it from the handler thread would wake this one).
                self._limits.start(job, time.monotonic())
                if self.settings.call_concurrency == 1 and self._loop.fast and not self._loop.away:
                    # No hand-over for the usual short call: the I/O thread runs it after its reads,
                    # and a standby thread keeps the connection served if it runs long.
                    self._loop.defer(partial(self._handle, job), partial(self._settler.abandon, job))
                    return
            self._lanes[kind].submit(job)

    def _undecodable(self, kind: Kind, generation: int, message: Any, exc: BaseException) -> None:
        """kombu could not even unpack the message (for example a bad `compression` header)."""
        self._settler.received()
        _raw_body(message)
        reason = f"{type(exc).__name__}: {exc}"
        self._finish(
            Job(kind, generation, message), self._dispatcher.refuse(kind, message, "DecodeError", reason)
        )

    def _finish(self, job: Job, outcome: Outcome) -> None:
        if job.generation != self._loop.generation or self._loop.connection is None:
            self._settler.abandon(job)
            return
        message = job.message
        sends = []
        if outcome.dead_reason is not None:
            sends.append(self._settler.dead_letter(message, outcome.dead_reason))
        if outcome.reply is not None:
            sends.append(outgoing.answer(message, outcome.reply, outcome.content_type))
        self._settler.send_then_ack(job, sends)

    def _send_progress(self, job: Job, body: bytes, content_type: str) -> None:
        publisher = self._settler.publishers.get(job.kind)
        if job.timed_out or job.generation != self._loop.generation or publisher is None:
            return  # answered already, or its reply address died with the old connection
        publisher.publish(**outgoing.answer(job.message, body, content_type))
        log.debug("progress_sent", service=self.service, **describe(job.message))

    def _completed(self, job: Job, outcome: Outcome) -> None:
        self._limits.finish(job)
        if job.timed_out:
            logger.warning(
                "late_result_discarded",
                service=self.service,
                duration_ms=round((time.perf_counter() - job.received) * 1000, 3),
                **describe(job.message),
            )
            return
        self._finish(job, outcome)

    def _enforce_time_limit(self, now: float) -> float | None:
        expired, next_due = self._limits.expired(now)
        for job in expired:
            job.timed_out = True
            logger.error(
                "handler_time_limit_exceeded",
                service=self.service,
                handler_time_limit=self._limits.limit,
                **describe(job.message),
            )
            self._lanes[job.kind].abandon(job)
            self._finish(job, self._dispatcher.timed_out(job.message, self._limits.limit or 0.0))
        return next_due

    def _cancel(self) -> None:
        for kind, consumer in self._consumers.items():
            # Not while a commit is under way: RabbitMQ would close the channel.
            self._settler.publishers[kind].between_commits(consumer.cancel)
        with self._settler.idle:
            self._cancelled = True
            self._settler.idle.notify_all()

    def _drained(self) -> bool:
        return self._settler.inflight <= 0 and (self._cancelled or self._loop.connection is None)

    def _lost(self, exc: BaseException) -> None:
        self._settler.lost()
        self._limits.clear()
        self._consumers = {}
        if not self._started.is_set():
            self._start_error = exc
            self._started.set()

    # -- handler threads ----------------------------------------------------------------------
    def _handle(self, job: Job) -> None:
        try:
            if job.kind == "call":
                outcome = self._dispatcher.call(job.message, partial(self._report, job), job.received)
            else:
                outcome = self._dispatcher.event(job.message)
        except (SystemExit, KeyboardInterrupt) as exc:
            self._exit(job, exc)
            return
        except BaseException as exc:  # a bug of ours; keep the message, say why
            logger.exception("message_failed", service=self.service, error=str(exc))
            outcome = Outcome(dead_reason=f"worker error: {type(exc).__name__}: {exc}")
        self._loop.run_or_submit(partial(self._completed, job, outcome))

    def _exit(self, job: Job, exc: BaseException) -> None:
        """Stop as on SIGTERM: a handler asked the process to exit; its message is redelivered."""
        logger.error(
            "handler_exited",
            service=self.service,
            error_type=type(exc).__name__,
            hint="the worker stops; the message stays unacked and the broker redelivers it",
            **describe(job.message),
        )
        self._settler.abandon(job)  # not acked: the broker redelivers it when the connection closes
        self._stop_requested.set()  # `run()` stops; an embedded worker stops on a thread of its own
        threading.Thread(target=self.stop, name=f"tchu-stop-{self.service}", daemon=True).start()

    def _report(self, job: Job, info: Any) -> bool:
        if job.timed_out:
            return False
        codec = wire.codec_of(job.message.content_type)
        body = wire.encode(codec, wire.Progress(info), self.settings.max_message_bytes)
        self._loop.submit(partial(self._send_progress, job, body, codec.content_type))
        return True
