"""Which code serves each `[listen]` service.

Each entry is "module:function" for `async def start(app, service, address) -> Listener`
(use `mailyard.server.listen.serve_stream`). A package that lands replaces its placeholder
entry here with its own start function.
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
