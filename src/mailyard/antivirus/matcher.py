"""Body and logical signatures compiled to one YARA-X rule set.

Why YARA-X: it is a maintained multi-pattern engine (atoms + Aho-Corasick + verification,
compiled to native code) that already speaks everything ClamAV hex signatures need —
wildcards, nibbles, bounded and unbounded jumps, alternatives, `at`/`in` offsets,
`filesize`, match counts and the PE/ELF entry point. Measurements: bench/RESULTS.md.

Each `.ndb` signature becomes `rule bN { strings: $a = {..} condition: <target> and <offset> }`
and each `.ldb` signature `rule lN` with one string per subsignature and its logical
expression as the condition. The rule identifier indexes `names`, so names are free text.
The target type is a global (`ftype`) the engine sets per scanned object from its own
file-type detection.
"""

from __future__ import annotations

import re
import threading

import yara_x

from mailyard.antivirus import hexsig
from mailyard.antivirus.database import SignatureDatabase
from mailyard.antivirus.logical import to_yara_condition


def _offset_condition(offset: str, var: str, target: int) -> str:
    """A ClamAV offset as a YARA condition on string `var` (e.g. "$a")."""
    if offset == "*":
        return var
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


def _uses_modules(text: str) -> bool:
    return "pe." in text or "elf." in text


class Matcher:
    """Compiled body + logical signatures; `scan(data, ftype)` → matching names."""

    def __init__(self, db: SignatureDatabase):
        self.names: dict[str, str] = {}
        self.errors: list[str] = []
        lines: list[str] = []
        origins: list[str] = []
        for i, sig in enumerate(db.body):
            condition = _target_condition(sig.target) + _offset_condition(
                sig.offset, "$a", sig.target)
            lines.append(f"rule b{i} {{ strings: $a = {_pattern(sig.tokens)} "
                         f"condition: {condition} }}")
            origins.append(sig.origin)
            self.names[f"b{i}"] = sig.name
        for i, sig in enumerate(db.logical):
            strings = " ".join(f"$s{j} = {_pattern(sub.tokens, sub.modifiers)}"
                               for j, sub in enumerate(sig.subsigs))
            condition = to_yara_condition(sig.expression, len(sig.subsigs))
            # Offsets of subsignatures narrow where each may match.
            extra = [_offset_condition(sub.offset, f"$s{j}", sig.target)
                     for j, sub in enumerate(sig.subsigs) if sub.offset != "*"]
            extra = [re.sub(r"^\$s(\d+) ", r"(not $s\1 or $s\1 ", e) + ")" for e in extra]
            if sig.file_size:
                extra.append(f"filesize >= {sig.file_size[0]} and "
                             f"filesize <= {sig.file_size[1]}")
            full = _target_condition(sig.target) + " and ".join([f"({condition})"] + extra)
            lines.append(f"rule l{i} {{ strings: {strings} condition: {full} }}")
            origins.append(sig.origin)
            self.names[f"l{i}"] = sig.name
        header = []
        source_all = "\n".join(lines)
        if _uses_modules(source_all):
            header = ['import "pe"', 'import "elf"']
        compiler = yara_x.Compiler(ignore_invalid_rules=True)
        compiler.define_global("ftype", 0)
        self.rule_count = len(lines)
        if lines:
            try:
                compiler.add_source("\n".join(header + lines))
            except yara_x.CompileError:
                pass  # collected below from compiler.errors()
            for error in compiler.errors():
                line = error.get("line", 0) - len(header) - 1
                where = origins[line] if 0 <= line < len(origins) else "?"
                title = error.get("labels", [{}])[0].get("text") or error.get("title")
                self.errors.append(f"{where}: not compilable: {title}")
        self.rules = compiler.build()
        self._local = threading.local()

    def _scanner(self) -> yara_x.Scanner:
        scanner = getattr(self._local, "scanner", None)
        if scanner is None:
            scanner = yara_x.Scanner(self.rules)
            self._local.scanner = scanner
        return scanner

    def scan(self, data: bytes, ftype: int, timeout: float | None = None) -> list[str]:
        """Names of the signatures matching `data` (a file of ClamAV target type `ftype`)."""
        if not self.rule_count:
            return []
        scanner = self._scanner()
        scanner.set_global("ftype", ftype)
        if timeout is not None:
            scanner.set_timeout(max(1, int(timeout + 0.999)))
        results = scanner.scan(data)
        return [self.names[rule.identifier] for rule in results.matching_rules]
