"""mailyard.delivery — the LDA stage: LMTP in, Sieve, Maildir out (Dovecot's LMTP + LDA).

- `lmtp`: the `[listen] lmtp` listener (RFC 2033) on the shared `mailyard.smtp` codec; one
  reply per recipient after DATA.
- `agent`: `DeliveryAgent` — RCPT checks (unknown user 550 5.1.1, quota 552 5.2.2 or 452
  4.2.2) and delivery of one recipient's copy (trace headers, quota, Sieve, store, then
  redirects and vacation replies through the queue); `DeliveryResult` per recipient.
- `sieve_glue`: global before → user's active script → global after, and the shipped
  spam-to-Junk default; a broken script keeps the message in INBOX.
- `notices`: vacation replies and redirects as messages for the queue.
- `headers`: Return-Path, Delivered-To, Received.

Settings: `[delivery] quota_tempfail`, `spam_to_junk`, `max_connections`; `[sieve] before`,
`after`.
"""
