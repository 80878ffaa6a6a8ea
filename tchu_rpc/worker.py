"""Worker: consume a service's call and event queues, run handlers, reply and ack.

The I/O thread receives deliveries and hands them to handler threads (one lane for calls, one for
events), so heartbeats keep flowing while a handler runs; with one call thread and the fast path, it
runs a call's handler itself after its reads (`_amqp.inline_calls`). A finished call's request is
acked with its reply, or after it (`_worker.settle`; a caller on another node is answered through
the `_worker.relay`); if the worker dies before the ack, the broker redelivers the request. A call
handler past `handler_time_limit` is answered with `HandlerTimeLimit` (`_worker.time_limits`). A
message delivered `delivery_limit` times without an ack is dead-lettered (`_worker.dispatch`, which
lists where every unhandleable message goes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from kombu import Connection, Consumer

from tchu_rpc import topology
from tchu_rpc._amqp import properties
from tchu_rpc._amqp.connection import access_refused, login, refusal
from tchu_rpc._amqp.inline_calls import DeferringLoop
from tchu_rpc._worker import consumers, legacy, outgoing
from tchu_rpc._worker.consumers import SetupProgress, declare_service, open_lane, raw_body
from tchu_rpc._worker.dispatch import Dispatcher, Outcome
from tchu_rpc._worker.lanes import Lane
from tchu_rpc._worker.messages import describe, previous_deliveries, trusted_copy
from tchu_rpc._worker.progress import ProgressSender
from tchu_rpc._worker.settle import Job, Settler
from tchu_rpc._worker.signals import wait_for_stop
from tchu_rpc._worker.time_limits import TimeLimits, check_consumer_timeout
from tchu_rpc.config import Settings
from tchu_rpc.errors import AccessRefused, ConfigError, ConnectionLost, TchuError
from tchu_rpc.health import STALL_LIMIT, Probe
from tchu_rpc.log import get_logger, mask_url
from tchu_rpc.middleware import Middleware, checked
from tchu_rpc.registry import Kind, Registry, default_registry
from tchu_rpc.reply_cache import RedisReplyCache, ReplyCache

logger = get_logger(__name__)


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
        middleware: hooks around every handler and dead letter, in this order (`tchu_rpc.Middleware`).
        accept_tchu_tchu: serve tchu-tchu clients too (`settings.accept_tchu_tchu`, `_worker.legacy`).
        legacy_queue: take over this tchu-tchu service queue (`settings.legacy_queue`); implies the above.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        queue: str,
        registry: Registry | None = None,
        settings: Settings | None = None,
        reply_cache: ReplyCache | None = None,
        middleware: Sequence[Middleware] | None = None,
        accept_tchu_tchu: bool | None = None,
        legacy_queue: str | None = None,
    ) -> None:
        settings = settings or Settings.from_env()
        self.settings = settings.for_worker(url, accept_tchu_tchu, legacy_queue)
        self.service = topology.check_service(queue)
        self.registry = default_registry if registry is None else registry
        if reply_cache is None and self.settings.reply_cache_url:
            reply_cache = RedisReplyCache(url=self.settings.reply_cache_url)
        self._dispatcher = Dispatcher(
            self.service, self.registry, self.settings, reply_cache, checked(middleware)
        )
        self._limits = TimeLimits(self.settings.handler_time_limit)
        self._consumers: dict[Kind, Consumer] = {}
        self._lanes: dict[Kind, Lane] = {}
        self._started, self._stop_requested = threading.Event(), threading.Event()
        self._start_error: BaseException | None = None
        self._cancelled = self._stopped = self._serving = False
        self._stop_lock = threading.Lock()  # a second stop() returns once the first has stopped it
        self._discard_lock = threading.Lock()  # the time limit and a handler's exit race for a job
        hooks = {"on_connect": self._setup, "on_lost": self._lost, "on_tick": self._enforce_time_limit}
        self._loop = DeferringLoop(f"tchu-worker-{queue}", self.settings, **hooks)
        run_or_submit = self._loop.run_or_submit
        self._settler = Settler(self.service, self.settings, run_or_submit, self._dispatcher.middleware)
        self._progress = ProgressSender(
            self.service, self._loop, self._settler, self.settings.max_message_bytes
        )

    def start(self, timeout: float | None = None) -> Worker:
        """Connect, declare the service's queues, start consuming; return once consuming.

        `timeout` bounds it all; by default `2 x connect_timeout + 5` s, renewed while bindings progress.

        Raises:
            ConfigError: the registry has no handlers, or the broker refused the set-up for good (a
                queue that exists with other arguments; with `declare="passive"`, a missing exchange
                or queue, named), with its reason.
            AccessRefused: the user may not do what the set-up needs (a 403), with the broker's text.
            ConnectionLost: the broker could not be reached, or the set-up did not finish.
        """
        if not len(self.registry):
            raise ConfigError(f"worker {self.service!r} has no handlers registered")
        if "call" in self.registry.kinds():
            check_consumer_timeout(self.settings, self.service)
        self.registry.serve(self.service)  # refuses a second service for the same call handlers
        self._serving = True
        name, settings = self.service, self.settings
        self._lanes = {"call": Lane(f"tchu-call-{name}", settings.call_concurrency, self._handle)}
        self._lanes["event"] = Lane(f"tchu-event-{name}", settings.event_concurrency, self._handle)
        progress = self._setup_progress = SetupProgress(lambda: self._loop.stopping)
        self._loop.start()
        if (error := progress.wait(self._started, timeout, self.settings) or self._start_error) is not None:
            self.stop(0)
            raise self._start_failure(error) from error
        return self

    def _start_failure(self, error: BaseException) -> TchuError:
        """Return the error `start` raises: a refusal that no retry will change is not a lost connection."""
        where = mask_url(self.settings.broker_url)
        denied = access_refused(error, login(self.settings.broker_url))
        if denied is not None:
            return AccessRefused(
                f"worker {self.service!r} cannot start on {where}: {denied}",
                operation=denied.operation,
                user=denied.user,
            )
        refused = refusal(error)
        if isinstance(error, ConfigError):  # it names what was refused (a missing queue, a binding)
            return ConfigError(f"worker {self.service!r} cannot start on {where}: {error}")
        if refused:  # a queue declared otherwise
            return ConfigError(f"worker {self.service!r} cannot start on {where}: {refused}")
        return ConnectionLost(f"worker {self.service!r} cannot start on {where}: {error}")

    def probe(self, stall_limit: float = STALL_LIMIT) -> Probe:
        """Tell whether the worker is live (its I/O thread turns) and ready (it consumes), for probes.

        While it sets up on a new connection its I/O thread is busy declaring: live, not ready.
        """
        consuming = bool(self._consumers) and not self._cancelled and self._started.is_set()
        stalled = self._loop.stalled_for()
        if consuming and stalled > stall_limit:
            return Probe(False, False, f"I/O thread stuck for {stalled:.1f} s")
        return Probe(True, consuming, "" if consuming else "not consuming")

    def stop(self, timeout: float | None = None) -> None:
        """Stop consuming, let in-flight messages finish and be acked, then close; idempotent.

        Messages still unfinished after `timeout` (default `settings.shutdown_grace`) stay unacked
        and the broker redelivers them when the connection closes.
        """
        with self._stop_lock:
            if not self._stopped:
                self._stop(timeout)
                self._stopped = True

    def _stop(self, timeout: float | None) -> None:
        self._stop_requested.set()
        if self._serving:
            self.registry.release(self.service)
        grace = self.settings.shutdown_grace if timeout is None else timeout
        self._loop.submit(self._cancel)
        with self._settler.idle:
            drained = self._settler.idle.wait_for(self._drained, grace)
        if not drained:
            logger.warning("shutdown_grace_expired", service=self.service, inflight=self._settler.inflight)
        self._loop.stop()
        self._settler.relay.stop()
        for lane in self._lanes.values():
            lane.close()
        logger.info("worker_stopped", service=self.service)

    def run(self) -> None:
        """Start, serve until `stop()`, SIGTERM or SIGINT, then stop gracefully."""
        self.start()
        wait_for_stop(self._stop_requested)
        self.stop()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the I/O thread -----------------------------------------------------------------------
    def _setup(self, conn: Connection) -> None:
        self._consumers = {}
        declare_service(conn, self.service, self.settings, self.registry, self._setup_progress)
        self._settler.connected(conn, self.settings.connect_timeout)
        for kind in topology.lanes(self.registry, self.settings):  # calls first
            self._consume(conn, kind)
        self._cancelled = False
        if self._stop_requested.is_set():
            self._cancel()
        consumers.log_consuming(self.service, self.registry, self.settings)
        self._started.set()

    def _consume(self, conn: Connection, kind: Kind) -> None:
        generation = self._loop.generation
        self._consumers[kind], self._settler.publishers[kind] = open_lane(
            conn,
            kind,
            self.service,
            self.settings,
            self.registry,
            self._settler.returned,
            partial(self._receive, kind, generation),
            partial(self._undecodable, kind, generation),
            self._loop.fast,
        )

    def _receive(self, kind: Kind, generation: int, message: Any) -> None:
        self._settler.received()
        raw_body(message)
        job = Job(kind, generation, message, self._loop.looked_at)
        classic = self.settings.queue_type == "classic"
        # By the default exchange: our own copy (its headers count, `trusted_copy`), or refused.
        untrusted = message.delivery_info.get("exchange") == "" and trusted_copy(message, self._settler.login)
        earlier = previous_deliveries(message, classic=classic)
        malformed = (message.headers or {}).get(properties.MALFORMED)
        if malformed is not None:  # see `properties`: its addresses cannot be trusted, no answer
            malformed_outcome = Outcome(dead_reason=f"DecodeError: {malformed}")
            self._settle_soon(job, partial(self._finish, job, malformed_outcome))
        elif untrusted:
            refused = self._dispatcher.refuse(kind, message, "UntrustedCopy", untrusted)
            self._settle_soon(job, partial(self._finish, job, refused))
        elif earlier >= self.settings.delivery_limit:
            exhausted = self._dispatcher.exhausted(kind, message, earlier)
            self._settle_soon(job, partial(self._finish, job, exhausted))
        elif classic and message.delivery_info.get("redelivered"):
            counted = [self._settler.counted_copy(job, earlier)]
            self._settle_soon(job, partial(self._settler.send_then_ack, job, counted))
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
        raw_body(message)
        outcome = self._dispatcher.refuse(kind, message, "DecodeError", f"{type(exc).__name__}: {exc}")
        job = Job(kind, generation, message)
        self._settle_soon(job, partial(self._finish, job, outcome))

    def _settle_soon(self, job: Job, settle: Callable[[], None]) -> None:
        """Settle a delivery from its consumer callback: at once on the fast path, else after this read.

        py-amqp's `basic_publish` reads the socket first (a zero-timeout `drain_events`, for a
        `connection.blocked`), which delivers the next waiting message inside this one's callback:
        a copy published there recursed once per message waiting (a RecursionError, and a worker that
        could not reconnect after a restart left thousands redelivered). The fast path writes itself.
        """
        if self._loop.fast:
            settle()
            return

        def after_the_read() -> None:
            # A command outlives its connection (`Loop.submit`): an old delivery tag must not be
            # acked on a new channel, and the broker redelivers it anyway.
            if job.generation != self._loop.generation or self._loop.connection is None:
                self._settler.abandon(job)
            else:
                settle()

        self._loop.submit(after_the_read)

    def _finish(self, job: Job, outcome: Outcome) -> None:
        if job.generation != self._loop.generation or self._loop.connection is None:
            self._settler.abandon(job)
            return
        plain = type(outcome) is Outcome and outcome.dead_reason is None  # the usual outcome: no copies
        sends = [] if plain else self._settler.copies(job, outcome)  # a dead letter, retry copies
        body, content_type = outcome.reply, outcome.content_type
        reply = None if body is None else outgoing.answer(job.message, body, content_type, self.service)
        self._settler.reply_then_ack(job, reply, sends)

    def _completed(self, job: Job, outcome: Outcome) -> None:
        self._limits.finish(job)
        if job.timed_out:
            logger.warning(
                "late_result_discarded",
                service=self.service,
                duration_ms=round((time.monotonic() - job.received) * 1000, 3),
                **describe(job.message),
            )
            return
        self._finish(job, outcome)

    def _enforce_time_limit(self, now: float) -> float | None:
        expired, next_due = self._limits.expired(now)
        for job in expired:
            if not self._discard(job):
                continue  # its handler exited meanwhile: it is settled already (`_exit`)
            limit, about = self._limits.limit, describe(job.message)
            logger.error(
                "handler_time_limit_exceeded", service=self.service, handler_time_limit=limit, **about
            )
            self._lanes[job.kind].abandon(job)
            self._finish(job, self._dispatcher.timed_out(job.message, self._limits.limit or 0.0))
        return next_due

    def _discard(self, job: Job) -> bool:
        """Mark `job`'s handler result as discarded; tell whether it was not already (settle it once)."""
        with self._discard_lock:
            first, job.timed_out = not job.timed_out, True
        return first

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
                report = partial(self._progress.report, job)
                outcome = self._dispatcher.call(job.message, report, job.received)
            else:
                outcome = legacy.event(self._dispatcher, job.message, job.received)
        except (SystemExit, KeyboardInterrupt) as exc:
            self._exit(job, exc)
            return
        except BaseException as exc:  # a bug of ours; keep the message, say why
            logger.exception("message_failed", service=self.service, error=str(exc))
            outcome = Outcome(dead_reason=f"worker error: {type(exc).__name__}: {exc}")
        self._loop.run_or_submit(partial(self._completed, job, outcome))

    def _exit(self, job: Job, exc: BaseException) -> None:
        """Stop as on SIGTERM: a handler asked the process to exit; its message is redelivered."""
        about = describe(job.message)
        logger.error("handler_exited", service=self.service, error=type(exc).__name__, **about)
        if self._discard(job):  # else it was answered with HandlerTimeLimit and settled already
            self._settler.abandon(job)  # not acked: the broker redelivers it when the connection closes
        self._stop_requested.set()  # `run()` stops; an embedded worker stops on a thread of its own
        threading.Thread(target=self.stop, name=f"tchu-stop-{self.service}", daemon=True).start()
