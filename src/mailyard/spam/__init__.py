"""The spam engine: SpamAssassin-syntax rules, a trainable Bayes classifier, spamd protocol.

Public API (the filter builds one engine per worker process):

    engine = SpamEngine.from_settings(settings)        # or SpamEngine(rules_dirs=[...],
                                                       #    bayes_path=..., required_score=5.0)
    verdict = engine.scan(message_bytes, user=None, facts={"spf": "pass", "dkim": "valid",
                                                            "dmarc": "pass"})
    verdict.score, verdict.required, verdict.is_spam, verdict.hits  # (RuleHit(name, score,
    verdict.bayes_probability, verdict.autolearn                    #  description), ...)
    header_fields(verdict)   # [("X-Spam-Flag", "YES"), ("X-Spam-Score", "7.3"), ...]
    engine.learn(message_bytes, is_spam=True, user=None, forget=False) -> bool
    engine.dns_queries(message_bytes, facts=...) -> [(qname, rdtype), ...]
    process_learn_jobs(engine, data_dir) -> LearnJobReport

`facts` keys the rules read: spf, spf_helo ("pass", "fail", "softfail", "neutral", "none",
"permerror", "temperror"), dkim ("valid", "invalid", "none"), dmarc ("pass", "reject",
"quarantine", "none", "missing"), arc, client_ip, envelope_from, and dns (answers to
`dns_queries`: {"QNAME/RDTYPE": ["127.0.0.2"]}).
"""

from mailyard.spam.engine import RuleHit, SpamEngine, SpamVerdict, fold, header_fields, load_ruleset
from mailyard.spam.learnjobs import LearnJobReport, process_learn_jobs

__all__ = [
                                  "LearnJobReport",
                                  "RuleHit",
                                  "SpamEngine",
                                  "SpamVerdict",
                                  "fold",
                                  "header_fields",
                                  "load_ruleset",
                                  "process_learn_jobs",
]
