"""The App: one running mailyard process and the components its services share.

Theory of operation: `mailyard serve` builds one `App` from the settings, asks
`server.services.SERVICES` for the start function of every enabled `[listen]` service, binds
them all (any bind error stops start-up with a config error, exit 2), then waits for a signal.
SIGTERM/SIGINT: stop accepting, run shutdown hooks (queue flushes, pools stop), drain
connections for up to `server.shutdown_timeout` seconds, exit 0. SIGHUP: reload the config
and accounts where that is safe, and call every registered reload hook.

Shared components are created lazily and once, through `app.component(name, factory)`, so a
service run alone (`--only filter`) builds only what it uses.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib
import os
import signal
import ssl
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from mailyard.config import ConfigError, Settings, load
from mailyard.log import event, get_logger
from mailyard.server.listen import Listener
from mailyard.server.services import SERVICES

log = get_logger("server")


class App:
    """The process-wide context handed to every service's start function."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.listeners: list[Listener] = []
        self._components: dict[str, Any] = {}
        self._shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self._reload_hooks: list[Callable[[Settings], Awaitable[None] | None]] = []
        self._background: set[asyncio.Task] = set()
        self._tls: ssl.SSLContext | None = None
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pool_started: asyncio.Future | None = None
        self._only: set[str] | None = None  # the services `start` was asked for
        self.stopping = asyncio.Event()
        # Cleared while `run_forever` binds the listeners; set otherwise (an App used
        # directly, as tests do, is ready at once).
        self.ready = asyncio.Event()
        self.ready.set()
        settings.data_path.mkdir(parents=True, exist_ok=True)

    # -- shared components ---------------------------------------------------------------
    @property
    def data_path(self):
        return self.settings.data_path

    def component(self, name: str, factory: Callable[[App], Any]) -> Any:
        """The shared instance called `name`, built by `factory(app)` on first use."""
        if name not in self._components:
            self._components[name] = factory(self)
        return self._components[name]

    @property
    def accounts(self):
        from mailyard.accounts import AccountStore

        return self.component("accounts", lambda app: AccountStore.open(app.settings))

    @property
    def dns(self):
        from mailyard.dns import Resolver

        return self.component("dns", lambda app: Resolver.from_settings(app.settings))

    def tls_server_context(self) -> ssl.SSLContext:
        if self._tls is None:
            from mailyard.server.tls import ensure_certificate, server_context

            self._tls = server_context(*ensure_certificate(self.settings))
        return self._tls

    @property
    def process_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        """A process pool sized to the cores, for CPU-heavy work (scanning); its workers
        are forked from the fork server `server.pool` starts (`mailyard serve` starts it
        before the App exists), with the services' preload jobs done."""
        with self._pool_lock:  # `start_pool` may create it from a thread
            if self._pool is None:
                from mailyard.server import pool

                pool.start_fork_server(self.settings, self._only)
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    max_workers=os.cpu_count() or 2, mp_context=pool.context())
            return self._pool

    def start_pool(self) -> None:
        """Create the pool and start a worker (blocking: call it in a thread). A worker
        starts only once the fork server has run its preload jobs; after that, forking
        more workers on demand is quick."""
        self.process_pool.submit(os.getpid).result()

    async def pool_ready(self) -> None:
        """Wait until the workers started by `start` (when a service has preload jobs) are
        up. Submit warm-up work after this: a submit that has to fork a worker blocks the
        event loop until the fork server has finished its preload."""
        if self._pool_started is not None:
            await asyncio.shield(self._pool_started)

    # -- lifecycle hooks -----------------------------------------------------------------
    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> None:
        self._shutdown_hooks.append(hook)

    def on_reload(self, hook: Callable[[Settings], Awaitable[None] | None]) -> None:
        self._reload_hooks.append(hook)

    def spawn(self, coro: Awaitable[None], name: str) -> asyncio.Task:
        """Run a background job for the life of the process (cancelled at shutdown)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._background.add(task)

        def done(t: asyncio.Task) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background job %s failed: %r", name, t.exception(),
                          exc_info=t.exception())

        task.add_done_callback(done)
        return task

    # -- running -------------------------------------------------------------------------
    async def start(self, only: set[str] | None = None) -> None:
        listen = self.settings.listen
        self._only = only
        starts = []
        for service, target in SERVICES.items():
            address = getattr(listen, service)
            if not address or (only is not None and service not in only):
                continue
            module_name, _, func_name = target.partition(":")
            module = importlib.import_module(module_name)
            starts.append((getattr(module, func_name), service, address))
        if self._pool is None:
            from mailyard.server import pool

            if pool.preload_jobs(self.settings, only):
                # The fork server preloads beside the listeners' start-up (`mailyard serve`
                # started it already); the workers are forked from a thread, so the event
                # loop does not wait for the preload.
                self._pool_started = self.spawn(asyncio.to_thread(self.start_pool),
                                                "process-pool-start")
        for start, service, address in starts:
            listener = await start(self, service, address)
            self.listeners.append(listener)

    async def reload(self) -> None:
        try:
            new = load(self.settings.source)
        except ConfigError as exc:
            event(log, "reload refused; keeping the running config", error=str(exc))
            return
        self.settings = new
        accounts = self._components.get("accounts")
        if accounts is not None and hasattr(accounts, "reload"):
            accounts.reload()
        for hook in self._reload_hooks:
            result = hook(new)
            if asyncio.iscoroutine(result):
                await result
        event(log, "reloaded", config=new.source or "<defaults>")

    async def stop(self) -> None:
        for listener in self.listeners:
            listener.close()
        for hook in reversed(self._shutdown_hooks):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(hook(), timeout=self.settings.server.shutdown_timeout)
        timeout = self.settings.server.shutdown_timeout
        await asyncio.gather(*(l.drain(timeout) for l in self.listeners))
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(set(self._background), timeout=2.0)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for comp in self._components.values():
            close = getattr(comp, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result

    async def run_forever(self, only: set[str] | None = None) -> None:
        loop = asyncio.get_running_loop()
        reload_requested = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
        self.ready.clear()
        try:
            await self.start(only)
        except BaseException:
            await self.stop()
            raise
        self.ready.set()
        event(log, "ready", listeners=len(self.listeners), pid=os.getpid())
        while not self.stopping.is_set():
            waiters = [asyncio.ensure_future(self.stopping.wait()),
                       asyncio.ensure_future(reload_requested.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if reload_requested.is_set() and not self.stopping.is_set():
                reload_requested.clear()
                await self.reload()
        event(log, "stopping", reason="signal")
        await self.stop()
        event(log, "stopped")


def run(settings: Settings, only: set[str] | None = None) -> None:
    """Run the server until SIGTERM; uvloop when available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        uvloop = None

    async def main() -> None:
        app = App(settings)
        await app.run_forever(only)

    if uvloop is not None:
        uvloop.run(main())
    else:
        asyncio.run(main())
