"""Database loading: every file kind, containers, allowlists, ignore lists, bad lines."""

from __future__ import annotations

import hashlib

from av_samples import EICAR, make_cvd, write_db
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.antivirus import EICAR_NAME, ScanOptions, VirusEngine, hexsig
from mailyard.antivirus.database import BodySignature, SignatureDatabase, load_database
from mailyard.antivirus.matcher import Matcher

MARK = b"xx database-test-mark yy\n"
MARK_NDB = "DB.Mark:0:*:64617461626173652d746573742d6d61726b\n"


def test_bad_lines_are_reported_with_file_and_line_and_never_fatal(tmp_path):
    db = write_db(tmp_path / "db", {
        "a.ndb": "# a comment\n" + MARK_NDB + "Broken:0:*:4142zz\nShort:0\n",
        "b.hdb": "nothex:12:Bad.Hash\n" + "0" * 31 + ":5:Odd.Length\n",
        "c.ldb": ("L.Bad;Target:0;0&5;41424344\nL.Pcre;Target:0;0&1;41424344;0/abc/x\n"
                  "L.Range;Target:1,NumberOfSections:2;0;41424344\n"),
    })
    engine = VirusEngine(db)
    errors = "\n".join(engine.errors)
    assert f"{db}/a.ndb:3: bad hex byte" in errors
    assert f"{db}/a.ndb:4: expected" in errors
    assert f"{db}/b.hdb:1:" in errors and f"{db}/b.hdb:2:" in errors
    assert f"{db}/c.ldb:1: subsignature 5 does not exist" in errors
    assert engine.database.unsupported["ldb PCRE flag x"] == 1
    assert f"{db}/c.ldb:3: bad NumberOfSections '2' (expected LOW-HIGH)" in errors
    # The good line still works.
    assert engine.scan_bytes(MARK).names == ("DB.Mark.UNOFFICIAL",)


def test_cvd_container_loads_with_official_names(tmp_path):
    make_cvd(tmp_path / "test.cvd", {"test.ndb": MARK_NDB, "test.info": "x\n"})
    engine = VirusEngine(tmp_path)
    assert engine.errors == []
    assert engine.scan_bytes(MARK).names == ("DB.Mark",)


def test_cvd_with_wrong_md5_is_refused(tmp_path):
    make_cvd(tmp_path / "tampered.cvd", {"test.ndb": MARK_NDB}, md5="0" * 32)
    engine = VirusEngine(tmp_path)
    assert any("tampered.cvd" in e and "MD5" in e for e in engine.errors)
    assert not engine.scan_bytes(MARK).infected


def test_broken_cvd_is_an_error_not_a_crash(tmp_path):
    (tmp_path / "bad.cvd").write_bytes(b"ClamAV-VDB:garbage".ljust(600, b"\0"))
    (tmp_path / "good.ndb").write_text(MARK_NDB)
    engine = VirusEngine(tmp_path)
    assert any("bad.cvd" in e for e in engine.errors)
    assert engine.scan_bytes(MARK).infected


def test_fp_allowlist_clears_a_file(tmp_path):
    md5 = hashlib.md5(MARK).hexdigest()
    write_db(tmp_path, {"a.ndb": MARK_NDB, "local.fp": f"{md5}:{len(MARK)}:DB.Mark\n"})
    engine = VirusEngine(tmp_path)
    assert not engine.scan_bytes(MARK).infected
    assert engine.scan_bytes(MARK + b"other").infected


def test_sfp_allowlist_by_sha256(tmp_path):
    sha = hashlib.sha256(MARK).hexdigest()
    write_db(tmp_path, {"a.ndb": MARK_NDB, "local.sfp": f"{sha}:*:DB.Mark\n"})
    assert not VirusEngine(tmp_path).scan_bytes(MARK).infected


def test_ign2_drops_named_signatures(tmp_path):
    write_db(tmp_path, {"a.ndb": MARK_NDB + "DB.Other:0:*:7a7a7a7a\n", "local.ign2": "DB.Mark\n"})
    engine = VirusEngine(tmp_path)
    assert not engine.scan_bytes(MARK).infected


