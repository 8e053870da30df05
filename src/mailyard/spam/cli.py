"""`mailyard spam …`: check messages, learn spam/ham, Bayes statistics, the rule report."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys
from pathlib import Path

import click

from mailyard.cli.common import config_option, emit_json, fail, json_option, pass_settings

_ENGINE = None  # the engine workers inherit (fork) or build (other start methods)


@click.group()
def spam() -> None:
    """The spam engine: check messages, teach Bayes, show what is loaded."""


def _engine(settings, rules: tuple[str, ...] = ()):
    from mailyard.spam.engine import SpamEngine
    from mailyard.spam.rules import RuleLoadError

    try:
        engine = SpamEngine.from_settings(settings)
        if rules:
            from mailyard.spam.engine import load_ruleset

            dirs = list(settings.spam.rules_dirs) + list(rules)
            engine = SpamEngine(ruleset=load_ruleset(
                dirs, regex_cache=settings.data_path / "spam-regex.cache"),
                                bayes_path=settings.data_path / "bayes.sqlite3"
                                if settings.spam.bayes else None,
                                required_score=settings.spam.required_score,
                                per_user_bayes=settings.spam.per_user_bayes,
                                bayes_min_learned=settings.spam.bayes_min_learned,
                                autolearn=False)
    except RuleLoadError as exc:
        fail(str(exc), 2)
    engine.autolearn = False  # checking from the command line teaches nothing
    return engine


def _scan_file(path: str, user: str | None):
    try:
        message = Path(path).read_bytes()
    except OSError as exc:
        return path, None, exc.strerror or str(exc)
    return path, _ENGINE.scan(message, user=user), None


def _init_worker(engine) -> None:
    global _ENGINE
    if engine is not None:
        _ENGINE = engine


@spam.command()
@config_option
@json_option
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--user", help="Use this user's Bayes database.")
@click.option("--rules", "rules", multiple=True, type=click.Path(exists=True),
              help="Extra rules directory or .cf file (repeatable).")
@click.option("-j", "--jobs", type=int, default=0, help="Worker processes (default: cores).")
@click.option("-v", "--verbose", is_flag=True, help="Also print the rule loading report.")
@pass_settings
def check(settings, files, as_json, user, rules, jobs, verbose) -> None:
    """Score messages like `spamassassin -t`: score, required, each rule hit."""
    global _ENGINE
    _ENGINE = _engine(settings, rules)
    if verbose and not as_json:
        _print_report(_ENGINE.ruleset, err=True)
    jobs = jobs or os.cpu_count() or 1
    if len(files) > 1 and jobs > 1:
        ctx = multiprocessing.get_context("fork")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            results = list(pool.map(_scan_file, files, [user] * len(files),
                                    chunksize=max(1, len(files) // (jobs * 4))))
    else:
        results = [_scan_file(f, user) for f in files]
    status = 0
    for path, verdict, error in results:
        if error is not None:
            click.echo(f"mailyard: {path}: {error}", err=True)
            status = 2
            continue
        if as_json:
            emit_json({"file": path, "score": verdict.score, "required": verdict.required,
                       "is_spam": verdict.is_spam,
                       "bayes_probability": verdict.bayes_probability,
                       "rules": [{"name": h.name, "score": h.score,
                                  "description": h.description} for h in verdict.hits]})
            continue
        word = "SPAM" if verdict.is_spam else "ham"
        click.echo(f"{path}: {word}, score={verdict.score:.1f} required={verdict.required:.1f}")
        click.echo(" pts rule name              description")
        click.echo("---- ---------------------- " + "-" * 50)
        for hit in verdict.hits:
            click.echo(f"{hit.score:4.1f} {hit.name:<22} {hit.description}")
        if verdict.bayes_probability is not None:
            click.echo(f"     Bayes probability {verdict.bayes_probability:.4f}")
        click.echo("")
    sys.exit(status)


@spam.command()
@config_option
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--spam", "verdict", flag_value="spam", help="These messages are spam.")
@click.option("--ham", "verdict", flag_value="ham", help="These messages are not spam.")
@click.option("--forget", is_flag=True, help="Undo what was learned from these messages.")
@click.option("--user", help="Teach this user's Bayes database (with per_user_bayes).")
@json_option
@pass_settings
def learn(settings, paths, verdict, forget, user, as_json) -> None:
    """Teach Bayes from .eml files, directories, mbox files and Maildirs."""
    from mailyard.spam.bayes import BayesDatabases, message_id, tokenize
    from mailyard.spam.message import ParsedMessage
    from mailyard.spam.sources import count_messages, iter_messages

    if verdict is None and not forget:
        fail("say --spam or --ham (or --forget)", 2)
    dbs = BayesDatabases(settings.data_path / "bayes.sqlite3",
                         per_user=settings.spam.per_user_bayes)
    store = dbs.store(user)
    learned = unchanged = errors = 0
    total = count_messages(list(paths))
    batch_size = 500
    messages = iter_messages(list(paths))
    with click.progressbar(length=total or 0, label="learning", file=sys.stderr,
                           show_pos=True) as bar:
        done = False
        while not done:
            with store.batch():
                for _ in range(batch_size):
                    try:
                        label, message = next(messages)
                    except StopIteration:
                        done = True
                        break
                    except OSError as exc:
                        errors += 1
                        click.echo(f"\nmailyard: {exc}", err=True)
                        continue
                    msg = ParsedMessage.parse(message)
                    changed = store.learn(tokenize(msg), message_id(msg), verdict == "spam",
                                          forget=forget)
                    learned += changed
                    unchanged += not changed
                    bar.update(1)
    store.maybe_expire()
    dbs.close()
    what = "forgotten" if forget else f"learned as {verdict}"
    summary = {"learned": learned, "unchanged": unchanged, "errors": errors,
               "verdict": "forget" if forget else verdict, "database": str(store.path)}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"{learned} message(s) {what}, {unchanged} already known, {errors} error(s)"
                   f" ({store.path})")
    sys.exit(1 if errors else 0)


@spam.command()
@config_option
@json_option
@pass_settings
def stats(settings, as_json) -> None:
    """Messages learned as spam and ham, and tokens, per Bayes database."""
    from mailyard.spam.bayes import BayesDatabases, BayesStore

    dbs = BayesDatabases(settings.data_path / "bayes.sqlite3", per_user=True)
    rows = []
    for path in dbs.all_paths():
        store = BayesStore(path)
        rows.append(store.stats())
        store.close()
    if as_json:
        emit_json({"databases": rows})
        return
    if not rows:
        click.echo("no Bayes database yet (learn with `mailyard spam learn --spam|--ham`)")
    for row in rows:
        click.echo(f"{row['path']}: spam {row['spam']}, ham {row['ham']}, tokens {row['tokens']}")


@spam.command()
@config_option
@json_option
@click.option("--report", is_flag=True, help="List every skipped rule with file:line and why.")
@click.option("--rules", "rules", multiple=True, type=click.Path(exists=True),
              help="Extra rules directory or .cf file (repeatable).")
@pass_settings
def rules(settings, as_json, report, rules) -> None:
    """How many rules load from each source, and which are skipped and why."""
    from mailyard.spam.engine import load_ruleset
    from mailyard.spam.rules import RuleLoadError

    try:
        ruleset = load_ruleset(list(settings.spam.rules_dirs) + list(rules),
                               regex_cache=settings.data_path / "spam-regex.cache")
    except RuleLoadError as exc:
        fail(str(exc), 2)
    if as_json:
        out = ruleset.report()
        if report:
            out["skipped_rules"] = [{"rule": n, "where": w, "reason": r}
                                    for n, w, r in ruleset.skipped]
        emit_json(out)
        return
    _print_report(ruleset, err=False, full=report)


def _print_report(ruleset, err: bool, full: bool = False) -> None:
    rep = ruleset.report()
    click.echo(f"rules: {rep['loaded']} loaded, {rep['skipped']} skipped, from "
               f"{rep['files']} file(s)", err=err)
    for reason, count in rep["skipped_by_reason"].items():
        click.echo(f"  skipped {count:5d}  {reason}", err=err)
    if full:
        for name, where, reason in ruleset.skipped:
            click.echo(f"  {where}: {name}: {reason}", err=err)
