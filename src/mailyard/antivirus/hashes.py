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
_NOT_NAME_START = np.zeros(256, np.bool_)  # bytes a name cannot start with
_NOT_NAME_START[np.frombuffer(b" \t\r\n:", np.uint8)] = True
# Byte-wise constants for the bulk loader's in-word (SWAR) arithmetic.
_ONE = np.uint64(1)
_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_COLONS = np.uint64(0x3A3A3A3A3A3A3A3A)
_ZEROS = np.uint64(0x3030303030303030)


def _in_range(w, low: int, high: int):
    """0x80 in each byte of `w` (all bytes < 0x80) that lies in [low, high]: no byte sum
    below reaches 0x100, so no carry crosses bytes."""
    above = w + np.uint64((0x80 - low) * 0x0101010101010101)
    below = ~(w + np.uint64((0x7F - high) * 0x0101010101010101))
    return above & below & _HIGHS


def _digits(w):
    """0x80 in each byte of `w` that is an ASCII digit (garbage in bytes after a byte of
    0x80 or more: callers only use bytes below such a one, carries go upwards)."""
    return _in_range(w, 0x30, 0x39) & ~(w & _HIGHS)


def _not_hex(w, bad) -> None:
    """OR into `bad` a 0x80 for each byte of the words `w` that is not a hex digit (0-9,
    a-f, A-F); in place, as this runs over every digest."""
    bad |= w & _HIGHS  # not ASCII (the sums below are then garbage, and not needed)
    digit = w + np.uint64(0x50 * 0x0101010101010101)  # >= '0'
    upper = w + np.uint64(0x46 * 0x0101010101010101)  # > '9'
    np.invert(upper, out=upper)
    digit &= upper
    lower = w | np.uint64(0x2020202020202020)  # A-F -> a-f; digits keep their value
    np.add(lower, np.uint64(0x1F * 0x0101010101010101), out=upper)  # >= 'a'
    lower += np.uint64(0x19 * 0x0101010101010101)  # > 'f'
    np.invert(lower, out=lower)
    upper &= lower
    digit |= upper
    np.bitwise_and(digit, _HIGHS, out=digit)
    digit ^= _HIGHS
    bad |= digit


def _nibbles_packed(w):
    """8 hex digits (checked) -> their 4 bytes, in bytes 0, 2, 4 and 6 of the result."""
    nibbles = (w & np.uint64(0x0F0F0F0F0F0F0F0F)) + ((w >> np.uint64(6)) & _ONES) * np.uint64(9)
    return (nibbles << np.uint64(4)) | (nibbles >> np.uint64(8))


