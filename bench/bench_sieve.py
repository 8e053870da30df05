"""Sieve engine throughput: compile once, run a 20-rule script over a message many times.

Run: `.venv/bin/python bench/bench_sieve.py` (about 3 seconds). The LMTP-level comparison
with Dovecot lives in the delivery bench; this isolates the engine's share of a delivery.
"""

from __future__ import annotations

import time

from mailyard.sieve import SieveContext, SieveEnvelope, compile_script, run

RULES = "\n".join(
    f'if header :contains "subject" "topic-{i}" {{ fileinto "Topics.{i}"; stop; }}'
    for i in range(15)) + """
if address :domain :is "from" "lists.example.org" { fileinto "Lists"; stop; }
if header :matches "list-id" "*<*.example.org>*" { fileinto "Lists.${2}"; stop; }
if body :text :contains "unsubscribe" { addflag "$Bulk"; }
if size :over 1M { fileinto "Big"; stop; }
if spamtest :value "ge" :comparator "i;ascii-numeric" "6" { fileinto "Junk"; stop; }
"""
SCRIPT = ('require ["fileinto", "variables", "imap4flags", "body", "relational", '
          '"comparator-i;ascii-numeric", "spamtest"];\n' + RULES)
MESSAGE = (b"From: Someone <someone@example.net>\r\nTo: user@example.test\r\n"
           b"Subject: a message that matches no topic\r\nMessage-ID: <b@example.net>\r\n"
           b"Date: Wed, 25 Nov 2026 13:00:00 +0000\r\nX-Spam-Status: No, score=1.2 "
           b"required=5.0\r\n\r\n" + b"Hello, this is the body of the message.\r\n" * 60)


def main() -> None:
    envelope = SieveEnvelope(sender="someone@example.net", recipient="user@example.test")
    start = time.perf_counter()
    n_compile = 200
    for _ in range(n_compile):
        script = compile_script(SCRIPT)
    compile_ms = (time.perf_counter() - start) / n_compile * 1000
    context = SieveContext()
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < 2.0:
        result = run(script, MESSAGE, envelope, context)
        n += 1
    elapsed = time.perf_counter() - start
    assert result.implicit_keep is not None and not result.errors
    print(f"sieve: compile 20-rule script {compile_ms:.2f} ms; "
          f"run {n / elapsed:.0f} messages/s ({elapsed / n * 1e6:.0f} us each, body test "
          f"included)")


if __name__ == "__main__":
    main()