def test_builtin_eicar_yields_to_a_database_that_has_it(tmp_path):
    assert VirusEngine().scan_bytes(EICAR).names == (EICAR_NAME,)
    md5 = hashlib.md5(EICAR).hexdigest()
    write_db(tmp_path, {"eicar.hdb": f"{md5}:{len(EICAR)}:Win.Test.EICAR_HDB-1\n"})
    engine = VirusEngine(tmp_path)
    verdict = engine.scan_bytes(EICAR, options=ScanOptions(allmatch=True))
    assert verdict.names == ("Win.Test.EICAR_HDB-1.UNOFFICIAL",)


def test_several_database_dirs(tmp_path):
    write_db(tmp_path / "one", {"a.ndb": MARK_NDB})
    write_db(tmp_path / "two", {"b.ndb": "DB.Two:0:*:7365636f6e642d6d61726b\n"})
    engine = VirusEngine([tmp_path / "one", tmp_path / "two"])
    assert engine.scan_bytes(b"a second-mark").names == ("DB.Two.UNOFFICIAL",)
    assert engine.scan_bytes(MARK).names == ("DB.Mark.UNOFFICIAL",)


def test_missing_database_dir_raises_file_not_found(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError):
        load_database(tmp_path / "nope")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="0123456789abcdef?*{}-()|!", min_size=2, max_size=30),
                min_size=1, max_size=5))
def test_any_parsed_signature_compiles_or_is_reported(bodies):
    db = SignatureDatabase()
    for i, body in enumerate(bodies):
        try:
            tokens = hexsig.parse(body)
        except hexsig.SignatureError:
            continue
        db.body.append(BodySignature(f"F{i}", 0, "*", tokens, f"fuzz:{i}"))
    matcher = Matcher(db)  # never raises; problems land in matcher.errors
    matcher.scan(b"0123456789abcdef" * 8, 0)


def test_one_uncompilable_signature_does_not_spoil_its_group(tmp_path):
    """Body signatures share YARA rules in groups; a string YARA refuses is dropped and
    reported alone (regression: the whole group used to vanish)."""
    write_db(tmp_path, {"a.ndb": "Too.Far:0:*:41{99999999999}4243\n" + MARK_NDB})
    engine = VirusEngine(tmp_path)
    assert any(e.startswith(f"{tmp_path}/a.ndb:1: not compilable") for e in engine.errors)
    assert engine.scan_bytes(MARK).names == ("DB.Mark.UNOFFICIAL",)


def test_hash_lines_uppercase_crlf_flevel_and_duplicates(tmp_path):
    md5 = hashlib.md5(MARK).hexdigest().upper()
    sha1 = hashlib.sha1(MARK).hexdigest()
    (tmp_path / "a.hdb").write_bytes(
        f"{md5}:{len(MARK)}:First.Name:73:255\r\n{md5}:{len(MARK)}:Second.Name\r\n".encode())
    (tmp_path / "b.hsb").write_text(f"{sha1}:{len(MARK) + 1}:Wrong.Size\n")
    engine = VirusEngine(tmp_path)
    assert engine.errors == []
    verdict = engine.scan_bytes(MARK, options=ScanOptions(allmatch=True))
    assert verdict.names == ("First.Name.UNOFFICIAL",)


def test_ign2_applies_to_hash_signatures(tmp_path):
    md5 = hashlib.md5(MARK).hexdigest()
    write_db(tmp_path, {"a.hdb": f"{md5}:*:Any.Size:73\n", "x.ign2": "Any.Size\n"})
    assert not VirusEngine(tmp_path).scan_bytes(MARK).infected


