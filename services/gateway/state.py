"""The gateway's one application state: every resource a request needs, typed, built by
one lifespan in a stated order and closed in the reverse order.

Handlers get it injected (`state: GatewayState`, provided by `provide_state`); the app
guard and middleware read it with `state_of`. Nothing else reaches into the app's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from services.gateway.credentials import Credentials
from services.gateway.ingest.limits import RateLimiter
from services.gateway.query.cache import QueryCache
from services.gateway.query.guard import QueryGuard, TenantQuerySlots
from services.gateway.tail.catchup import TailReader
from services.gateway.tail.hub import TailHub
from shared.db import make_pool
from shared.kept_hours import KeptHours
from shared.redis_conn import make_redis
from shared.settings import Settings
from shared.streams import Enqueuer

_STATE_KEY = "gateway"


@dataclass(slots=True)
class Draining:
    """Set once on SIGTERM/SIGINT: /ready answers 503 from then on, so a load balancer
    stops sending new requests while the gateway still serves (SHUTDOWN_DRAIN_SECONDS)
    and the in-flight ones finish."""

    on: bool = False
    _callbacks: list[Callable[[], None]] = field(default_factory=list)

    def begin(self) -> None:
        if self.on:
            return
        self.on = True
        for callback in self._callbacks:
            callback()

    def also(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)


@dataclass(frozen=True, slots=True)
class GatewayState:
    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    enqueuer: Enqueuer
    query_cache: QueryCache
    kept_hours: KeptHours
    credentials: Credentials
    rate_limiter: RateLimiter
    query_guard: QueryGuard
    tenant_query_slots: TenantQuerySlots
    tail: TailHub
    draining: Draining


@asynccontextmanager
async def open_state(settings: Settings) -> AsyncIterator[GatewayState]:
    """Open every resource, in this order: the pool (without waiting: ingest needs only
    Redis, so the gateway starts while PostgreSQL is still coming up), the command Redis
    client, the query cache (its own client with short timeouts), then what is built on
    them, and last the live tail (its subscription client has no socket timeout)."""
    async with AsyncExitStack() as stack:
        pool = make_pool(settings, name="gateway")
        await pool.open(wait=False)
        stack.push_async_callback(pool.close)
        redis = make_redis(settings)
        stack.push_async_callback(redis.aclose)
        query_cache = QueryCache.from_settings(settings)
        stack.push_async_callback(query_cache.aclose)
        kept_hours = KeptHours.from_settings(settings)
        stack.push_async_callback(kept_hours.aclose)
        tail_redis = make_redis(settings, blocking=True)
        stack.push_async_callback(tail_redis.aclose)
        reader = TailReader(pool, concurrency=max(1, settings.db_pool_max // 2))
        tail = TailHub(settings, reader, tail_redis)
        await tail.start()
        stack.push_async_callback(tail.stop)
        draining = Draining()
        draining.also(tail.begin_shutdown)
        stack.callback(draining.begin)
        yield GatewayState(
            settings=settings,
            pool=pool,
            redis=redis,
            enqueuer=Enqueuer(redis, settings),
            query_cache=query_cache,
            kept_hours=kept_hours,
            credentials=Credentials(pool, settings),
            rate_limiter=RateLimiter(redis, settings),
            query_guard=QueryGuard.from_settings(pool, settings),
            tenant_query_slots=TenantQuerySlots(),
            tail=tail,
            draining=draining,
        )


def lifespan(
    settings: Settings,
) -> Callable[[Litestar], contextlib.AbstractAsyncContextManager[None]]:
    """The app's one lifespan: the state above, and SIGTERM/SIGINT starting the drain
    before uvicorn's own shutdown (see `on_exit_signals`)."""

    @asynccontextmanager
    async def run(app: Litestar) -> AsyncIterator[None]:
        async with open_state(settings) as state:
            app.state[_STATE_KEY] = state
            restore_signals = on_exit_signals(
                state.draining.begin, drain_seconds=settings.shutdown_drain_seconds
            )
            try:
                yield
            finally:
                restore_signals()

    return run


def provide_state(state: State) -> GatewayState:
    """The dependency handlers declare as `state: GatewayState`."""
    gateway: GatewayState = state[_STATE_KEY]
    return gateway


def state_of(connection: ASGIConnection[Any, Any, Any, Any]) -> GatewayState:
    """The state, for the app guard and middleware (which take no dependencies)."""
    return provide_state(connection.app.state)


def on_exit_signals(
    callback: Callable[[], None], *, drain_seconds: float = 0.0
) -> Callable[[], None]:
    """Call `callback` in the running loop on SIGTERM/SIGINT, then the handler that was
    there (uvicorn's, which stops accepting connections and starts its shutdown): after
    `drain_seconds` for a first SIGTERM, at once for SIGINT (Ctrl-C) or a second signal.

    Uvicorn closes its listening socket as soon as its handler runs and sends the
    lifespan shutdown only after every connection has closed: too late to fail /ready or
    to end open streams with a final event, and with nothing left to answer /ready for
    the load balancer to see. Hence the callback first, and the wait before uvicorn's
    handler. Returns the function that puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signalled = False
    passed_on = False  # the old handler has run: the end of a wait has nothing left to do

    def pass_on(signum: int, frame: FrameType | None) -> None:
        nonlocal passed_on
        passed_on = True
        earlier = previous[signal.Signals(signum)]
        if callable(earlier):
            earlier(signum, frame)
        elif earlier == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    def drained(signum: int) -> None:
        if not passed_on:
            pass_on(signum, None)

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal signalled
        loop.call_soon_threadsafe(callback)
        if signalled or signum != signal.SIGTERM or drain_seconds <= 0:
            # Every later signal is passed on too: a second Ctrl-C forces uvicorn's exit.
            pass_on(signum, frame)
        else:
            # call_later is not safe in a signal handler; call_soon_threadsafe is.
            loop.call_soon_threadsafe(loop.call_later, drain_seconds, drained, signum)
        signalled = True

    for sig in previous:
        signal.signal(sig, handler)

    def restore() -> None:
        nonlocal passed_on
        passed_on = True  # a wait still running must not stop a later server
        for sig, earlier in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                if signal.getsignal(sig) is handler:
                    signal.signal(sig, earlier)

    return restore