def _bytes_packed(w):
    """Bytes 0, 2, 4 and 6 of each word of `w` -> bytes 0-3 (the others zero)."""
    w &= np.uint64(0x00FF00FF00FF00FF)
    w = (w | (w >> np.uint64(8))) & np.uint64(0x0000FFFF0000FFFF)
    return (w | (w >> np.uint64(16))) & np.uint64(0xFFFFFFFF)


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
        # Bit n % 2**24 set: some signature has size n. Allocated with the first sized
        # signature (2 MiB; a database has nine tables, most of them empty).
        self.sizes = bytearray()

    def size_bits(self) -> bytearray:
        """`sizes`, allocated if it is not yet."""
        if not self.sizes:
            self.sizes = bytearray(_SIZE_BITS // 8)
        return self.sizes

    def finish(self) -> None:
        if self.chunks:
            keys = [np.frombuffer(self.keys, np.uint64)] + [k for k, _ in self.chunks]
            refs = [np.frombuffer(self.refs, np.uint64)] + [r for _, r in self.chunks]
            if self.pending:
                keys.append(np.array([c >> 64 for c in self.pending], np.uint64))
                refs.append(np.array([c & _MASK for c in self.pending], np.uint64))
                self.pending.clear()
            all_keys, all_refs = np.concatenate(keys), np.concatenate(refs)
            order = _order_by_key_then_ref(all_keys, all_refs)
            self.keys, self.refs = array("Q"), array("Q")
            self.keys.frombytes(memoryview(all_keys[order]).cast("B"))  # no bytes copy
            self.refs.frombytes(memoryview(all_refs[order]).cast("B"))
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


_ROW_BITS = 24
_ROW_MASK = np.uint64((1 << _ROW_BITS) - 1)


def _order_by_key_then_ref(keys, refs):
    """The permutation that sorts by key, then by ref (the first line wins a lookup).

    A plain sort is twice as fast as an argsort, so each key's low 24 bits are replaced by
    its row number and those words sorted: that orders by the top 40 bits of the key, then
    by row. Only the (rare) runs of keys sharing their top 40 bits are then sorted again
    exactly, by (key, ref)."""
    n = len(keys)
    if n >= 1 << _ROW_BITS:
        return np.lexsort((refs, keys))
    packed = (keys & ~_ROW_MASK) | np.arange(n, dtype=np.uint64)
    packed.sort()
    order = (packed & _ROW_MASK).astype(np.intp)
    top = packed >> np.uint64(_ROW_BITS)
    shared = np.flatnonzero(top[1:] == top[:-1])
    if len(shared):
        # runs of equal tops: [start, end) for each, from the positions where one starts
        starts = shared[np.concatenate(([True], shared[1:] != shared[:-1] + 1))]
        for start in starts.tolist():
            end = start + 1
            while end < n and top[end] == top[start]:
                end += 1
            rows = order[start:end]
            order[start:end] = rows[np.lexsort((refs[rows], keys[rows]))]
    return order


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
                    (table.sizes or table.size_bits())[(n % _SIZE_BITS) >> 3] |= 1 << (n & 7)
                    table.pending.append(((prefix ^ (n * _MIX)) & _MASK) << 64 | base | start)
            except (IndexError, KeyError, ValueError):
                stripped = line.strip()
                if stripped and not stripped.startswith(b"#"):
                    errors.append(f"{origin}:{number}: expected HASH:SIZE:NAME with an MD5, "
                                  f"SHA1 or SHA256 hash")

    def _load_bulk(self, data: bytes, base: int, ignored_b: set):
        """Take every well-formed `HEX:SIZE:NAME...` line (size up to 7 digits) in a few
        vector passes (numpy); yield (number, start, line) of the others — comments, `*`
        sizes, odd lines, names on the ignore list — for the line-by-line loader.

        Fields are read 8 bytes at a time, as little-endian words of an overlapping
        uint64 view of the file, and checked and converted inside the word (SWAR): the
        hex test, the hex-to-bytes of the digest's first 8 bytes, the place of the ':'
        after the size and the decimal value of the size — no byte matrices."""
        raw = np.frombuffer(data, np.uint8)
        newlines = np.flatnonzero(raw == 10)
        starts = np.concatenate(([0], newlines + 1))
        ends = np.concatenate((newlines, [len(data)]))
        words = np.ndarray((len(data) - 7,), "<u8", buffer=data, strides=(1,))
        last_word = len(words) - 1

        def word(offsets):
            return words[np.minimum(offsets, last_word)]

        # The digest ends at the first ':' — at 32, 40 or 64 (a colon earlier fails the
        # hex check below). Most files hold one kind: the rows with no colon at 32 only
        # are looked at again.
        end = len(data) - 1
        digest_len = np.where(raw[np.minimum(starts + 32, end)] == 58, 32, 0)
        others = np.flatnonzero(digest_len == 0)
        for length in (40, 64):
            if not len(others):
                break
            at = raw[np.minimum(starts[others] + length, end)] == 58
            digest_len[others[at]] = length
            others = others[~at]
        c1 = starts + digest_len  # the ':' after the digest
        # The size: its ':' is the first zero byte of (word ^ '::::::::') after c1.
        size_word = word(c1 + 1)
        x = size_word ^ _COLONS
        zero = (x - _ONES) & ~x & _HIGHS
        first = zero & (~zero + _ONE)  # the lowest 0x80 bit: that of the first colon
        size_len = np.where(zero != 0, (np.frexp(first.astype(np.float64))[1] - 8) >> 3, 99)
        c2 = c1 + 1 + size_len  # the ':' after the size
        fast = ((digest_len > 0) & (size_len >= 1) & (size_len <= 7) & (c2 + 1 < ends)
                & (c2 + 8 <= last_word))
        fast &= ~_NOT_NAME_START[raw[np.minimum(c2 + 1, end)]]
        digit_bytes = (np.uint64(1) << (np.minimum(size_len, 7).astype(np.uint64) << 3)) - 1
        fast &= (_digits(size_word) & digit_bytes & _HIGHS) == (digit_bytes & _HIGHS)
        if ignored_b:
            fast &= ~self._names_ignored(raw, words, c2, ends, fast, ignored_b)
        # The size's value: its digits moved to the top of the word ('0's below), then
        # the classic three multiply-and-shift steps of an 8-digit decimal parse.
        shift = ((8 - np.clip(size_len, 1, 7)) << 3).astype(np.uint64)
        digits = ((size_word - _ZEROS) & digit_bytes) << shift
        digits = ((digits & np.uint64(0x0F0F0F0F0F0F0F0F)) * np.uint64(2561)) >> np.uint64(8)
        digits = ((digits & np.uint64(0x00FF00FF00FF00FF)) * np.uint64(6553601)) >> np.uint64(16)
        sizes = (((digits & np.uint64(0x0000FFFF0000FFFF)) * np.uint64(42949672960001))
                 >> np.uint64(32)).astype(np.int64)
        taken = np.zeros(len(starts), np.bool_)
        for length, algorithm in _ALGORITHM.items():
            rows = np.flatnonzero(fast & (digest_len == length))
            if not len(rows):
                continue
            row_starts = starts[rows]
            # (no clamping: a fast row's digest lies before its c2, and c2 + 8 is a word)
            bad = np.zeros(len(rows), np.uint64)
            heads = [words[row_starts], words[row_starts + 8]]  # also the key's 8 bytes
            for k in range(0, length, 8):
                _not_hex(heads[k >> 3] if k < 16 else words[row_starts + k], bad)
            good = bad == 0
            if not good.all():
                rows, row_starts = rows[good], row_starts[good]
                heads = [head[good] for head in heads]
            # The key's 8 digest bytes, big-endian: each half's 4 bytes (bytes 0, 2, 4, 6
            # of its word) moved together, the halves joined, the byte order swapped.
            first_half, second_half = (_bytes_packed(_nibbles_packed(head)) for head in heads)
            prefix = (first_half | (second_half << np.uint64(32))).byteswap()
            row_sizes = sizes[rows]
            table = self.tables[algorithm]
            table.chunks.append((prefix ^ (row_sizes.astype(np.uint64) * np.uint64(_MIX)),
                                 row_starts.astype(np.uint64) | np.uint64(base)))
            seen = np.zeros(_SIZE_BITS, np.bool_)
            seen[row_sizes % _SIZE_BITS] = True
            bits = np.frombuffer(table.size_bits(), np.uint8)
            bits |= np.packbits(seen, bitorder="little")
            taken[rows] = True
        for row in np.flatnonzero(~taken).tolist():
            start, end = int(starts[row]), int(ends[row])
            yield row + 1, start, data[start:end]

    @staticmethod
    def _names_ignored(raw, words, c2, ends, fast, ignored_b: set):
        """Rows whose name may be on the ignore list (they go to the careful loader): each
        line's name gets a fingerprint (its length and last 8 bytes), compared with theirs."""
        last_word = len(words) - 1
        name_end = ends.copy()
        rows = np.flatnonzero(fast)
        colons = np.flatnonzero(raw == 58)
        third = np.searchsorted(colons, c2[rows] + 1)
        third = np.concatenate((colons, [len(raw)]))[third]
        name_end[rows] = np.minimum(third, ends[rows])
        name_end -= raw[np.maximum(name_end - 1, 0)] == 13  # CR
        name_len = name_end - c2 - 1
        odd = (name_len < 1) | _NOT_NAME_START[raw[np.maximum(name_end - 1, 0)]]
        short = np.clip(name_len, 0, 7).astype(np.uint64)
        head = words[np.clip(c2 + 1, 0, last_word)] & (
            (np.uint64(1) << (np.uint64(8) * short)) - np.uint64(1))
        tail = words[np.clip(name_end - 8, 0, last_word)]
        prints = np.where(name_len < 8, head, tail) ^ (
            name_len.astype(np.uint64) * np.uint64(_MIX))
        theirs = np.array([_name_print(name) for name in ignored_b], np.uint64)
        return odd | np.isin(prints, theirs)

    def finish(self) -> None:
        for table in self.tables.values():
            table.finish()

    def tables_state(self) -> dict:
        """The finished tables that hold signatures, as plain data (arrays pickle as their
        raw bytes): what a forked loader sends back (`antivirus.forked`)."""
        return {name: vars(table) for name, table in self.tables.items() if len(table)}

    def take_tables(self, state: dict, blobs: list[tuple[bytes, str, bool]]) -> None:
        """Adopt `tables_state()` of a store that loaded `blobs` (data, suffix, size_first),
        in that order, so its line references point into the same blobs here."""
        for name, attributes in state.items():
            vars(self.tables[name]).update(attributes)
        self._blobs.extend(blobs)

    def algorithms(self) -> list[str]:
        return [name for name, table in self.tables.items() if len(table)]

    def wanted(self, algorithm: str, size: int) -> bool:
        table = self.tables[algorithm]
        if len(table.any_keys):
            return True
        sizes = table.sizes
        return bool(sizes) and bool(sizes[(size % _SIZE_BITS) >> 3] & (1 << (size & 7)))

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