def test_compiled_cache_is_reused_and_invalidated(tmp_path):
    db = write_db(tmp_path / "db", {"a.ndb": MARK_NDB + "Broken:0:*:zz\n",
                                    "b.ldb": "L.Pcre;Target:0;0&1;41424344;0/abc/x\n"})
    cache = tmp_path / "cache"
    first = VirusEngine(db, cache_dir=cache)
    first.wait_cache()  # written in the background once the engine is ready
    assert not first.from_cache and list(cache.glob("*.yarx"))
    second = VirusEngine(db, cache_dir=cache)
    assert second.from_cache
    assert second.scan_bytes(MARK).names == ("DB.Mark.UNOFFICIAL",)
    assert second.errors == first.errors and second.signature_count == first.signature_count
    assert second.database.unsupported == first.database.unsupported
    # A changed file is a different database: compiled afresh.
    import os
    import time

    (db / "a.ndb").write_text("DB.New:0:*:6e65772d6d61726b\n")
    os.utime(db / "a.ndb", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    third = VirusEngine(db, cache_dir=cache)
    assert not third.from_cache
    assert third.scan_bytes(b"a new-mark").names == ("DB.New.UNOFFICIAL",)
    third.wait_cache()
    assert len(list(cache.glob("*.yarx"))) == 1


def test_damaged_cache_is_rebuilt(tmp_path):
    db = write_db(tmp_path / "db", {"a.ndb": MARK_NDB})
    cache = tmp_path / "cache"
    VirusEngine(db, cache_dir=cache).wait_cache()
    for f in cache.iterdir():
        f.write_bytes(b"garbage")
    engine = VirusEngine(db, cache_dir=cache)
    assert not engine.from_cache and engine.scan_bytes(MARK).infected


def test_concurrent_cold_loads_compile_once(tmp_path):
    """Pool workers starting together: one compiles under the cache lock, the rest read
    its cache (from_cache=True)."""
    import concurrent.futures
    import multiprocessing

    db = write_db(tmp_path / "db", {"a.ndb": MARK_NDB})
    cache = tmp_path / "cache"
    with concurrent.futures.ProcessPoolExecutor(
            3, mp_context=multiprocessing.get_context("forkserver")) as pool:
        results = list(pool.map(_load_from_cache, [(db, cache)] * 3))
    assert sorted(results) == [False, True, True]


def _load_from_cache(args) -> bool:
    db, cache = args
    engine = VirusEngine(db, cache_dir=cache)
    assert engine.scan_bytes(MARK).infected
    return engine.from_cache


def _ndb_lines_one_by_one(data: bytes, origin: str, ignored: set[str]) -> SignatureDatabase:
    """The reference for `_load_ndb`'s inline fast path: every line through `_parse_ndb`."""
    from mailyard.antivirus import database

    db = SignatureDatabase(ignored=set(ignored))
    for number, line in database._lines(data):
        where = f"{origin}:{number}"
        try:
            database._parse_ndb(db, line, where, ".UNOFFICIAL")
        except database._Unsupported as exc:
            db.unsupported[str(exc)] += 1
        except (ValueError, hexsig.SignatureError) as exc:
            db.errors.append(f"{where}: {exc}")
    return db


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(
    st.sampled_from(["Sig.A", "Ignored.Sig", "", "Odd Name", "#Comment"]),
    st.sampled_from(["0", "1", "*", "15", "x", " 0"]),
    st.sampled_from(["*", "0", "12,4", "EOF-8", "EP+0", "VI", "x", "0,x"]),
    st.sampled_from(["6162636465", "61626364??65666768", "61626364*6566", "6162{2-8}63646566",
                     "6162636465{9-2}66", "(61|62)63646566", "616263", "6162636", "", "61 62",
                     "6162636465:1:255", "61626364\r", "  6162636465"]),
    st.sampled_from(["", "\n", "\r", "  "])), max_size=25))
def test_ndb_fast_path_loads_as_line_by_line(tmp_path_factory, rows):
    data = "".join(f"{name}:{target}:{offset}:{body}\n{extra}"
                   for name, target, offset, body, extra in rows).encode()
    root = tmp_path_factory.mktemp("ndb")
    (root / "ignore.ign2").write_text("Ignored.Sig\n")
    (root / "x.ndb").write_bytes(data)
    reference = _ndb_lines_one_by_one(data, str(root / "x.ndb"), {"Ignored.Sig"})
    for parallel in (False, "always"):  # in this process; the second half in a child
        loaded = load_database(root, parallel=parallel)
        assert loaded.body == reference.body
        assert loaded.errors == reference.errors
        assert loaded.unsupported == reference.unsupported


def _tables(store) -> dict:
    return {name: (bytes(t.keys), bytes(t.refs), bytes(t.any_keys), bytes(t.any_refs),
                   bytes(t.sizes)) for name, t in store.tables.items()}


