"""Which code serves each `[listen]` service.

Each entry is "module:function" for `async def start(app, service, address) -> Listener`
(use `mailyard.server.listen.serve_stream`). A package that lands replaces its placeholder
entry here with its own start function.
"""

SERVICES: dict[str, str] = {
    "smtp": "mailyard.server.placeholder:start",
    "submission": "mailyard.server.placeholder:start",
    "submissions": "mailyard.server.placeholder:start",
    "reinject": "mailyard.server.placeholder:start",
    "filter": "mailyard.filter.service:start",
    "lmtp": "mailyard.server.placeholder:start",
    "imap": "mailyard.server.placeholder:start",
    "imaps": "mailyard.server.placeholder:start",
    "pop3": "mailyard.server.placeholder:start",
    "pop3s": "mailyard.server.placeholder:start",
    "managesieve": "mailyard.server.placeholder:start",
    "spamd": "mailyard.server.placeholder:start",
    "clamd": "mailyard.antivirus.clamd_server:start",
    "metrics": "mailyard.server.placeholder:start",
}
