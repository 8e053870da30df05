"""Body and logical signatures: the anchored matcher for most, YARA-X for the rest.

Body signatures (`.ndb`) with a plain offset (`*`, `n`, `n,shift`, `EOF-n`) and a fixed run
of at least four bytes go to `anchors.AnchorIndex`: no compilation at load, candidates
found by a vectorized 4-byte anchor table, verified in place (bench/RESULTS.md: 100,000
signatures load in well under a second, and scan faster than the YARA-X rule set did).

Everything else is compiled to one YARA-X rule set — a maintained multi-pattern engine
that speaks what ClamAV hex signatures need (wildcards, nibbles, jumps, alternatives,
`at`/`in` offsets, `filesize`, match counts, the PE/ELF entry point and sections):
each remaining `.ndb` signature becomes `rule bN { strings: $a = {..} condition: <target>
and <offset> }` (plain-offset ones grouped, see `Matcher`), and each `.ldb` signature
`rule lN` with one string per subsignature and its logical expression as the condition.
The rule identifier indexes `names`, so names are free text. The target type is a global
(`ftype`) the engine sets per scanned object from its own file-type detection.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
import time
from pathlib import Path

import yara_x

from mailyard.antivirus import hexsig
from mailyard.antivirus.anchors import AnchorIndex, MatchTimeout, plan, windows
from mailyard.antivirus.database import SignatureDatabase
from mailyard.antivirus.logical import to_yara_condition


def _offset_condition(offset: str, var: str, target: int) -> str:
    """A ClamAV offset as a YARA condition on string `var` (e.g. "$a")."""
    if offset == "*":
        return var
    if offset.endswith("+"):  # PCRE search starting at an offset: a match anywhere after
        start = _offset_condition(offset[:-1], var, target).split(" at ", 1)[1]
        return f"{var} in ({start}..filesize)"
    base, _, shift = offset.partition(",")
    if base.isdigit():
        start = base
    elif base.startswith("EOF-"):
        start = f"filesize - {base[4:]}"
    elif base.startswith("EP"):
        ep = "elf.entry_point" if target == 6 else "pe.entry_point"
        start = f"{ep} {base[2]} {base[3:]}"
    elif base.startswith("SL+"):
        start = f"pe.sections[pe.number_of_sections - 1].raw_data_offset + {base[3:]}"
    elif base.startswith("SE"):
        section = f"pe.sections[{base[2:]}]"
        end = f"{section}.raw_data_offset + {section}.raw_data_size"
        if shift:
            end = f"{end} + {shift}"
        return f"{var} in ({section}.raw_data_offset..{end})"
    elif base.startswith("S"):
        index, _, plus = base[1:].partition("+")
        start = f"pe.sections[{index}].raw_data_offset + {plus}"
    else:  # check_offset() let nothing else through
        raise ValueError(f"bad offset {offset!r}")
    if shift:
        return f"{var} in ({start}..{start} + {shift})"
    return f"{var} at {start}"


def _target_condition(target: int) -> str:
    return "" if target == 0 else f"ftype == {target} and "


def _pattern(tokens: tuple, modifiers: str = "") -> str:
    if not modifiers and not hexsig.needs_regex(tokens):
        return "{ " + hexsig.to_yara_hex(tokens) + " }"
    regex = hexsig.to_yara_regex(tokens).replace("/", "\\/")
    flags = "s" + ("i" if "i" in modifiers else "")
    words = []
    if "w" in modifiers:
        words.append("wide")
        if "a" in modifiers:
            words.append("ascii")
    if "f" in modifiers:
        words.append("fullword")
    return f"/{regex}/{flags}" + (" " + " ".join(words) if words else "")


_UNESCAPED_SLASH = re.compile(r"(?<!\\)/")


def _subsig_pattern(sub) -> str:
    if sub.pcre is None:
        return _pattern(sub.tokens, sub.modifiers)
    flags = "".join(f for f in "is" if f in sub.modifiers)
    regex = _UNESCAPED_SLASH.sub(r"\\/", sub.pcre)
    return f"/{regex}/{flags}"


def _uses_modules(text: str) -> bool:
    return "pe." in text or "elf." in text


GROUP_SIZE = 1000
_GROUPABLE_OFFSET = re.compile(r"^(\*|\d+(,\d+)?|EOF-\d+(,\d+)?)$")


def _offset_check(offset: str):
    """(low, high, from_end) for offsets verified in Python after a grouped match."""
    if offset == "*":
        return None
    base, _, shift = offset.partition(",")
    extra = int(shift) if shift else 0
    if base.startswith("EOF-"):
        return (int(base[4:]), extra, True)
    return (int(base), extra, False)


class Matcher:
    """Body + logical signatures; `scan(data, ftype)` → matching names.

    `Matcher(db, anchored=False)` sends every body signature to YARA-X (the reference the
    tests compare the anchored matcher with). Of the body signatures left to YARA-X, those
    with a plain offset (`*`, `n`, `n,shift`, `EOF-n`) are grouped `GROUP_SIZE` strings to
    a YARA rule (`any of them`), and their offsets checked here
    from the match positions: YARA-X compiles each rule's condition to native code, so a
    rule per signature costs three times the load time (bench/RESULTS.md). Signatures with
    PE/ELF offsets and logical signatures keep a rule each.
    """

    def __init__(self, db: SignatureDatabase, anchored: bool = True):
        self.names: dict[str, str] = {}
        self.errors: list[str] = []
        self._groups: dict[str, list[tuple[str, tuple | None]]] = {}
        self.anchors = AnchorIndex()
        self._yara_body = []
        # The anchored rows, in signature order; those with a summary (nearly all) take
        # their anchor's place in the run from one vector pass (`anchors.windows`).
        rows = []
        at = iter(windows([sig[6][0] for sig in db.body if sig[6] is not None])
                  if anchored else ())
        for sig in db.body:
            name, target, offset, tokens, _origin, text, summary = sig
            if anchored and summary is not None:
                run, pre_min, pre_max, total_max, only_run = summary
                rows.append((name, target, None if offset == "*" else _offset_check(offset),
                             run, next(at), pre_min, pre_max, total_max,
                             None if only_run else text))
                continue
            planned = None
            if anchored and _GROUPABLE_OFFSET.match(offset):
                planned = plan(tokens, text)
            if planned is None:
                self._yara_body.append(sig)
            else:
                rows.append((name, target, None if offset == "*" else _offset_check(offset),
                             *planned))
        self.anchors.extend(rows)
        self.anchors.finish()
        excluded: set[str] = set()
        reasons: dict[str, str] = {}
        for _attempt in range(2):
            lines, origins = self._source(db, excluded)
            compiler = yara_x.Compiler(ignore_invalid_rules=True)
            compiler.define_global("ftype", 0)
            compiler.define_global("container", 0)
            errors = []
            if lines:
                try:
                    compiler.add_source("\n".join(lines))
                except yara_x.CompileError:
                    pass  # collected below from compiler.errors()
                for error in compiler.errors():
                    index = error.get("line", 0) - 1
                    where = origins[index] if 0 <= index < len(origins) else None
                    title = error.get("labels", [{}])[0].get("text") or error.get("title")
                    errors.append((where, title))
                    if where:
                        reasons.setdefault(where, title)
            bad_in_groups = {w for w, _ in errors if w and w not in excluded and
                             w in self._grouped_origins}
            if not bad_in_groups:
                break
            # One bad string spoils its whole group: drop it and build again.
            excluded |= bad_in_groups
        self.errors = [f"{where or '?'}: not compilable: {title}" for where, title in errors]
        self.errors += [f"{where}: not compilable: {reasons.get(where, '?')}"
                        for where in sorted(excluded) if not any(where == w for w, _ in errors)]
        self.rule_count = len(self.names) + len(self._groups)
        self.rules = compiler.build()
        self._local = threading.local()
        del self._yara_body

    def _source(self, db: SignatureDatabase, excluded: set[str]) -> tuple[list[str], list]:
        """YARA source, one physical line per string, and the origin of each line."""
        lines: list[str] = []
        origins: list[str | None] = []
        self.names = {}
        self._groups = {}
        self._grouped_origins: set[str] = set()
        by_target: dict[int, list] = {}
        singles = []
        for sig in self._yara_body:
            if sig.origin in excluded:
                continue
            if _GROUPABLE_OFFSET.match(sig.offset):
                by_target.setdefault(sig.target, []).append(sig)
                self._grouped_origins.add(sig.origin)
            else:
                singles.append(sig)
        uses_modules = bool(singles)
        if uses_modules:
            lines += ['import "pe"', 'import "elf"']
            origins += [None, None]
        for target, sigs in sorted(by_target.items()):
            for start in range(0, len(sigs), GROUP_SIZE):
                rule = f"g{target}_{start}"
                members = []
                lines.append(f"rule {rule} {{ strings:")
                origins.append(None)
                for j, sig in enumerate(sigs[start:start + GROUP_SIZE]):
                    lines.append(f"$p{j} = {_pattern(sig.parsed())}")
                    origins.append(sig.origin)
                    members.append((sig.name, _offset_check(sig.offset)))
                condition = "any of them"
                if target:
                    condition = f"ftype == {target} and any of them"
                lines.append(f"condition: {condition} }}")
                origins.append(None)
                self._groups[rule] = members
        for i, sig in enumerate(singles):
            condition = _target_condition(sig.target) + _offset_condition(
                sig.offset, "$a", sig.target)
            lines.append(f"rule b{i} {{ strings: $a = {_pattern(sig.parsed())} "
                         f"condition: {condition} }}")
            origins.append(sig.origin)
            self.names[f"b{i}"] = sig.name
        for i, sig in enumerate(db.logical):
            count = len(sig.subsigs)
            strings = " ".join(f"$s{j} = {_subsig_pattern(sub)}"
                               for j, sub in enumerate(sig.subsigs))
            overrides = {j: f"($s{j} and {to_yara_condition(sub.trigger, count)})"
                         for j, sub in enumerate(sig.subsigs) if sub.pcre is not None}
            condition = to_yara_condition(sig.expression, count, overrides=overrides)
            # Offsets of subsignatures narrow where each may match.
            extra = [_offset_condition(sub.offset, f"$s{j}", sig.target)
                     for j, sub in enumerate(sig.subsigs) if sub.offset != "*"]
            extra = [re.sub(r"^\$s(\d+) ", r"(not $s\1 or $s\1 ", e) + ")" for e in extra]
            if sig.file_size:
                extra.append(f"filesize >= {sig.file_size[0]} and "
                             f"filesize <= {sig.file_size[1]}")
            extra += [f"({c})" for c in sig.conditions]
            full = _target_condition(sig.target) + " and ".join([f"({condition})"] + extra)
            if not uses_modules and _uses_modules(full):
                lines[:0] = ['import "pe"', 'import "elf"']
                origins[:0] = [None, None]
                uses_modules = True
            lines.append(f"rule l{i} {{ strings: {strings} condition: {full} }}")
            origins.append(sig.origin)
            self.names[f"l{i}"] = sig.name
        return lines, origins

    # -- the compiled cache ------------------------------------------------------------------
    def save(self, directory: Path, key: str, meta: dict) -> None:
        """Write the compiled rules and what `scan` needs, atomically, as `key.*`."""
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.yarx"):
            if old.stem != key:
                old.unlink(missing_ok=True)
                old.with_suffix(".meta").unlink(missing_ok=True)
        state = {"names": self.names, "groups": self._groups, "errors": self.errors,
                 "rule_count": self.rule_count, "anchors": self.anchors, **meta}
        for suffix, write in ((".meta", lambda f: pickle.dump(state, f, protocol=5)),
                              (".yarx", self.rules.serialize_into)):
            tmp = directory / f".{key}{suffix}.{os.getpid()}"
            with open(tmp, "wb") as f:
                write(f)
            os.replace(tmp, directory / f"{key}{suffix}")

    @classmethod
    def load(cls, directory: Path, key: str) -> tuple[Matcher, dict] | None:
        """The cached matcher for `key` and its extra metadata, or None."""
        try:
            with open(directory / f"{key}.meta", "rb") as f:
                state = pickle.load(f)
            with open(directory / f"{key}.yarx", "rb") as f:
                rules = yara_x.Rules.deserialize_from(f)
        except (OSError, EOFError, pickle.UnpicklingError, ValueError, yara_x.ScanError):
            return None
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
            return None
        matcher = cls.__new__(cls)
        matcher.names = state.pop("names")
        matcher._groups = state.pop("groups")
        matcher.errors = state.pop("errors")
        matcher.rule_count = state.pop("rule_count")
        matcher.anchors = state.pop("anchors")
        matcher.rules = rules
        matcher._local = threading.local()
        return matcher, state

    def _scanner(self) -> yara_x.Scanner:
        scanner = getattr(self._local, "scanner", None)
        if scanner is None:
            scanner = yara_x.Scanner(self.rules)
            self._local.scanner = scanner
        return scanner

    def scan(self, data: bytes, ftype: int, timeout: float | None = None,
             container: int = 0) -> list[str]:
        """Names of the signatures matching `data` (a file of ClamAV target type `ftype`,
        found inside a container of type code `container`, 0 = top level)."""
        found: list[str] = []
        if len(self.anchors):
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                hits = self.anchors.scan(data, ftype, deadline)
            except MatchTimeout:
                raise yara_x.TimeoutError("scan timed out") from None
            sigs = self.anchors.sigs
            found += [sigs[i][0] for i in hits]
        if not self.rule_count:
            return found
        scanner = self._scanner()
        scanner.set_global("ftype", ftype)
        scanner.set_global("container", container)
        if timeout is not None:
            scanner.set_timeout(max(1, int(timeout + 0.999)))
        results = scanner.scan(data)
        size = len(data)
        for rule in results.matching_rules:
            members = self._groups.get(rule.identifier)
            if members is None:
                found.append(self.names[rule.identifier])
                continue
            for pattern in rule.patterns:
                matches = pattern.matches
                if not matches:
                    continue
                name, check = members[int(pattern.identifier[2:])]
                if check is None or _offset_ok(matches, check, size):
                    found.append(name)
        return found


def _offset_ok(matches, check: tuple, size: int) -> bool:
    base, shift, from_end = check
    low = size - base if from_end else base
    return any(low <= m.offset <= low + shift for m in matches)