def test_parallel_load_is_the_serial_load(tmp_path):
    """A large database loads in forked children (hash files in one, the second half of
    each large .ndb file in another): the same database, errors in file:line order, the
    same verdicts — with a bad line in each half of each file."""
    hashes = [(hashlib.md5(b"file %d" % i).hexdigest(), 100 + i) for i in range(4000)]
    hdb = "".join(f"{h}:{size}:Hash.{i}\n" for i, (h, size) in enumerate(hashes))
    hdb_lines = hdb.splitlines(keepends=True)
    hdb = ("".join(hdb_lines[:10]) + "nothex:12:Bad.First\n" + "".join(hdb_lines[10:3000])
           + "0" * 31 + ":5:Bad.Second\n" + "".join(hdb_lines[3000:])
           + f"{hashes[0][0]}:*:Any.Size\n")
    ndb = [f"Sig.{i}:0:*:{(b'mark-%05d-' % i).hex()}\n" for i in range(400)]
    ndb[7] = "Broken.First:0:*:4142zz\n"
    ndb[250] = "Short.Second:0\n"
    ndb[300] = "Odd.Second:1:EP+0:41424344{2-4}4546\n"
    ndb[320] = "Unsupported.Second:0:VI:41424344\n"
    ndb[330] = "Dropped.Second:0:*:41424344\n"
    db = write_db(tmp_path / "db", {
        "a.ndb": "".join(ndb),
        "b.hdb": hdb,
        "c.ldb": "L.Bad;Target:0;0&5;41424344\nL.Good;Target:0;0;6c6f676963616c\n",
        "d.ndb": "Small.One:0:*:736d616c6c\nSmall.Bad:0:*:zz\n",
        "e.fp": f"{hashes[5][0]}:{hashes[5][1]}:Allowed\n",
        "f.ign2": "Dropped.Second\n",
    })
    serial = load_database(db, parallel=False)
    parallel = load_database(db, parallel="always")
    assert parallel.body == serial.body and parallel.logical == serial.logical
    assert parallel.errors == serial.errors
    assert parallel.unsupported == serial.unsupported
    assert parallel.files == serial.files
    for store in ("hashes", "sections", "allow"):
        assert _tables(getattr(parallel, store)) == _tables(getattr(serial, store))
    errors = "\n".join(parallel.errors)
    for where in ("a.ndb:8:", "a.ndb:251:", "b.hdb:11:", "b.hdb:3002:", "c.ldb:1:", "d.ndb:2:"):
        assert f"{db}/{where}" in errors
    assert [e.split(": ")[0].rsplit(":", 1)[-1] for e in parallel.errors
            if "/a.ndb:" in e] == ["8", "251"]
    assert parallel.unsupported["offset type VI"] == 1
    names = [sig.name for sig in parallel.body]
    assert names[0] == "Sig.0.UNOFFICIAL" and names[-1] == "Small.One.UNOFFICIAL"
    assert "Dropped.Second.UNOFFICIAL" not in names and len(names) == 400 - 4 + 1
    # The same verdicts: body signatures from either half, hashes, any-size hashes.
    matchers = Matcher(serial), Matcher(parallel)
    for sample in (b"x mark-00003- y", b"mark-00399-", b"logical", b"small", b"clean"):
        assert matchers[0].scan(sample, 0) == matchers[1].scan(sample, 0)
    assert matchers[1].scan(b"mark-00399-", 0)
    for i in (0, 11, 2999, 3999):
        h, size = hashes[i]
        assert parallel.hashes.lookup("md5", h, size) == serial.hashes.lookup("md5", h, size)
        assert parallel.hashes.lookup("md5", h, size) == f"Hash.{i}.UNOFFICIAL"
    assert parallel.hashes.lookup("md5", hashes[0][0], 1) == "Any.Size.UNOFFICIAL"
    assert parallel.allow.lookup("md5", *hashes[5]) == "Allowed.UNOFFICIAL"


def test_a_failed_fork_or_child_loads_in_this_process(tmp_path, monkeypatch):
    """No process to fork, or a child that dies: the parent loads that part itself."""
    import os

    ndb = "".join(f"Sig.{i}:0:*:{(b'mark-%05d-' % i).hex()}\n" for i in range(50)) + "Bad:0\n"
    hdb = "".join(f"{hashlib.md5(b'%d' % i).hexdigest()}:{i + 1}:H.{i}\n" for i in range(3000))
    db = write_db(tmp_path / "db", {"a.ndb": ndb, "b.hdb": hdb + "odd\n"})
    serial = load_database(db, parallel=False)

    def no_fork():
        raise OSError("EAGAIN")

    def dying(*_args):
        os._exit(3)

    for patch in (("os.fork", no_fork), ("mailyard.antivirus.database._load_halves", dying)):
        with monkeypatch.context() as m:
            m.setattr(*patch)
            loaded = load_database(db, parallel="always")
        assert loaded.body == serial.body and loaded.errors == serial.errors
        assert _tables(loaded.hashes) == _tables(serial.hashes)
