"""The process pool's fork server: which modules it imports, what it preloads, and its start.

Theory of operation: CPU-heavy work (scanning) runs in a `ProcessPoolExecutor` whose workers
are forked from multiprocessing's fork server, a fresh interpreter that imports the enabled
pool services' modules (`services.POOL_MODULES`), then `pool_warm`, which runs the services'
preload jobs (`services.POOL_PRELOAD`: a clamd listener's signature database) before the
first fork. On a server with a large database that preload is most of the start-up, so
`mailyard serve` starts the fork server (`start_fork_server`) as soon as it has read the
config — before it imports asyncio, the App and the services — and the App's pool later
finds it running. This module imports only the standard library, so calling it early
costs nothing that the preload would wait for.

The fork server is one per process (multiprocessing's): the first start wins, and a later
call with other settings finds it running and changes nothing (see `pool_warm`).
"""

from __future__ import annotations

import importlib
import multiprocessing
import multiprocessing.forkserver
import threading

from mailyard.server import pool_warm
from mailyard.server.services import POOL_MODULES, POOL_PRELOAD

_lock = threading.Lock()  # the App may start the pool from a thread


def enabled_pool_services(settings, only: set[str] | None) -> list[str]:
    """The services of `POOL_MODULES` this server runs (`only`: those `--only` names)."""
    listen = settings.listen
    return [service for service in POOL_MODULES if getattr(listen, service)
            and (only is None or service in only)]


def pool_modules(settings, only: set[str] | None) -> list[str]:
    """What the fork server imports: the enabled pool services' modules (all of them when
    none is enabled, so a pool used by something else still works), `pool_warm` last."""
    modules: list[str] = []
    for service in enabled_pool_services(settings, only) or POOL_MODULES:
        modules += [m for m in POOL_MODULES[service] if m not in modules]
    return modules + ["mailyard.server.pool_warm"]


def preload_jobs(settings, only: set[str] | None) -> list[tuple[str, list]]:
    """The enabled services' preload jobs, [("module:function", [JSON args])], each once."""
    jobs: list[tuple[str, list]] = []
    for service in enabled_pool_services(settings, only):
        target = POOL_PRELOAD.get(service)
        if target is None:
            continue
        module_name, _, func_name = target.partition(":")
        for job in getattr(importlib.import_module(module_name), func_name)(settings):
            if job not in jobs:
                jobs.append(job)
    return jobs


def context():
    """The multiprocessing context the pool's workers are forked from."""
    return multiprocessing.get_context("forkserver")


def start_fork_server(settings, only: set[str] | None = None) -> list[tuple[str, list]]:
    """Start the fork server for these settings, unless it runs already; returns the
    preload jobs it was (or would have been) started with. It imports the pool modules,
    not the CLI's `__main__` and what that pulls in, and runs the preload jobs before it
    forks a worker, so every worker starts with them loaded, shared copy-on-write."""
    jobs = preload_jobs(settings, only)
    with _lock:
        context().set_forkserver_preload(pool_modules(settings, only))
        with pool_warm.jobs_for_fork_server(jobs):
            multiprocessing.forkserver.ensure_running()
    return jobs
