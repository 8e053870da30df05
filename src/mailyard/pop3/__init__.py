"""POP3 access to the Maildir store (the Dovecot POP3 stage).

- `proto`: the sans-I/O wire protocol (RFC 1939, 2449, 5034, 2595); `wire`: message bodies
  in their wire form (CRLF, byte-stuffing, sizes).
- `session`: a POP3 maildrop over `mailyard.maildir` (snapshot, deletions, UIDL, locking).
- `server`: the thin asyncio listener for the `pop3` (STLS) and `pop3s` (implicit TLS) services.
"""
