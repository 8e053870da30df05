"""The spamd-compatible listener (`[listen] spamd`) and the background learn-job runner.

The protocol lives in `spamd_proto` (sans-I/O); this module only reads the request from the
socket with a timeout, scans in `app.process_pool` (so the event loop never runs rules),
learns in a thread (TELL: Bayes only, no rules needed), and writes the response.
"""

from __future__ import annotations

import asyncio
import functools

from mailyard import __version__
from mailyard.log import event, get_logger
from mailyard.server.listen import serve_stream
from mailyard.spam import spamd_proto as proto
from mailyard.spam.bayes import BayesDatabases
from mailyard.spam.learnjobs import process_learn_jobs
from mailyard.spam.worker import scan_bytes, warm_up

log = get_logger("spam")
READ_TIMEOUT = 60.0
LEARN_JOB_INTERVAL = 5.0


def bayes_component(app) -> BayesDatabases:
    spam = app.settings.spam
    return BayesDatabases(app.data_path / "bayes.sqlite3", per_user=spam.per_user_bayes,
                          min_learned=spam.bayes_min_learned)


def learner(app):
    """Start (once) the background job that consumes data_dir/spam-learn/ learn jobs."""

    def factory(app):
        dbs = app.component("spam-bayes", bayes_component)

        async def loop() -> None:
            while True:
                try:
                    await asyncio.to_thread(process_learn_jobs, dbs, app.data_path)
                except Exception as exc:  # keep the loop alive; log and retry later
                    event(log, "learn jobs failed", error=repr(exc))
                await asyncio.sleep(LEARN_JOB_INTERVAL)

        return app.spawn(loop(), "spam-learn-jobs")

    return app.component("spam-learner", factory)


async def start(app, service: str, address: str):
    """Start the spamd listener (and the learn-job runner)."""
    if app.settings.spam.bayes:
        learner(app)
    loop = asyncio.get_running_loop()
    # build the engine in a worker now, so the first spamc does not wait for rule loading
    warm = loop.run_in_executor(app.process_pool, warm_up, app.settings)
    warm.add_done_callback(lambda f: f.exception())
    handler = functools.partial(handle, app)
    return await serve_stream(app, service, address, handler)


async def _read_request(reader, max_body: int) -> proto.SpamdRequest:
    parser = proto.SpamdRequestParser(max_body=max_body)
    while True:
        request = parser.next_request()
        if request is not proto.NEED_DATA:
            return request
        data = await asyncio.wait_for(reader.read(65536), timeout=READ_TIMEOUT)
        if data:
            parser.receive_data(data)
        else:
            parser.receive_eof()


async def handle(app, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    settings = app.settings
    peer = writer.get_extra_info("peername")
    try:
        request = await _read_request(reader, settings.smtp.max_message_size)
    except proto.SpamdProtocolError as exc:
        writer.write(proto.format_error(exc.status, str(exc)))
        await writer.drain()
        event(log, "spamd refused", client=peer and peer[0], error=str(exc))
        return
    except TimeoutError:
        writer.write(proto.format_error(proto.EX_TEMPFAIL, "timeout"))
        await writer.drain()
        return
    if request.verb == "SKIP":
        return
    if request.verb == "PING":
        writer.write(proto.format_pong())
        await writer.drain()
        return
    user = request.user if settings.spam.per_user_bayes else None
    try:
        if request.verb == "TELL":
            response = await _tell(app, request, user)
        else:
            response = await _scan(app, request, user)
    except proto.SpamdProtocolError as exc:
        response = proto.format_error(exc.status, str(exc))
    except Exception as exc:  # an engine failure answers EX_SOFTWARE; the listener lives on
        event(log, "spamd scan failed", error=repr(exc))
        response = proto.format_error(proto.EX_SOFTWARE, "internal error")
    writer.write(response)
    await writer.drain()


async def _scan(app, request: proto.SpamdRequest, user: str | None) -> bytes:
    loop = asyncio.get_running_loop()
    verdict = await loop.run_in_executor(app.process_pool, scan_bytes, app.settings,
                                         request.body, user, None)
    hostname = app.settings.server.hostname
    verb = request.verb
    # Responses go back uncompressed: libspamc inflates nothing, whatever it sent.
    compress = False
    event(log, "spamd", verb=verb, score=f"{verdict.score:.1f}", spam=verdict.is_spam,
          size=len(request.body))
    if verb == "CHECK":
        return proto.format_check(verdict)
    if verb == "SYMBOLS":
        return proto.format_symbols(verdict, compress=compress)
    if verb in ("REPORT", "REPORT_IFSPAM"):
        return proto.format_report(verdict, hostname, only_if_spam=verb == "REPORT_IFSPAM",
                                   compress=compress)
    if verb == "HEADERS":
        return proto.format_headers(request.body, verdict, hostname, __version__,
                                    compress=compress)
    return proto.format_process(request.body, verdict, hostname, __version__,
                                compress=compress)


async def _tell(app, request: proto.SpamdRequest, user: str | None) -> bytes:
    if not app.settings.spam.bayes:
        raise proto.SpamdProtocolError(proto.EX_UNAVAILABLE, "Bayes is disabled")
    klass = request.headers.get("message-class", "").lower()
    to_set = [s.strip().lower() for s in request.headers.get("set", "").split(",") if s.strip()]
    to_remove = [s.strip().lower() for s in request.headers.get("remove", "").split(",")
                 if s.strip()]
    if klass not in ("spam", "ham") and to_set:
        raise proto.SpamdProtocolError(proto.EX_PROTOCOL, "Message-class must be spam or ham")
    if set(to_set) & set(to_remove):
        raise proto.SpamdProtocolError(proto.EX_PROTOCOL, "cannot Set and Remove the same place")
    dbs = app.component("spam-bayes", bayes_component)
    did_set, did_remove = [], []
    if "local" in to_remove:
        if await asyncio.to_thread(dbs.learn, request.body, klass == "spam", user=user,
                                   forget=True):
            did_remove.append("local")
    if "local" in to_set:
        if await asyncio.to_thread(dbs.learn, request.body, klass == "spam", user=user):
            did_set.append("local")
    event(log, "spamd tell", message_class=klass, did_set=",".join(did_set) or None,
          did_remove=",".join(did_remove) or None)
    return proto.format_tell(did_set, did_remove)
