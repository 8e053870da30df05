"""Which code serves each `[listen]` service.

`SERVICES`: each entry is "module:function" for `async def start(app, service, address) ->
Listener` (use `mailyard.server.listen.serve_stream`).

`POOL_MODULES`: what the process pool's workers run, per service that uses the pool; its
fork server imports those of the enabled services (`server.pool`). `POOL_PRELOAD`: per
service, "module:function" for `f(settings) -> [("module:function", [JSON args])]`, work the
fork server does once before it forks a worker (`server.pool_warm`). Both are read before
the services' own modules are imported, so their targets must be light to import.
"""

SERVICES: dict[str, str] = {
    "smtp": "mailyard.mta.listener:start",
    "submission": "mailyard.mta.listener:start",
    "submissions": "mailyard.mta.listener:start",
    "reinject": "mailyard.mta.listener:start",
    "filter": "mailyard.filter.service:start",
    "lmtp": "mailyard.delivery.lmtp:start",
    "imap": "mailyard.imap.server:start",
    "imaps": "mailyard.imap.server:start",
    "pop3": "mailyard.pop3.server:start",
    "pop3s": "mailyard.pop3.server:start",
    "managesieve": "mailyard.sieve.managesieve.server:start",
    "spamd": "mailyard.spam.service:start",
    "clamd": "mailyard.antivirus.clamd_server:start",
    "metrics": "mailyard.server.metrics:start",
}

POOL_MODULES: dict[str, list[str]] = {
    "filter": ["mailyard.filter.worker", "mailyard.spam.worker", "mailyard.antivirus.worker",
               "mailyard.antivirus.engine"],
    "spamd": ["mailyard.spam.worker"],
    "clamd": ["mailyard.antivirus.worker", "mailyard.antivirus.engine"],
}

POOL_PRELOAD: dict[str, str] = {
    "clamd": "mailyard.antivirus.from_config:pool_preload",
    "filter": "mailyard.antivirus.from_config:filter_pool_preload",
}
