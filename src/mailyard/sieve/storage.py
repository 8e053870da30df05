"""Users' Sieve scripts on disk (the one owner of data_dir/sieve/).

Layout::

    data_dir/sieve/<user address, lower-cased>/NAME.sieve   one file per script (UTF-8)
    data_dir/sieve/<user address, lower-cased>/.active      the active script's NAME
                                                            (absent or empty: none active)
    data_dir/sieve/global/NAME.sieve                        `include :global` scripts
                                                            (default; `[sieve] global_dir`)

Every write goes to a temporary file in the same directory and is renamed into place, so a
reader (delivery) sees the old or the new script, never half of one. Names are checked
(RFC 5804 §1.6: no control characters; here also no "/", "\\" or leading ".", at most
`MAX_NAME_LENGTH` characters), so a name can never leave the user's directory.

Delivery calls `active_script_text(data_dir, user)` and `include_loader(data_dir, user,
global_dir)`; ManageSieve uses `ScriptStore`.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path

MAX_NAME_LENGTH = 128
ACTIVE_FILE = ".active"
SUFFIX = ".sieve"


class StorageError(Exception):
    """A refused script operation; `code` is the ManageSieve response code (RFC 5804 §1.3)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def check_name(name: str) -> None:
    """Raise StorageError unless `name` is an acceptable script name."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise StorageError("", f"script names are 1 to {MAX_NAME_LENGTH} characters")
    for ch in name:
        # RFC 5804 §1.6: no CTL (0-0x1f, 0x7f), no 0x80-0x9f, no LINE/PARAGRAPH SEPARATOR.
        if ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f or ch in "\u2028\u2029":
            raise StorageError("", "script names must not contain control characters")
        if unicodedata.category(ch) == "Cs":
            raise StorageError("", "script names must be valid UTF-8")
    if "/" in name or "\\" in name or name.startswith("."):
        raise StorageError("", "script names must not contain '/' or '\\' or start with '.'")


def user_dir(data_dir: str | os.PathLike, user_address: str) -> Path:
    user = user_address.strip().lower()
    if (not user or "/" in user or "\\" in user or user.startswith(".") or "\x00" in user
            or user == "global"):
        raise StorageError("", f"invalid user address {user_address!r}")
    return Path(data_dir) / "sieve" / user


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class ScriptStore:
    """One user's scripts, with quotas on their number and size."""

    def __init__(self, data_dir: str | os.PathLike, user_address: str, *,
                 max_scripts: int = 20, max_script_size: int = 65536):
        self.dir = user_dir(data_dir, user_address)
        self.max_scripts = max_scripts
        self.max_script_size = max_script_size

    def _path(self, name: str) -> Path:
        check_name(name)
        return self.dir / (name + SUFFIX)

    def names(self) -> list[str]:
        try:
            entries = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return []
        return [e[:-len(SUFFIX)] for e in entries
                if e.endswith(SUFFIX) and not e.startswith(".")]

    def active_name(self) -> str | None:
        try:
            name = (self.dir / ACTIVE_FILE).read_bytes().decode("utf-8").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        if not name or not (self.dir / (name + SUFFIX)).is_file():
            return None
        return name

    def list(self) -> list[tuple[str, bool]]:
        active = self.active_name()
        return [(name, name == active) for name in self.names()]

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def get(self, name: str) -> str:
        try:
            return self._path(name).read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise StorageError("NONEXISTENT", f"there is no script named {name!r}") from None

    def check_space(self, name: str, size: int) -> None:
        """RFC 5804 §2.3 HAVESPACE semantics: raise StorageError(QUOTA/...) if it won't fit."""
        check_name(name)
        if size > self.max_script_size:
            raise StorageError("QUOTA/MAXSIZE", f"scripts may be at most "
                                                f"{self.max_script_size} bytes")
        if not self.exists(name) and len(self.names()) >= self.max_scripts:
            raise StorageError("QUOTA/MAXSCRIPTS", f"at most {self.max_scripts} scripts")

    def put(self, name: str, text: str) -> None:
        data = text.encode("utf-8")
        self.check_space(name, len(data))
        _atomic_write(self._path(name), data)

    def delete(self, name: str) -> None:
        path = self._path(name)
        if not path.is_file():
            raise StorageError("NONEXISTENT", f"there is no script named {name!r}")
        if self.active_name() == name:
            # RFC 5804 §2.10: the active script cannot be deleted.
            raise StorageError("ACTIVE", "you may not delete the active script")
        path.unlink()

    def rename(self, old: str, new: str) -> None:
        src, dst = self._path(old), self._path(new)
        if not src.is_file():
            raise StorageError("NONEXISTENT", f"there is no script named {old!r}")
        if dst.exists():
            raise StorageError("ALREADYEXISTS", f"a script named {new!r} already exists")
        was_active = self.active_name() == old
        os.link(src, dst)  # fails instead of overwriting a racing script
        if was_active:
            _atomic_write(self.dir / ACTIVE_FILE, new.encode("utf-8"))
        src.unlink()

    def set_active(self, name: str) -> None:
        """Activate `name`; "" deactivates (RFC 5804 §2.8)."""
        if name == "":
            try:
                (self.dir / ACTIVE_FILE).unlink()
            except FileNotFoundError:
                pass
            return
        if not self._path(name).is_file():
            raise StorageError("NONEXISTENT", f"there is no script named {name!r}")
        _atomic_write(self.dir / ACTIVE_FILE, name.encode("utf-8"))

    def used(self) -> int:
        return sum((self.dir / (n + SUFFIX)).stat().st_size for n in self.names())


def active_script_text(data_dir: str | os.PathLike, user_address: str) -> str | None:
    """The text of the user's active script, or None when there is none (delivery's call)."""
    try:
        store = ScriptStore(data_dir, user_address)
        name = store.active_name()
        return store.get(name) if name else None
    except (StorageError, OSError, UnicodeDecodeError):
        return None


def active_script_name(data_dir: str | os.PathLike, user_address: str) -> str | None:
    try:
        return ScriptStore(data_dir, user_address).active_name()
    except StorageError:
        return None


def default_before_script() -> str:
    """The shipped global `before` script (used when `[sieve] before` is empty): files
    mail the filter marked `X-Spam-Flag: YES` into Junk and stops."""
    return (Path(__file__).parent / "scripts" / "default_before.sieve").read_bytes().decode(
        "utf-8")


def global_dir_path(data_dir: str | os.PathLike, configured: str = "") -> Path:
    return Path(configured) if configured else Path(data_dir) / "sieve" / "global"


def include_loader(data_dir: str | os.PathLike, user_address: str,
                   global_dir: str | os.PathLike | None = None
                   ) -> Callable[[str, str], str | None]:
    """A `SieveContext.load_include` implementation over this layout (RFC 6609 §2:
    :personal = the user's own scripts, :global = the global directory)."""
    personal = ScriptStore(data_dir, user_address)
    global_base = Path(global_dir) if global_dir else global_dir_path(data_dir)

    def load(name: str, location: str) -> str | None:
        try:
            check_name(name)
            if location == "global":
                return (global_base / (name + SUFFIX)).read_bytes().decode("utf-8")
            return personal.get(name)
        except (StorageError, OSError, UnicodeDecodeError):
            return None

    return load
