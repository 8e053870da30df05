"""Group commit: file-system changes made durable together, sharing their fsyncs.

Theory of operation. A spool change that must be durable before its caller goes on — a
state update, a removal by the CLI, a message whose file was made on demand — is a
`CommitJob`, and every one goes through the process's `GroupCommitter`. Jobs that arrive
while batches are being made durable queue up; the next batch takes them all and pays for
one fsync of active/ however many of them it holds. Up to `max_batches` batches run at
once: a job arriving mid-batch starts its own batch instead of waiting for the running one
to finish, and the file system's journal merges the concurrent fsyncs (measured in
bench/RESULTS.md: one batch at a time doubled the commit latency under load). Each job's
file writes and fsyncs run in one worker call (fsync on the descriptor already open, not a
reopen). A message in a queue file made ahead needs no directory fsync at all: its commit
(`GroupCommitter.run_file`) goes straight to the fsync pool, where concurrent fsyncs share
the journal's commits — one file fsync per message, and every 250 still waits for its own
data to be on disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CommitJob:
    """File-system changes that must be durable together before a caller goes on."""

    prepare: list[Callable[[], object]] = field(default_factory=list)  # run first
    fsync_files: list[Path] = field(default_factory=list)
    renames: list[tuple[Path, Path]] = field(default_factory=list)
    unlinks: list[Path] = field(default_factory=list)
    sync_dirs: set[Path] = field(default_factory=set)


def write_durably(path: Path, data: bytes) -> None:
    """Create `path` with `data` and fsync it through the same descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Fsyncs of one batch are issued in parallel: the file system's journal merges concurrent
# fsyncs into one commit, where a serial loop would pay one journal commit per file.
FSYNC_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32,
                                                    thread_name_prefix="queue-fsync")


def _fsync_all(paths: list[Path], directory: bool = False) -> dict[Path, OSError]:
    """fsync every path (in parallel when there are several); the failures by path."""
    def one(path: Path) -> OSError | None:
        try:
            fsync_path(path, directory)
            return None
        except OSError as exc:
            return exc

    results = list(FSYNC_POOL.map(one, paths)) if len(paths) > 1 else [one(p) for p in paths]
    return {p: e for p, e in zip(paths, results) if e is not None}


def _prepare(job: CommitJob) -> OSError | None:
    try:
        for step in job.prepare:
            step()
        return None
    except OSError as exc:
        return exc


def execute_batch(jobs: list[CommitJob]) -> list[BaseException | None]:
    """Apply a batch of jobs with one fsync per directory; returns one error slot per job.

    Order per job: its prepare steps (which may write and fsync through their own
    descriptors), then its `fsync_files`, all jobs' in parallel; then its renames and
    unlinks; then each directory touched by the batch is fsynced once, which makes the
    renames durable.
    """
    # File creation and fsync can wait on the journal while another fsync commits it:
    # the jobs of a batch run in parallel.
    work = [job for job in jobs if job.prepare]
    if len(work) > 1:
        done = dict(zip(map(id, work), FSYNC_POOL.map(_prepare, work)))
    else:
        done = {id(job): _prepare(job) for job in work}
    errors: list[BaseException | None] = [done.get(id(job)) for job in jobs]
    failed = _fsync_all([p for i, job in enumerate(jobs) if errors[i] is None
                         for p in job.fsync_files])
    for i, job in enumerate(jobs):
        if errors[i] is None:
            errors[i] = next((failed[p] for p in job.fsync_files if p in failed), None)
    dirs: set[Path] = set()
    for i, job in enumerate(jobs):
        if errors[i] is not None:
            continue
        try:
            for src, dst in job.renames:
                os.replace(src, dst)
            for path in job.unlinks:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            dirs |= job.sync_dirs
        except OSError as exc:
            errors[i] = exc
    dir_failures = _fsync_all(sorted(dirs), directory=True)
    if dir_failures:
        # Nothing in this batch is known durable: every job of it fails.
        exc = next(iter(dir_failures.values()))
        errors = [e or exc for e in errors]
    return errors


class GroupCommitter:
    """Runs commit jobs in batches sharing their fsyncs (or one by one when `group` is off).

    Jobs wait in `_pending`; whenever fewer than `max_batches` batches are running, the
    next batch takes all of them. Each batch runs in its own worker thread and fsyncs the
    directories it touched, so a job is durable when its own batch returns.
    """

    def __init__(self, group: bool = True, max_batches: int = 4):
        self.group = group
        self.max_batches = max(1, max_batches)
        self._pending: list[tuple[CommitJob, asyncio.Future]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._closing = False
        self.batches = 0            # statistics, for the benchmark and tests
        self.jobs = 0
        self.direct = 0             # jobs run by `run_file`

    async def run(self, job: CommitJob) -> None:
        """Return once `job` is durable; raise OSError if it could not be made so."""
        self.jobs += 1
        if not self.group:
            self.batches += 1
            (error,) = await asyncio.to_thread(execute_batch, [job])
            if error is not None:
                raise error
            return
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._closing = False
            self._task = loop.create_task(self._loop(), name="queue-group-commit")
        future = loop.create_future()
        # The waiter may be cancelled (client hung up): the outcome is still consumed.
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append((job, future))
        self._wakeup.set()
        # Shielded: a client that hangs up mid-commit must not leave a half-applied batch.
        await asyncio.shield(future)

    async def run_file(self, fn: Callable[..., object], *args) -> None:
        """Run `fn(*args)` — a file's own writes and fsync, needing no directory fsync —
        in the fsync pool at once, not in a batch: concurrent fsyncs are merged into one
        journal commit by the file system anyway, and a batch would add two trips through
        the event loop (measured: the commit's fsync took 2 ms of its 15 ms p50 under load,
        the rest was waiting for a batch slot and the loop)."""
        self.jobs += 1
        self.direct += 1
        # Shielded: a client that hangs up mid-commit must not interrupt the write.
        await asyncio.shield(asyncio.get_running_loop().run_in_executor(FSYNC_POOL, fn, *args))

    async def _loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._closing and not self._pending:
                if self._running:
                    await asyncio.wait(set(self._running))
                return
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending or len(self._running) >= self.max_batches:
                continue            # a finishing batch sets the wakeup again
            batch, self._pending = self._pending, []
            self.batches += 1
            task = loop.create_task(self._run_batch(batch))
            self._running.add(task)
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if self._wakeup is not None:
            self._wakeup.set()

    @staticmethod
    async def _run_batch(batch: list[tuple[CommitJob, asyncio.Future]]) -> None:
        try:
            errors = await asyncio.to_thread(execute_batch, [job for job, _ in batch])
        except BaseException as exc:        # cancelled, or a bug
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(OSError(f"commit interrupted: {exc!r}"))
            raise
        for (_, fut), error in zip(batch, errors):
            if fut.done():
                continue
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    async def close(self) -> None:
        """Finish every queued job (they carry 250s clients wait for), then stop."""
        if self._task is not None and not self._task.done():
            assert self._wakeup is not None
            self._closing = True
            self._wakeup.set()
            await self._task
        self._task = None
