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

_ALGORITHM = {32: "md5", 40: "sha1", 64: "sha256"}
_MASK = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15
_SIZE_BITS = 1 << 24
ANY_SIZE = -1


def _key(digest_prefix: int, size: int) -> int:
    return (digest_prefix ^ (size * _MIX)) & _MASK


class _Table:
    """One algorithm's sorted keys and line references."""

    def __init__(self) -> None:
        self.pending: list[int] = []  # key << 64 | ref, while loading
        self.keys = array("Q")
        self.refs = array("Q")
        self.any_pending: list[int] = []
        self.any_keys = array("Q")
        self.any_refs = array("Q")
        self.sizes = bytearray(_SIZE_BITS // 8)

    def finish(self) -> None:
        for pending, keys, refs in ((self.pending, self.keys, self.refs),
                                    (self.any_pending, self.any_keys, self.any_refs)):
            pending.sort()
            keys.extend(c >> 64 for c in pending)
            refs.extend(c & _MASK for c in pending)
            pending.clear()

    def __len__(self) -> int:
        return len(self.keys) + len(self.any_keys) + len(self.pending) + len(self.any_pending)


class HashStore:
    """MD5, SHA1 and SHA256 signatures of whole files: `lookup(algorithm, hexdigest, size)`."""

    def __init__(self) -> None:
        self.tables = {name: _Table() for name in ("md5", "sha1", "sha256")}
        self._blobs: list[tuple[bytes, str]] = []

    def load(self, data: bytes, suffix: str, ignored: set[str], origin: str,
             errors: list[str], size_first: bool = False) -> None:
        """Add every line of one hash database file; bad lines go to `errors` (file:line).

        `size_first`: PE section hashes (`.mdb`/`.msb`) put the size before the hash."""
        blob_index = len(self._blobs)
        self._blobs.append((data, suffix, size_first))
        ignored_b = {name.encode() for name in ignored}
        base = blob_index << 40
        tables = self.tables
        algorithm_of = _ALGORITHM
        pos = 0
        for number, line in enumerate(data.split(b"\n"), 1):
            start = pos
            pos += len(line) + 1
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
