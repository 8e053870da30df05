"""Work the process pool's fork server does once, before it forks any worker.

Theory of operation: the pool's workers are forked from a fork server (`server.pool`), which
imports the enabled services' `POOL_MODULES` first. This module is the last of those
imports: it runs the jobs the services asked for (their `POOL_PRELOAD` functions, see
`server.services`), so what they load — a signature database of hundreds of megabytes — is
loaded once, before the first fork, and every worker starts with it, shared copy-on-write,
instead of each worker loading its own copy on first use.

The fork server is a fresh interpreter started with only module names, so the jobs reach it
through one environment variable set just while the main process starts it
(`jobs_for_fork_server`); the fork server removes it at once, so workers do not see it.
A job that fails is reported on stderr and skipped: the worker then loads on first use,
as without a preload, and reports the error to its caller there. The fork server is one per
process (multiprocessing's), so only the first App of a process (the server has one; tests
may build more) gets its jobs preloaded; a later App's workers find an engine keyed for
another database and load their own, as without a preload.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import sys
import traceback

ENV = "MAILYARD_POOL_WARM"


@contextlib.contextmanager
def jobs_for_fork_server(jobs: list):
    """Put `jobs` ([("module:function", [JSON args])]) in the environment the fork server
    is started with, for the duration of the block."""
    if not jobs:
        yield
        return
    os.environ[ENV] = json.dumps([[target, list(args)] for target, args in jobs])
    try:
        yield
    finally:
        os.environ.pop(ENV, None)


def run_jobs(text: str | None) -> int:
    """Run the jobs of one `ENV` value; returns how many succeeded."""
    done = 0
    for target, args in json.loads(text) if text else []:
        module_name, _, func_name = target.partition(":")
        try:
            getattr(importlib.import_module(module_name), func_name)(*args)
            done += 1
        except Exception:  # noqa: BLE001 - a worker retries it on first use and reports it
            print(f"mailyard pool preload {target} failed:\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)
    return done


if run_jobs(os.environ.pop(ENV, None)):
    # What the jobs loaded lives as long as the fork server and its workers: the collector
    # leaves it alone from now on, so a worker's collections neither walk hundreds of
    # thousands of signatures nor write to (and so unshare) the pages that hold them.
    gc.freeze()
