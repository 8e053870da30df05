"""The scan that runs in the process pool: both engines on one message file.

Each worker process builds the spam engine once (rules and Bayes are loaded per process,
never pickled) and rebuilds it when the filter's `generation` changes (SIGHUP). The built-in
virus engine is the one the pool's fork server preloads and every worker is forked with
(`antivirus.worker.engine_for`), shared with the clamd listener's scans. Only a file path
goes in and a small `ScanResult` comes out, so a 50 MB message is never pickled across the
pool.
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path

from mailyard.filter.verdicts import AttachmentSeen, RuleHit, ScanResult
from mailyard.message import get_header

_engines: dict[str, object] = {}
_generation: int | None = None


def _load(settings, generation: int) -> None:
    """The spam engine and a delegating virus backend, rebuilt when `generation` (the
    filter's: SIGHUP) changes; the built-in virus engine is `_virus`'s."""
    global _generation
    if _generation == generation and _engines:
        return
    _engines.clear()
    from mailyard.antivirus.from_config import uses_builtin
    from mailyard.spam import SpamEngine

    if not uses_builtin(settings):
        from mailyard.antivirus import VirusEngine

        _engines["virus"] = VirusEngine.from_settings(settings)
    _engines["spam"] = SpamEngine.from_settings(settings)
    _generation = generation


def _virus(settings, av_generation: int):
    """The virus scanner: the delegating backend, or the built-in engine this worker shares
    with the clamd listener's scans (`antivirus.worker.engine_for`, same key: the pool's fork
    server preloads it, so the worker was forked with it; `av_generation` is the App's
    `EngineGeneration`)."""
    if "virus" in _engines:
        return _engines["virus"]
    from mailyard.antivirus import worker as antivirus
    from mailyard.antivirus.from_config import cache_dir_for, limits_from_settings

    return antivirus.engine_for(settings.antivirus.databases or None,
                                limits_from_settings(settings), av_generation,
                                str(cache_dir_for(settings)))


def facts_from_headers(message: bytes, authserv_id: str) -> dict[str, str]:
    """SPF/DKIM/DMARC facts for the spam engine from our own Authentication-Results field.

    spf: pass|fail|softfail|neutral|none|temperror|permerror; dkim: valid|invalid|none;
    dmarc: pass|quarantine|reject|fail|none (a failed DMARC check reports the policy that
    applies, so rules can score DMARC_REJECT and DMARC_QUARANTINE).
    """
    facts: dict[str, str] = {}
    for value in get_header(message, "Authentication-Results"):
        ident, _, rest = value.partition(";")
        if ident.strip().split()[0:1] != [authserv_id]:
            continue  # only our own results are trustworthy (RFC 8601 §5)
        for clause in rest.split(";"):
            clause = clause.strip()
            method, _, tail = clause.partition("=")
            method = method.strip().lower()
            if method not in ("spf", "dkim", "dmarc") or method in facts:
                continue
            result = (tail.split() or [""])[0].lower()
            if method == "dkim":
                result = {"pass": "valid", "none": "none"}.get(result, "invalid")
            elif method == "dmarc" and result == "fail":
                policy = re.search(r"\(p=(\w+)\)", tail)
                applied = policy.group(1).lower() if policy else "none"
                result = applied if applied in ("reject", "quarantine") else "fail"
            facts[method] = result
    return facts


_dns_down_until = 0.0
DNS_DOWN_PAUSE = 60.0
_resolvers: dict[tuple, object] = {}


def _resolve(settings, queries: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Answer the spam rules' DNSBL/URIBL questions within `[spam] dns_budget` seconds.

    Runs in a pool worker (not the event loop), so plain blocking dnspython is right here;
    the questions go out in parallel. If the resolver times out, network tests pause in this
    worker for a minute so an offline server does not pay the budget on every message.
    """
    global _dns_down_until
    import concurrent.futures
    import time

    import dns.exception
    import dns.nameserver
    import dns.resolver

    from mailyard.config import parse_hostport

    if time.monotonic() < _dns_down_until:
        return {}
    budget = settings.spam.dns_budget
    key = (tuple(settings.dns.nameservers), min(budget, settings.dns.timeout))
    resolver = _resolvers.get(key)
    if resolver is None:   # one per worker and setting: resolv.conf is read once, answers cached
        resolver = dns.resolver.Resolver(configure=not settings.dns.nameservers)
        if settings.dns.nameservers:
            resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_hostport(s))
                                    for s in settings.dns.nameservers]
        resolver.lifetime = key[1]
        resolver.cache = dns.resolver.LRUCache(10000)
        _resolvers.clear()
        _resolvers[key] = resolver
    answers: dict[str, list[str]] = {}
    timed_out = False

    def one(query: tuple[str, str]) -> None:
        nonlocal timed_out
        name, rdtype = query
        try:
            result = resolver.resolve(name, rdtype, search=False)
            answers[f"{name}/{rdtype}"] = [r.to_text().strip('"') for r in result]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            answers[f"{name}/{rdtype}"] = []
        except (dns.exception.Timeout, dns.resolver.NoNameservers):
            timed_out = True
        except dns.exception.DNSException:
            pass

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(queries))) as pool:
        done, _ = concurrent.futures.wait([pool.submit(one, q) for q in queries[:40]],
                                          timeout=budget)
    if timed_out and not answers:
        _dns_down_until = time.monotonic() + DNS_DOWN_PAUSE
    return answers


def scan_file(settings, generation: int, path: str, skip_spam: bool = False,
              av_generation: int = 0) -> ScanResult:
    """Scan the message at `path`; never raises (errors come back in `error`)."""
    try:
        _load(settings, generation)
        message = Path(path).read_bytes()
        virus = _virus(settings, av_generation).scan_message(message)
        attachments = tuple(AttachmentSeen(a.name or "", a.content_type or "",
                                           getattr(a, "detected_type", "") or "",
                                           getattr(a, "depth", 0))
                            for a in getattr(virus, "attachments", ()))
        subject = (get_header(message, "Subject") or [""])[0]
        if virus.infected or skip_spam:
            return ScanResult(infected=virus.infected, virus_names=tuple(virus.names),
                              limits_exceeded=virus.limits_exceeded,
                              encrypted=getattr(virus, "encrypted", False),
                              attachments=attachments, subject=subject)
        facts = facts_from_headers(message, settings.server.hostname)
        engine = _engines["spam"]
        if settings.spam.network_tests:
            queries = engine.dns_queries(message, facts=facts)
            if queries:
                facts["dns"] = _resolve(settings, queries)
        spam = engine.scan(message, facts=facts)
        return ScanResult(
            infected=False, virus_names=(), limits_exceeded=virus.limits_exceeded,
            encrypted=getattr(virus, "encrypted", False), attachments=attachments,
            spam_checked=True, score=float(spam.score),
            hits=tuple(RuleHit(h.name, float(h.score), h.description or "")
                       for h in spam.hits),
            bayes_probability=spam.bayes_probability, autolearn=spam.autolearn,
            subject=subject)
    except Exception as exc:  # an engine bug must defer the message, not lose it
        return ScanResult(error=f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}")
