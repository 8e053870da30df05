"""Loading a ClamAV-style signature database directory into memory.

Theory of operation: `load_database(path)` reads every file it knows in the directory
(sorted, so results are reproducible): hash signatures (`.hdb`, `.hsb`), body signatures
(`.ndb`), logical signatures (`.ldb`), allowlists (`.fp`, `.sfp`), ignore lists (`.ign2`),
and official containers (`.cvd`, `.cld`: a 512-byte header then a tar, usually gzipped),
whose members are read as if they were files in the directory. Names from unsigned files
carry ClamAV's ".UNOFFICIAL" suffix, exactly as clamscan prints them.

A line that cannot be parsed is skipped and recorded as `file:line: reason` in `errors`;
a line of a kind we do not implement (PCRE subsignatures, bytecode...) is counted in
`unsupported`. Neither is fatal: a database always loads.

Hash signatures live in compact sorted tables (`hashes.HashStore`), with a size bitmap so
a scan computes a digest only for sizes some signature has.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import hashlib
import io
import itertools
import operator
import re
import tarfile
import threading
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mailyard.antivirus import forked, hexsig, ndb_bulk
from mailyard.antivirus.hashes import HashStore

UNOFFICIAL = ".UNOFFICIAL"
HASH_EXTENSIONS = {"hdb", "hsb"}
SECTION_EXTENSIONS = {"mdb", "msb"}
ALLOW_EXTENSIONS = {"fp", "sfp"}
KNOWN_EXTENSIONS = (HASH_EXTENSIONS | SECTION_EXTENSIONS | ALLOW_EXTENSIONS
                    | {"ndb", "ldb", "ign2", "ign"})
CONTAINER_EXTENSIONS = {"cvd", "cld", "cud"}
CVD_HEADER = 512
# Below these sizes a database loads in one process: bytes of hash files, lines of one
# .ndb file. A fork, the pipe and the pickle cost 20-80 ms of CPU at such sizes; these are
# guesses for an idle machine, where a child runs on its own core. On a busy one forking
# was slower at every size (bench/RESULTS.md), and `forked.can_fork()` says no there.
PARALLEL_HASH_BYTES = 1 << 21
PARALLEL_NDB_LINES = 20_000


class BodySignature(NamedTuple):
    """An `.ndb` line: `Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]`.

    A NamedTuple rather than a frozen dataclass: databases hold 100,000s of these, and a
    tuple is built several times faster (load time is a target, bench/RESULTS.md)."""

    name: str
    target: int
    offset: str
    tokens: tuple | None
    origin: str
    text: str = ""  # the hex signature as written (the anchored matcher re-parses it lazily)
    # hexsig.summarize(text) when the signature has the common shape; then `tokens` is None
    # until someone needs them (`parsed()`).
    summary: tuple | None = None

    def parsed(self) -> tuple:
        return self.tokens if self.tokens is not None else hexsig.parse(self.text)


@dataclass(frozen=True)
class SubSignature:
    offset: str
    tokens: tuple
    modifiers: str  # subset of "iwfa" (nocase, wide, fullword, ascii)
    # A PCRE subsignature (`[Offset:]Trigger/Regex/[Flags]`): the regex, its flags, and
    # the logical expression over the other subsignatures that must hold for it to count.
    pcre: str | None = None
    trigger: str = ""


@dataclass(frozen=True)
class LogicalSignature:
    """An `.ldb` line: `Name;TargetDescription;LogicalExpression;Sub0;Sub1;...`."""

    name: str
    target: int
    file_size: tuple[int, int] | None
    expression: str
    subsigs: tuple[SubSignature, ...]
    origin: str
    conditions: tuple[str, ...] = ()  # YARA conditions from EntryPoint/NumberOfSections


@dataclass
class SignatureDatabase:
    """Everything loaded from one database directory (or built in)."""

    hashes: HashStore = field(default_factory=HashStore)
    sections: HashStore = field(default_factory=HashStore)  # PE sections (.mdb/.msb)
    allow: HashStore = field(default_factory=HashStore)
    body: list[BodySignature] = field(default_factory=list)
    logical: list[LogicalSignature] = field(default_factory=list)
    ignored: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    unsupported: Counter = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    cached_count: int = 0  # body + logical signatures loaded from the compiled cache

    @property
    def signature_count(self) -> int:
        return (len(self.hashes) + len(self.sections) + len(self.body) + len(self.logical)
                + self.cached_count)


def database_sources(path) -> list[Path]:
    """The files a database path (a directory, a file, or a list of them) stands for."""
    sources: list[Path] = []
    if not path:
        return sources
    for item in ([path] if isinstance(path, (str, Path)) else path):
        root = Path(item)
        if root.is_file():
            sources.append(root)
        elif root.is_dir():
            sources.extend(sorted(p for p in root.iterdir() if p.is_file()))
        else:
            raise FileNotFoundError(f"{root}: no such database file or directory")
    return sources


def load_database(path, body: bool = True, parallel: bool | str | None = None
                  ) -> SignatureDatabase:
    """Load every known file of a database directory, a database file, or a list of them.

    `body=False` skips `.ndb`/`.ldb` lines (their compiled form comes from a cache).
    `parallel`: None loads a large database in forked children when that is safe
    (`forked.can_fork()`); False loads in this process; True forks for a large database;
    "always" forks whatever the size (tests). The database is the same either way."""
    with no_gc():
        return _load_database(path, body, parallel)


@contextlib.contextmanager
def no_gc():
    """No cyclic garbage collection inside the block (then as before). A load creates
    hundreds of thousands of tuples and no cycles; the collector's ~450 passes over them
    cost ~2 % of the load's CPU in one process (bench/RESULTS.md), and in a forked loader
    they would write to every page they walk, unsharing it. Process-wide, for about a
    second."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load_database(path, body: bool, parallel: bool | str | None) -> SignatureDatabase:
    db = SignatureDatabase()
    sources = database_sources(path)
    members: list[tuple[str, str, bytes, bool]] = []  # (origin, extension, data, official)
    for p in sources:
        ext = p.suffix[1:].lower()
        if ext in CONTAINER_EXTENSIONS:
            try:
                members.extend(_container_members(p))
            except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
                db.errors.append(f"{p}: not a readable container: {exc}")
        elif ext in KNOWN_EXTENSIONS:
            members.append((str(p), ext, p.read_bytes(), False))
        elif ext:
            db.unsupported[f".{ext} files"] += 1
    # Ignore lists first: they apply to every other file, whatever the order.
    for _origin, ext, data, _ in members:
        if ext in ("ign2", "ign"):
            for line in _lines(data):
                name = line[1].split(":", 1)[0].strip()
                if name:
                    db.ignored.add(name)
    # Hash files load beside the body/logical parsing: in a forked child when the
    # database is large enough to pay for it (`antivirus.forked`), else in a thread (their
    # numpy passes release the GIL, the line parsing is pure Python). A large `.ndb` file
    # is cut in two halves, the second parsed in another child. Errors are kept per file
    # and joined in file order, and body signatures in file:line order, as if everything
    # loaded one line after the other (`parallel=False`).
    errors: list[list[str]] = [[] for _ in members]
    hash_jobs = []
    text_jobs = []
    for index, (origin, ext, data, official) in enumerate(members):
        db.files.append(origin)
        suffix = "" if official else UNOFFICIAL
        if ext in HASH_EXTENSIONS or ext in ALLOW_EXTENSIONS or ext in SECTION_EXTENSIONS:
            store = (db.allow if ext in ALLOW_EXTENSIONS else
                     db.sections if ext in SECTION_EXTENSIONS else db.hashes)
            hash_jobs.append((store, data, suffix, origin, errors[index],
                              ext in SECTION_EXTENSIONS))
        elif ext in _PARSERS and body:
            text_jobs.append((origin, ext, data, suffix, errors[index]))
    if parallel is None:
        parallel = forked.can_fork()
    loader = _HashLoader(db, hash_jobs)
    hash_child = None
    if parallel and (parallel == "always" or
                     sum(len(job[1]) for job in hash_jobs) >= PARALLEL_HASH_BYTES):
        hash_child = forked.Forked(loader.load_state)
    # .ndb files as text; the second half of a large one (from a line break) goes to a child.
    ndb_texts = {}
    halves = []  # (job index, text, first line number)
    for index, (_origin, ext, data, _suffix, _errs) in enumerate(text_jobs):
        if ext == "ndb":
            text = ndb_texts[index] = data.decode("utf-8", "replace")
            if parallel and (parallel == "always" or text.count("\n") >= PARALLEL_NDB_LINES):
                cut = text.find("\n", len(text) // 2) + 1
                if cut:
                    head = text[:cut]
                    lines = (head.count("\n") if ndb_bulk.plain_breaks(head)
                             else len(head.splitlines()))
                    halves.append((index, text[cut:], lines + 1))
                    ndb_texts[index] = head
    ndb_child = forked.Forked(_load_halves, db.ignored, text_jobs, halves) if halves else None
    if hash_child is None:  # a thread only after the last fork
        if text_jobs:
            loader.start()
        else:
            loader.run()
    segments: list[list] = []  # db.body in file order: ours, then the child's halves
    tails: dict[int, list] = {}
    body_list = db.body
    for index, (origin, ext, data, suffix, errs) in enumerate(text_jobs):
        if ext == "ndb":
            db.body = []
            _load_ndb_text(db, ndb_texts[index], 1, origin, suffix, errs)
            segments.append(db.body)
            segments.append(tails.setdefault(index, []))
            continue
        parse = _PARSERS[ext]
        for number, line in _lines(data):
            _parse_line(parse, db, line, f"{origin}:{number}", suffix, errs)
    if ndb_child is not None:
        results = ndb_child.result()
        for piece, (index, text, first) in enumerate(halves):
            origin, _ext, _data, suffix, errs = text_jobs[index]
            segment = tails[index]
            if results is None:  # the child failed: parse the half here
                db.body = segment
                _load_ndb_text(db, text, first, origin, suffix, errs)
                continue
            rows, half_errors, unsupported = results[piece]
            segment.extend([_new_tuple(BodySignature, row) for row in rows])
            errs.extend(half_errors)
            db.unsupported.update(unsupported)
    db.body = body_list
    for segment in segments:
        body_list.extend(segment)
    if hash_child is not None:
        state = hash_child.result()
        if state is None:  # the child failed: load them here
            loader.run()
        else:
            loader.take_state(state)
    elif text_jobs:
        loader.join()
    if loader.failure is not None:
        raise loader.failure
    for errs in errors:
        db.errors.extend(errs)
    return db


def _load_halves(ignored: set[str], text_jobs: list, halves: list) -> list:
    """In a forked child: parse the `.ndb` halves; per half, its rows (plain tuples), its
    errors and its unsupported counts."""
    results = []
    for index, text, first in halves:
        origin, _ext, _data, suffix, _errs = text_jobs[index]
        half = SignatureDatabase(ignored=ignored)
        errs: list[str] = []
        _load_ndb_text(half, text, first, origin, suffix, errs)
        results.append(([tuple(row) for row in half.body], errs, dict(half.unsupported)))
    return results


class _HashLoader(threading.Thread):
    """Loads the hash files of a database and finishes its hash tables."""

    def __init__(self, db: SignatureDatabase, jobs: list):
        super().__init__(name="antivirus-hashes")
        self.db = db
        self.jobs = jobs
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            for store, data, suffix, origin, errs, size_first in self.jobs:
                store.load(data, suffix, self.db.ignored, origin, errs, size_first=size_first)
            self.db.hashes.finish()
            self.db.sections.finish()
            self.db.allow.finish()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the loading thread
            self.failure = exc

    def load_state(self) -> tuple:
        """In a forked child: load, and return what `take_state` needs in the parent."""
        self.run()
        if self.failure is not None:
            raise self.failure
        db = self.db
        return (db.hashes.tables_state(), db.sections.tables_state(),
                db.allow.tables_state(), [job[4] for job in self.jobs])

    def take_state(self, state: tuple) -> None:
        """In the parent: the tables and errors a forked `load_state` loaded."""
        hashes, sections, allow, errors = state
        db = self.db
        for store, tables in ((db.hashes, hashes), (db.sections, sections),
                              (db.allow, allow)):
            store.take_tables(tables, [(data, suffix, size_first) for
                                       s, data, suffix, _o, _e, size_first in self.jobs
                                       if s is store])
        for job, errs in zip(self.jobs, errors):
            job[4].extend(errs)


_PLAIN_OFFSET = re.compile(r"\d+(,\d+)?|EOF-\d+(,\d+)?")
_OFFSET = re.compile(r"EOF-\d+|EP[+-]\d+|S\d+\+\d+|SL\+\d+|SE\d+")


# BodySignature(...) goes through a Python-level __new__; this builds the same tuple
# directly (one per .ndb line at load).
_new_tuple = tuple.__new__


class _Unsupported(Exception):
    """A valid line of a kind this engine does not implement."""


def _lines(data: bytes):
    text = data.decode("utf-8", "replace")
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _container_members(path: Path):
    raw = path.read_bytes()
    if not raw.startswith(b"ClamAV-VDB:"):
        raise ValueError("missing ClamAV-VDB header")
    body = raw[CVD_HEADER:]
    # Header: ClamAV-VDB:time:version:sigs:flevel:MD5:dsig:builder:stime. The MD5 of the
    # body is checked; the digital signature (ClamAV's key) is not: trust comes from where
    # the file is (freshclam's directory), as for the loose .ndb/.hdb files beside it.
    fields = raw[:CVD_HEADER].decode("ascii", "replace").split(":")
    if len(fields) > 5 and re.fullmatch(r"[0-9a-fA-F]{32}", fields[5]) and \
            hashlib.md5(body).hexdigest() != fields[5].lower():
        raise ValueError("MD5 of the contents does not match the header")
    if body[:2] == b"\x1f\x8b":
        body = gzip.decompress(body)
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:") as tar:
        for member in tar.getmembers():
            ext = member.name.rsplit(".", 1)[-1].lower() if "." in member.name else ""
            if not member.isfile():
                continue
            if ext not in KNOWN_EXTENSIONS:
                continue
            data = tar.extractfile(member).read()
            yield f"{path}:{member.name}", ext, data, True


def _load_ndb_text(db: SignatureDatabase, text: str, first: int, origin: str, suffix: str,
                   errors: list[str]) -> None:
    """One `.ndb` file's text (its first line is line `first`): the lines of the common
    shapes through the bulk pass (`ndb_bulk`), the others through `_load_ndb`, body
    signatures kept in line order. The same database as `_load_ndb` on every line."""
    bulk = ndb_bulk.scan(text, _PLAIN_OFFSET.fullmatch)
    if bulk is None:
        _load_ndb(db, text.splitlines(), first, origin, suffix, errors)
        return
    names = bulk.names
    if suffix:
        names = map(operator.add, names, itertools.repeat(suffix))
    origins = [f"{origin}:{n + first}" for n in bulk.lines]
    sigs = list(map(_new_tuple, itertools.repeat(BodySignature), zip(
        names, itertools.repeat(0), bulk.offsets, itertools.repeat(None), origins,
        bulk.bodies, bulk.summaries)))
    numbers = bulk.lines
    ignored = db.ignored
    if ignored and not ignored.isdisjoint(bulk.names):
        keep = [name not in ignored for name in bulk.names]
        sigs = list(itertools.compress(sigs, keep))
        numbers = list(itertools.compress(numbers, keep))
    if not bulk.rest:
        db.body.extend(sigs)
        return
    # The other lines, each in its place: the bulk lines before it, then its own.
    body, done = db.body, 0
    for index, line in bulk.rest:
        upto = bisect_left(numbers, index, done)
        body.extend(sigs[done:upto])
        done = upto
        _load_ndb(db, [line], index + first, origin, suffix, errors)
    body.extend(sigs[done:])


def _load_ndb(db: SignatureDatabase, lines: list[str], first: int, origin: str, suffix: str,
              errors: list[str]) -> None:
    """Lines of one `.ndb` file (`lines[0]` is line `first`): `_parse_ndb`, with the common
    line — target 0, a plain offset, a body `hexsig.summarize` takes, four fields — done
    inline (a load of 100,000 signatures is mostly this loop; bench/RESULTS.md)."""
    body, ignored = db.body, db.ignored
    summarize, plain, new = hexsig.summarize, _PLAIN_OFFSET.fullmatch, _new_tuple
    for number, line in enumerate(lines, first):
        line = line.strip()
        if not line or line[0] == "#":
            continue
        fields = line.split(":")
        if len(fields) == 4 and fields[1] == "0" and fields[0]:
            name, _target, offset, text = fields
            if offset == "*" or plain(offset):
                summary = summarize(text)
                if summary is not None:
                    if name not in ignored:
                        body.append(new(BodySignature, (name + suffix, 0, offset, None,
                                                         f"{origin}:{number}", text, summary)))
                    continue
        _parse_line(_parse_ndb, db, line, f"{origin}:{number}", suffix, errors)


def _parse_line(parse, db: SignatureDatabase, line: str, where: str, suffix: str,
                errors: list[str]) -> None:
    """One database line through `parse`: a line we do not support is counted by reason,
    a line we cannot parse is reported with its file:line; neither stops the load."""
    try:
        parse(db, line, where, suffix)
    except _Unsupported as exc:
        db.unsupported[str(exc)] += 1
    except (ValueError, hexsig.SignatureError) as exc:
        errors.append(f"{where}: {exc}")


def _parse_ndb(db: SignatureDatabase, line: str, where: str, suffix: str) -> None:
    fields = line.split(":")
    if len(fields) < 4:
        raise ValueError("expected Name:TargetType:Offset:HexSignature")
    name, target_text, offset, body = fields[:4]
    # An offset may itself contain ':'-free commas only; extra fields are engine levels.
    if not name:
        raise ValueError("empty signature name")
    target = 0 if target_text == "0" else _parse_target(target_text)
    summary = None
    if offset == "*" or _PLAIN_OFFSET.fullmatch(offset):
        # The common case: the anchored matcher takes it without a token list.
        summary = hexsig.summarize(body)
    else:
        check_offset(offset)
    tokens = hexsig.parse(body) if summary is None else None
    if name in db.ignored:
        return
    db.body.append(_new_tuple(BodySignature,
                              (name + suffix, target, offset, tokens, where, body, summary)))


def _parse_target(text: str) -> int:
    if text == "*":
        return 0
    if not text.isdigit() or int(text) > 14:
        raise ValueError(f"bad target type {text!r}")
    return int(text)


def check_offset(offset: str) -> None:
    """Accept ClamAV offsets: *, n, n,shift, EOF-n, EP+n, EP-n, Sx+n, SL+n, SEx (+,shift)."""

    if offset == "*":
        return
    base, _, shift = offset.partition(",")
    if shift and not shift.isdigit():
        raise ValueError(f"bad offset shift in {offset!r}")
    if base.isdigit() or _OFFSET.fullmatch(base):
        return
    if base.startswith(("VI", "$", "MACRO")):
        raise _Unsupported(f"offset type {base[:3]}")
    raise ValueError(f"bad offset {offset!r}")


def _parse_ldb(db: SignatureDatabase, line: str, where: str, suffix: str) -> None:
    fields = line.split(";")
    if len(fields) < 4:
        raise ValueError("expected Name;TargetDescription;LogicalExpression;Subsig0[;...]")
    name, tdb_text, expression = fields[:3]
    if not name:
        raise ValueError("empty signature name")
    target, file_size, conditions = _parse_tdb(tdb_text)
    subsigs = []
    for text in fields[3:]:
        subsigs.append(_parse_subsig(text))
    from mailyard.antivirus.logical import check_expression

    check_expression(expression, len(subsigs))
    for sub in subsigs:
        if sub.pcre is not None:
            check_expression(sub.trigger, len(subsigs))
    if name in db.ignored:
        return
    db.logical.append(LogicalSignature(name + suffix, target, file_size, expression,
                                       tuple(subsigs), where, conditions))


def _parse_range(key: str, value: str) -> tuple[int, int]:
    # ClamAV insists on both ends: "2-2", not "2".
    low, _, high = value.partition("-")
    if not low.isdigit() or not high.isdigit() or int(high) < int(low):
        raise ValueError(f"bad {key} {value!r} (expected LOW-HIGH)")
    return int(low), int(high)


def _parse_tdb(text: str) -> tuple[int, tuple[int, int] | None, tuple[str, ...]]:
    target = 0
    file_size = None
    conditions: list[str] = []
    for item in text.split(","):
        key, _, value = item.partition(":")
        if key == "Target":
            target = _parse_target(value)
        elif key == "Engine":
            continue
        elif key == "FileSize":
            file_size = _parse_range(key, value)
        elif key == "EntryPoint":
            low, high = _parse_range(key, value)
            conditions.append(f"pe.entry_point >= {low} and pe.entry_point <= {high}")
        elif key == "NumberOfSections":
            low, high = _parse_range(key, value)
            conditions.append(f"pe.number_of_sections >= {low} and "
                              f"pe.number_of_sections <= {high}")
        elif key == "Container":
            from mailyard.antivirus.filetype import CLAMAV_CONTAINERS, CONTAINER_CODES

            kind = CLAMAV_CONTAINERS.get(value)
            if kind is None:
                raise _Unsupported(f"ldb Container:{value}")
            conditions.append(f"container == {CONTAINER_CODES[kind]}")
        elif key in ("Intermediates", "IconGroup1", "IconGroup2", "HandlerType",
                     "NumberOfSectionsCheck"):
            raise _Unsupported(f"ldb target description {key}")
        else:
            raise ValueError(f"unknown target description key {key!r}")
    return target, file_size, tuple(conditions)


# PCRE flags we can express: i and s become YARA regex flags, A anchors at the offset;
# g (global) and r/e (rolling, encompass) do not change whether the subsignature matches.
_PCRE_FLAGS = set("isAgre")


def _parse_pcre(text: str) -> SubSignature:
    head, _, rest = text.partition("/")
    regex, slash, flags = rest.rpartition("/")
    if not slash or not regex:
        raise ValueError("a PCRE subsignature is Trigger/Regex/Flags")
    offset, _, trigger = head.rpartition(":")
    offset = offset or "*"
    check_offset(offset)
    if not trigger:
        raise ValueError("a PCRE subsignature needs a trigger expression")
    if set(flags) - _PCRE_FLAGS:
        raise _Unsupported(f"ldb PCRE flag {''.join(sorted(set(flags) - _PCRE_FLAGS))}")
    if "A" in flags and offset == "*":
        offset = "0"
    elif "A" not in flags and offset != "*":
        # Without A, ClamAV starts the regex search at the offset: any match from there on.
        offset = f"{offset}+"
    return SubSignature(offset, (), flags, pcre=regex, trigger=trigger)


def _parse_subsig(text: str) -> SubSignature:
    if "/" in text:
        return _parse_pcre(text)
    body, _, modifiers = text.partition("::")
    if body.startswith("(") and ("#" in body or "=" in body):
        raise _Unsupported("ldb byte-compare subsignature")
    if body.startswith("${"):
        raise _Unsupported("ldb macro subsignature")
    offset = "*"
    if ":" in body:
        offset, _, body = body.rpartition(":")
        check_offset(offset)
    if set(modifiers) - set("iwfa"):
        raise ValueError(f"bad subsignature modifiers {modifiers!r}")
    return SubSignature(offset, hexsig.parse(body), modifiers)


_PARSERS = {"ndb": _parse_ndb, "ldb": _parse_ldb}
