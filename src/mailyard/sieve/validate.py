"""Semantic checks: known commands and tests, argument shapes, `require` (RFC 5228 §3.2).

Theory of operation: every command and test has a `Signature` in `COMMANDS` / `TESTS` (its
extension, its tagged arguments and which extension each tag needs, its positional argument
kinds, whether it takes a comparator, match type and address part). `validate` walks the tree
produced by `grammar.parse` once, fills `node.tagged` (tag name -> value, plus the normalised
keys "comparator", "match", "relation", "address_part") and `node.positional`, and raises
`SieveCompileError` at the line and column of the first problem. Constant regexes and
comparator names are checked here so a running script meets fewer surprises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import regex

from mailyard.sieve.grammar import Command, Number, SieveCompileError, StringList, Tag, Test

# Extensions this engine implements (the ManageSieve SIEVE capability is computed from here).
EXTENSIONS: tuple[str, ...] = (
    "fileinto", "reject", "ereject", "envelope", "encoded-character", "imap4flags",
    "variables", "body", "relational", "comparator-i;ascii-numeric", "comparator-i;octet",
    "comparator-i;ascii-casemap", "subaddress", "copy", "vacation", "vacation-seconds",
    "mailbox", "date", "index", "editheader", "include", "duplicate", "spamtest",
    "spamtestplus", "virustest", "regex",
)
COMPARATORS = {"i;octet": None, "i;ascii-casemap": None,
               "i;ascii-numeric": "comparator-i;ascii-numeric"}
RELATIONS = ("gt", "ge", "lt", "le", "eq", "ne")
MATCH_TAGS = {"is": None, "contains": None, "matches": None, "regex": "regex",
              "value": "relational", "count": "relational"}
ADDRESS_PARTS = {"all": None, "localpart": None, "domain": None,
                 "user": "subaddress", "detail": "subaddress"}
# An addr-spec, loosely (RFC 5322 §3.4.1 without quoted local parts or comments).
ADDRESS_RE = re.compile(r"[^\s@<>()\[\],;:\"]+@[A-Za-z0-9.\-\[\]:]+")
SET_MODIFIERS = {"lower": 40, "upper": 40, "lowerfirst": 30, "upperfirst": 30,
                 "quotewildcard": 20, "length": 10}


@dataclass(frozen=True)
class Signature:
    """What a command or test accepts.

    `tags` maps a tag to (kind of its value or None for a flag, extension it needs or None).
    `positional` lists kinds ("string", "strlist", "number"); the first `optional_leading`
    of them may be absent (setflag's variable name, hasflag's variable list).
    """

    extension: str | None = None
    positional: tuple[str, ...] = ()
    tags: dict = field(default_factory=dict)
    match: bool = False            # comparator + match type
    address_part: bool = False
    tests: str = "none"            # "none", "one", "list"
    block: str = "none"            # commands: "none" or "required"
    optional_leading: int = 0
    optional_trailing: int = 0
    exclusive: tuple[tuple[str, ...], ...] = ()


_INDEX = {"index": ("number", "index"), "last": (None, "index")}
_FLAGS = {"flags": ("strlist", "imap4flags")}

COMMANDS: dict[str, Signature] = {
    "require": Signature(positional=("strlist",)),
    "if": Signature(tests="one", block="required"),
    "elsif": Signature(tests="one", block="required"),
    "else": Signature(block="required"),
    "stop": Signature(),
    "keep": Signature(tags=dict(_FLAGS)),
    "discard": Signature(),
    "redirect": Signature(positional=("string",), tags={"copy": (None, "copy")}),
    "fileinto": Signature("fileinto", ("string",), tags={
        "copy": (None, "copy"), "create": (None, "mailbox"), **_FLAGS}),
    "reject": Signature("reject", ("string",)),
    "ereject": Signature("ereject", ("string",)),
    "setflag": Signature("imap4flags", ("string", "strlist"), optional_leading=1),
    "addflag": Signature("imap4flags", ("string", "strlist"), optional_leading=1),
    "removeflag": Signature("imap4flags", ("string", "strlist"), optional_leading=1),
    "set": Signature("variables", ("string", "string"),
                     tags={**{m: (None, None) for m in SET_MODIFIERS},
                           "quoteregex": (None, "regex")}),
    "vacation": Signature("vacation", ("string",), tags={
        "days": ("number", None), "seconds": ("number", "vacation-seconds"),
        "subject": ("string", None), "from": ("string", None),
        "addresses": ("strlist", None), "mime": (None, None), "handle": ("string", None)},
        exclusive=(("days", "seconds"),)),
    "addheader": Signature("editheader", ("string", "string"), tags={"last": (None, None)}),
    "deleteheader": Signature("editheader", ("string", "strlist"), match=True,
                              tags={"index": ("number", None), "last": (None, None)},
                              optional_trailing=1),
    "include": Signature("include", ("string",), tags={
        "personal": (None, None), "global": (None, None), "once": (None, None),
        "optional": (None, None)}, exclusive=(("personal", "global"),)),
    "return": Signature("include"),
    "global": Signature("include", ("strlist",)),
}

TESTS: dict[str, Signature] = {
    "address": Signature(None, ("strlist", "strlist"), dict(_INDEX), match=True,
                         address_part=True),
    "envelope": Signature("envelope", ("strlist", "strlist"), match=True, address_part=True),
    "header": Signature(None, ("strlist", "strlist"), dict(_INDEX), match=True),
    "exists": Signature(None, ("strlist",)),
    "size": Signature(None, ("number",), {"over": (None, None), "under": (None, None)},
                      exclusive=(("over", "under"),)),
    "allof": Signature(tests="list"),
    "anyof": Signature(tests="list"),
    "not": Signature(tests="one"),
    "true": Signature(),
    "false": Signature(),
    "string": Signature("variables", ("strlist", "strlist"), match=True),
    "hasflag": Signature("imap4flags", ("strlist", "strlist"), match=True, optional_leading=1),
    "body": Signature("body", ("strlist",), {
        "raw": (None, None), "content": ("strlist", None), "text": (None, None)}, match=True,
        exclusive=(("raw", "content", "text"),)),
    "mailboxexists": Signature("mailbox", ("strlist",)),
    "date": Signature("date", ("string", "string", "strlist"), {
        "zone": ("string", None), "originalzone": (None, None), **_INDEX}, match=True,
        exclusive=(("zone", "originalzone"),)),
    "currentdate": Signature("date", ("string", "strlist"), {"zone": ("string", None)},
                             match=True),
    "duplicate": Signature("duplicate", (), {
        "handle": ("string", None), "header": ("string", None), "uniqueid": ("string", None),
        "seconds": ("number", None), "last": (None, None)},
        exclusive=(("header", "uniqueid"),)),
    "spamtest": Signature("spamtest", ("string",), {"percent": (None, "spamtestplus")},
                          match=True),
    "virustest": Signature("virustest", ("string",), match=True),
}

DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
              "iso8601", "std11", "zone", "weekday")


def _string_kind_ok(kind: str, arg) -> bool:
    if kind == "number":
        return isinstance(arg, Number)
    if kind == "string":
        return isinstance(arg, StringList) and arg.single
    return isinstance(arg, StringList)


class Validator:
    """Walks the syntax tree once; see the module docstring."""

    def __init__(self, extensions: tuple[str, ...] = EXTENSIONS):
        self.available = set(extensions)
        self.required: set[str] = set()

    def error(self, node, msg: str) -> SieveCompileError:
        return SieveCompileError(node.line, node.column, msg)

    def need(self, node, ext: str | None, what: str) -> None:
        if ext and ext not in self.required:
            raise self.error(node, f"{what} requires the {ext!r} extension "
                                   f"(add: require \"{ext}\";)")

    # -- commands ------------------------------------------------------------------------
    def commands(self, commands: list[Command], top: bool) -> None:
        previous: str | None = None
        requires_allowed = top
        for cmd in commands:
            if cmd.name == "require":
                if not requires_allowed:
                    raise self.error(cmd, "require must come before any other command")
            else:
                requires_allowed = False
            if cmd.name in ("elsif", "else") and previous not in ("if", "elsif"):
                raise self.error(cmd, f"{cmd.name} without a preceding if")
            self.command(cmd)
            previous = cmd.name

    def command(self, cmd: Command) -> None:
        sig = COMMANDS.get(cmd.name)
        if sig is None:
            raise self.error(cmd, f"unknown command {cmd.name!r}")
        self.need(cmd, sig.extension, f"command {cmd.name!r}")
        self.arguments(cmd, sig, f"command {cmd.name!r}")
        if sig.block == "required" and cmd.block is None:
            raise self.error(cmd, f"{cmd.name} needs a block {{ ... }}")
        if sig.block == "none" and cmd.block is not None:
            raise self.error(cmd, f"command {cmd.name!r} takes no block")
        if cmd.name == "require":
            for ext in cmd.positional[0]:
                if ext not in self.available:
                    raise self.error(cmd, f"unsupported extension {ext!r}")
                self.required.add(ext)
                if ext == "vacation-seconds":
                    self.required.add("vacation")
                if ext == "spamtestplus":
                    self.required.add("spamtest")
        elif cmd.name == "set":
            self.check_variable_name(cmd, cmd.positional[0])
            precedence = {**SET_MODIFIERS, "quoteregex": 20}
            for level in (40, 30, 20):
                same = sorted(m for m in cmd.tagged if precedence.get(m) == level)
                if len(same) > 1:
                    # RFC 5229 §4.1: two modifiers of one precedence are an error.
                    raise self.error(cmd, f"set: :{same[0]} and :{same[1]} cannot be "
                                          f"used together")
        elif cmd.name == "redirect":
            address = cmd.positional[0]
            # RFC 5228 §4.2: a constant address is checked when the script is compiled.
            if ("${" not in address or "variables" not in self.required) and \
                    not ADDRESS_RE.fullmatch(address.strip()):
                raise self.error(cmd, f"redirect: invalid address {address!r}")
        elif cmd.name == "fileinto":
            if cmd.positional[0] == "":
                raise self.error(cmd, "fileinto: empty mailbox name")
        elif cmd.name in ("addheader", "deleteheader"):
            name = cmd.positional[0]
            if "${" not in name and not re.fullmatch(r"[!-9;-~]+", name):
                raise self.error(cmd, f"invalid header field name {name!r}")
            if cmd.name == "deleteheader" and "last" in cmd.tagged and "index" not in cmd.tagged:
                raise self.error(cmd, ":last needs :index in deleteheader")
        if cmd.block is not None:
            self.commands(cmd.block, top=False)

    def check_variable_name(self, node, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name):
            raise self.error(node, f"invalid variable name {name!r}")

    # -- tests ---------------------------------------------------------------------------
    def test(self, test: Test) -> None:
        sig = TESTS.get(test.name)
        if sig is None:
            raise self.error(test, f"unknown test {test.name!r}")
        self.need(test, sig.extension, f"test {test.name!r}")
        self.arguments(test, sig, f"test {test.name!r}")
        if test.name == "size" and not ({"over", "under"} & test.tagged.keys()):
            raise self.error(test, "size needs :over or :under")
        if test.name in ("date", "currentdate"):
            part = test.positional[-2].lower()
            if "${" not in part and part not in DATE_PARTS:
                raise self.error(test, f"unknown date part {part!r}")
        if test.tagged.get("last") is True and "index" not in test.tagged and \
                test.name != "duplicate":
            raise self.error(test, ":last needs :index")  # RFC 5260 §6

    # -- arguments -----------------------------------------------------------------------
    def arguments(self, node, sig: Signature, what: str) -> None:
        args = node.arguments
        tagged: dict = {}
        i = 0
        while i < len(args) and isinstance(args[i], Tag):
            tag = args[i]
            name = tag.name
            if name in tagged or (name in MATCH_TAGS and "match" in tagged) or (
                    name in ADDRESS_PARTS and "address_part" in tagged):
                raise self.error(tag, f"tag :{name} given twice")
            if sig.match and name == "comparator":
                i += 1
                if i >= len(args) or not _string_kind_ok("string", args[i]):
                    raise self.error(tag, ":comparator needs a string")
                comp = args[i].values[0].lower()
                if comp not in COMPARATORS:
                    raise self.error(args[i], f"unknown comparator {comp!r}")
                self.need(tag, COMPARATORS[comp], f"comparator {comp!r}")
                tagged["comparator"] = comp
            elif sig.match and name in MATCH_TAGS:
                self.need(tag, MATCH_TAGS[name], f"match type :{name}")
                tagged["match"] = name
                if name in ("value", "count"):
                    i += 1
                    if i >= len(args) or not _string_kind_ok("string", args[i]):
                        raise self.error(tag, f":{name} needs a relation string like \"gt\"")
                    rel = args[i].values[0].lower()
                    if rel not in RELATIONS:
                        raise self.error(args[i], f"unknown relation {rel!r}")
                    tagged["relation"] = rel
            elif sig.address_part and name in ADDRESS_PARTS:
                self.need(tag, ADDRESS_PARTS[name], f"address part :{name}")
                tagged["address_part"] = name
            elif name in sig.tags:
                kind, ext = sig.tags[name]
                self.need(tag, ext, f"tag :{name}")
                if kind is None:
                    tagged[name] = True
                else:
                    i += 1
                    if i >= len(args) or not _string_kind_ok(kind, args[i]):
                        raise self.error(tag, f":{name} needs a {kind}")
                    arg = args[i]
                    tagged[name] = (arg.value if kind == "number" else
                                    arg.values[0] if kind == "string" else list(arg.values))
            else:
                raise self.error(tag, f"{what} does not take tag :{name}")
            i += 1
        for group in sig.exclusive:
            present = [t for t in group if t in tagged]
            if len(present) > 1:
                raise self.error(node, f"{what}: :{present[0]} and :{present[1]} "
                                       f"cannot be used together")
        rest = args[i:]
        for arg in rest:
            if isinstance(arg, Tag):
                raise self.error(arg, f"tag :{arg.name} must come before the other arguments")
        kinds = sig.positional
        lo = len(kinds) - sig.optional_leading - sig.optional_trailing
        if not lo <= len(rest) <= len(kinds):
            where = rest[0] if rest else node
            raise self.error(where, f"{what} takes {len(kinds)} argument(s), got {len(rest)}")
        if len(rest) < len(kinds) and sig.optional_leading:
            kinds = kinds[len(kinds) - len(rest):]
        positional: list = []
        for kind, arg in zip(kinds, rest):
            if not _string_kind_ok(kind, arg):
                shown = kind.replace("strlist", "string list")
                raise self.error(arg, f"{what}: expected a {shown}")
            positional.append(arg.value if kind == "number" else
                              arg.values[0] if kind == "string" else list(arg.values))
        if sig.match:
            self.check_match(node, tagged, positional)
        node.tagged, node.positional = tagged, positional
        if sig.tests == "none" and node.tests:
            raise self.error(node.tests[0], f"{what} takes no test")
        if sig.tests == "one" and len(node.tests) != 1:
            where = node.tests[1] if len(node.tests) > 1 else node
            raise self.error(where, f"{what} needs exactly one test")
        if sig.tests == "list" and not node.tests:
            raise self.error(node, f"{what} needs a list of tests")
        for t in node.tests:
            self.test(t)

    def check_match(self, node, tagged: dict, positional: list) -> None:
        match = tagged.get("match", "is")
        comp = tagged.get("comparator", "i;ascii-casemap")
        if comp == "i;ascii-numeric" and match in ("contains", "matches", "regex"):
            raise self.error(node, f"comparator i;ascii-numeric does not support :{match}")
        if match == "regex" and positional:
            for pattern in positional[-1]:
                if "${" in pattern and "variables" in self.required:
                    continue
                try:
                    compile_regex(pattern, comp)
                except (regex.error, ValueError) as exc:
                    raise self.error(node, f"bad regular expression {pattern!r}: {exc}") from None


def compile_regex(pattern: str, comparator: str):
    """POSIX extended regular expressions, approximated with the `regex` module (draft)."""
    flags = regex.IGNORECASE if comparator == "i;ascii-casemap" else 0
    return regex.compile(pattern, flags | regex.DOTALL)


_ENCODED = re.compile(r"\$\{(hex|unicode):([^}]*)\}", re.IGNORECASE)


def decode_encoded_characters(value: str) -> str:
    """RFC 5228 §2.4.2.4: replace ${hex:..} and ${unicode:..}; malformed ones stay as is."""
    if "${" not in value:
        return value

    def repl(m: re.Match) -> str:
        kind, body = m.group(1).lower(), m.group(2).strip()
        parts = body.split()
        if not parts or not all(re.fullmatch(r"[0-9a-fA-F]+", p) for p in parts):
            return m.group(0)
        if kind == "hex":
            if any(len(p) > 2 for p in parts):
                return m.group(0)
            try:
                return bytes(int(p, 16) for p in parts).decode("utf-8")
            except UnicodeDecodeError:
                return m.group(0)
        out = []
        for p in parts:
            cp = int(p, 16) if len(p) <= 8 else 0x110000
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
                return m.group(0)  # RFC 5228: an error; we keep the text unchanged
            out.append(chr(cp))
        return "".join(out)

    return _ENCODED.sub(repl, value)


def apply_encoded_character(commands: list[Command]) -> None:
    """Decode encoded characters in every string of the tree (before validation)."""
    def fix(args: list) -> None:
        for arg in args:
            if isinstance(arg, StringList):
                arg.values = [decode_encoded_characters(v) for v in arg.values]

    def walk_test(t: Test) -> None:
        fix(t.arguments)
        for sub in t.tests:
            walk_test(sub)

    for cmd in commands:
        fix(cmd.arguments)
        for t in cmd.tests:
            walk_test(t)
        if cmd.block:
            apply_encoded_character(cmd.block)
