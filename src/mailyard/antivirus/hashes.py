"""Hash signatures (`.hdb`, `.hsb`, and the `.fp`/`.sfp` allowlists) in compact tables.

Theory of operation: millions of hash lines must load in seconds and not cost hundreds of
megabytes per worker process. So the database file's bytes are kept as they are (the
"blob"), and each table holds two sorted `array('Q')`s: a 64-bit key (the digest's first
8 bytes mixed with the file size) and a reference to the line in its blob. A lookup
bisects the keys, then re-reads the referenced line to compare the full digest and size
exactly and to take the name. About 16 bytes per signature plus the file itself.
A bitmap of sizes (mod 2**24) lets the engine skip hashing objects of sizes no
signature has.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left

import numpy as np

_ALGORITHM = {32: "md5", 40: "sha1", 64: "sha256"}
_MASK = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15
_SIZE_BITS = 1 << 24
ANY_SIZE = -1
_BULK_MIN = 1 << 16  # smaller files load line by line
_NOT_NAME_START = np.frombuffer(b" \t\r\n:", np.uint8)
_HEX_VALUE = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
    _HEX_VALUE[bytes([_c]).upper()[0]] = _i


def _key(digest_prefix: int, size: int) -> int:
    return (digest_prefix ^ (size * _MIX)) & _MASK


class _Table:
    """One algorithm's sorted keys and line references."""

    def __init__(self) -> None:
        self.pending: list[int] = []  # key << 64 | ref, while loading
        self.chunks: list[tuple] = []  # (keys, refs) numpy arrays from the bulk loader
        self.keys = array("Q")
        self.refs = array("Q")
        self.any_pending: list[int] = []
        self.any_keys = array("Q")
        self.any_refs = array("Q")
        self.sizes = bytearray(_SIZE_BITS // 8)

    def finish(self) -> None:
        if self.chunks:
            keys = [np.frombuffer(self.keys, np.uint64)] + [k for k, _ in self.chunks]
            refs = [np.frombuffer(self.refs, np.uint64)] + [r for _, r in self.chunks]
            if self.pending:
                keys.append(np.array([c >> 64 for c in self.pending], np.uint64))
                refs.append(np.array([c & _MASK for c in self.pending], np.uint64))
                self.pending.clear()
            all_keys, all_refs = np.concatenate(keys), np.concatenate(refs)
            # By key, then by line (the first line wins a lookup): a quick sort by key; only
            # when some keys repeat (duplicate lines), the slower sort by (key, line).
            order = np.argsort(all_keys)
            sorted_keys = all_keys[order]
            if (sorted_keys[1:] == sorted_keys[:-1]).any():
                order = np.lexsort((all_refs, all_keys))
            self.keys, self.refs = array("Q"), array("Q")
            self.keys.frombytes(all_keys[order].tobytes())
            self.refs.frombytes(all_refs[order].tobytes())
            self.chunks.clear()
        for pending, keys, refs in ((self.pending, self.keys, self.refs),
                                    (self.any_pending, self.any_keys, self.any_refs)):
            if not pending:
                continue
            pending.extend((k << 64) | r for k, r in zip(keys, refs))
            pending.sort()
            del keys[:], refs[:]
            keys.extend(c >> 64 for c in pending)
            refs.extend(c & _MASK for c in pending)
            pending.clear()

    def __len__(self) -> int:
        return (len(self.keys) + len(self.any_keys) + len(self.pending) + len(self.any_pending)
                + sum(len(k) for k, _ in self.chunks))


def _name_print(name: bytes) -> int:
    """The bulk loader's fingerprint of a signature name: its length and last 8 bytes."""
    return (int.from_bytes(name[-8:], "little") ^ (len(name) * _MIX)) & _MASK


def _numbered(data: bytes):
    pos = 0
    for number, line in enumerate(data.split(b"\n"), 1):
        yield number, pos, line
        pos += len(line) + 1


class HashStore:
    """MD5, SHA1 and SHA256 signatures of whole files: `lookup(algorithm, hexdigest, size)`."""

    def __init__(self) -> None:
        self.tables = {name: _Table() for name in ("md5", "sha1", "sha256")}
        self._blobs: list[tuple[bytes, str]] = []

    def load(self, data: bytes, suffix: str, ignored: set[str], origin: str,
             errors: list[str], size_first: bool = False, bulk: bool = True) -> None:
        """Add every line of one hash database file; bad lines go to `errors` (file:line).

        `size_first`: PE section hashes (`.mdb`/`.msb`) put the size before the hash.
        `bulk=False`: line by line only (the bulk loader's reference, in tests)."""
        blob_index = len(self._blobs)
        self._blobs.append((data, suffix, size_first))
        ignored_b = {name.encode() for name in ignored}
        base = blob_index << 40
        if size_first or len(data) < _BULK_MIN or not bulk:
            lines = _numbered(data)
        else:
            lines = self._load_bulk(data, base, ignored_b)
        self._load_lines(lines, base, ignored_b, origin, errors, size_first)

    def _load_lines(self, lines, base: int, ignored_b: set, origin: str,
                    errors: list[str], size_first: bool) -> None:
        """The line-by-line loader, for (number, start, line) of the lines the bulk loader
        did not take."""
        tables = self.tables
        algorithm_of = _ALGORITHM
        for number, start, line in lines:
            fields = line.split(b":", 3)
            try:
                digest, size, name = fields[0], fields[1], fields[2].rstrip()
                if size_first:
                    digest, size = size, digest
                table = tables[algorithm_of[len(digest)]]
                prefix = int(digest[:16], 16)
                int(digest, 16)
                if not name:
                    raise ValueError
                if ignored_b and name in ignored_b:
                    continue
                if size == b"*":
                    table.any_pending.append(prefix << 64 | base | start)
                else:
                    n = int(size)
                    table.sizes[(n % _SIZE_BITS) >> 3] |= 1 << (n & 7)
                    table.pending.append(((prefix ^ (n * _MIX)) & _MASK) << 64 | base | start)
            except (IndexError, KeyError, ValueError):
                stripped = line.strip()
                if stripped and not stripped.startswith(b"#"):
                    errors.append(f"{origin}:{number}: expected HASH:SIZE:NAME with an MD5, "
                                  f"SHA1 or SHA256 hash")

    def _load_bulk(self, data: bytes, base: int, ignored_b: set):
        """Take every well-formed `HEX:SIZE:NAME...` line in a few vector passes (numpy);
        yield (number, start, line) of the others — comments, `*` sizes, odd lines, names
        on the ignore list — for the line-by-line loader."""
        raw = np.frombuffer(data, np.uint8)
        newlines = np.flatnonzero(raw == 10)
        starts = np.concatenate(([0], newlines + 1))
        ends = np.concatenate((newlines, [len(data)]))
        # Fixed-width fields are read 8 bytes at a time through an overlapping uint64 view
        # of the file, into (rows, 8*k) byte matrices.
        padded = data + bytes(72)  # every 8-byte read below stays inside
        words = np.ndarray((len(data) + 65,), "<u8", buffer=padded, strides=(1,))
        last_word = len(words) - 1

        def columns(offsets, width: int):
            picks = [words[np.minimum(offsets + 8 * k, last_word)] for k in range(width // 8)]
            return np.stack(picks, axis=1).view(np.uint8)

        # The digest ends at the first ':' — at 32, 40 or 64 (a colon earlier fails the
        # hex check below); the size is the digits up to the next ':' (at most 15).
        padded_raw = np.frombuffer(padded, np.uint8)
        digest_len = np.zeros(len(starts), np.int64)
        for length in (64, 40, 32):
            digest_len[padded_raw[starts + length] == 58] = length
        c1 = starts + digest_len
        after = columns(c1 + 1, 16) == 58
        size_len = np.where(after.any(axis=1), after.argmax(axis=1), 99)
        c2 = c1 + 1 + size_len
        fast = (digest_len > 0) & (size_len >= 1) & (size_len <= 15) & (c2 + 1 < ends)
        name_first = padded_raw[np.minimum(c2 + 1, len(padded) - 1)]
        fast &= ~np.isin(name_first, _NOT_NAME_START)
        if ignored_b:
            # Lines naming an ignored signature go to the careful loader: each line's name
            # gets a fingerprint (its length and last 8 bytes), compared with theirs.
            name_end = ends.copy()
            rows = np.flatnonzero(fast)
            third = np.searchsorted(colons := np.flatnonzero(raw == 58), c2[rows] + 1)
            third = np.concatenate((colons, [len(data)]))[third]
            name_end[rows] = np.minimum(third, ends[rows])
            name_end -= raw[np.maximum(name_end - 1, 0)] == 13  # CR
            name_len = name_end - c2 - 1
            fast &= (name_len >= 1) & ~np.isin(raw[np.maximum(name_end - 1, 0)],
                                                _NOT_NAME_START)
            short = np.clip(name_len, 0, 7).astype(np.uint64)
            head = words[np.minimum(c2 + 1, last_word)] & (
                (np.uint64(1) << (np.uint64(8) * short)) - np.uint64(1))
            tail = words[np.clip(name_end - 8, 0, last_word)]
            prints = np.where(name_len < 8, head, tail) ^ (
                name_len.astype(np.uint64) * np.uint64(_MIX))
            theirs = np.array([_name_print(name) for name in ignored_b], np.uint64)
            fast &= ~np.isin(prints, theirs)
        # sizes (up to 15 digits), one digit column at a time
        digits = columns(c1 + 1, 16)
        c1 = np.minimum(c1, len(data) - 1)
        sizes = np.zeros(len(starts), np.int64)
        for k in range(int(size_len[fast].max(initial=0))):
            active = size_len > k
            digit = digits[:, k].astype(np.int64) - 48
            fast &= ~active | ((digit >= 0) & (digit <= 9))
            sizes = np.where(active, sizes * 10 + digit, sizes)
        taken = np.zeros(len(starts), np.bool_)
        for length, algorithm in _ALGORITHM.items():
            rows = np.flatnonzero(fast & (digest_len == length))
            if not len(rows):
                continue
            nibbles = _HEX_VALUE[columns(starts[rows], length)]
            good = ~(nibbles.view(np.uint64) & np.uint64(0xF0F0F0F0F0F0F0F0)).any(axis=1)
            rows, nibbles = rows[good], nibbles[good]
            packed = (nibbles[:, 0:16:2] << 4) | nibbles[:, 1:16:2]  # the first 8 bytes
            prefix = np.ascontiguousarray(packed).view(">u8")[:, 0].astype(np.uint64)
            row_sizes = sizes[rows]
            table = self.tables[algorithm]
            table.chunks.append((prefix ^ (row_sizes.astype(np.uint64) * np.uint64(_MIX)),
                                 starts[rows].astype(np.uint64) | np.uint64(base)))
            seen = np.zeros(_SIZE_BITS, np.bool_)
            seen[row_sizes % _SIZE_BITS] = True
            bits = np.frombuffer(table.sizes, np.uint8)
            bits |= np.packbits(seen, bitorder="little")
            taken[rows] = True
        for row in np.flatnonzero(~taken).tolist():
            start, end = int(starts[row]), int(ends[row])
            yield row + 1, start, data[start:end]

    def finish(self) -> None:
        for table in self.tables.values():
            table.finish()

    def algorithms(self) -> list[str]:
        return [name for name, table in self.tables.items() if len(table)]

    def wanted(self, algorithm: str, size: int) -> bool:
        table = self.tables[algorithm]
        if len(table.any_keys):
            return True
        return bool(table.sizes[(size % _SIZE_BITS) >> 3] & (1 << (size & 7)))

    def lookup(self, algorithm: str, hexdigest: str, size: int) -> str | None:
        table = self.tables[algorithm]
        prefix = int(hexdigest[:16], 16)
        for keys, refs, key, want_size in ((table.keys, table.refs, _key(prefix, size), size),
                                           (table.any_keys, table.any_refs, prefix, ANY_SIZE)):
            i = bisect_left(keys, key)
            while i < len(keys) and keys[i] == key:
                name = self._check(refs[i], hexdigest, want_size)
                if name is not None:
                    return name
                i += 1
        return None

    def _check(self, ref: int, hexdigest: str, size: int) -> str | None:
        data, suffix, size_first = self._blobs[ref >> 40]
        start = ref & ((1 << 40) - 1)
        end = data.find(b"\n", start)
        fields = data[start:end if end >= 0 else len(data)].rstrip(b"\r").split(b":")
        if size_first:
            fields[0], fields[1] = fields[1], fields[0]
        if fields[0].decode().lower() != hexdigest:
            return None
        if size != ANY_SIZE and fields[1] != str(size).encode():
            return None
        return fields[2].decode("utf-8", "replace") + suffix

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())
