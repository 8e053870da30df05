"""The inbound MTA: SMTP, submission and reinjection listeners and the RCPT policy chain.

- `listener`: `start(app, service, address)` for smtp/submission/submissions/reinject.
- `session`: one client session (asyncio shell around `mailyard.smtp.ServerConnection`).
- `policy`: the RCPT chain (DNSBL → auth/trusted relay → local recipient → greylist).
- `dnsbl`, `greylist`, `sasl`, `received`: the pieces it uses.
"""
