"""TOML → `Settings`, with one-line errors naming file, key and problem."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from mailyard.config.errors import ConfigError
from mailyard.config.schema import Settings

DEFAULT_CONFIG_NAME = "mailyard.toml"


def find_config_file(explicit: str | None) -> str | None:
    """DESIGN contract: `-c FILE`, else ./mailyard.toml if present, else built-in defaults."""
    if explicit:
        return explicit
    if os.path.exists(DEFAULT_CONFIG_NAME):
        return DEFAULT_CONFIG_NAME
    return None


def parse_hostport(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` → (host, port). `unix:/path` → ("unix:/path", 0)."""
    if value.startswith("unix:"):
        if len(value) <= 5:
            raise ValueError("unix: needs a socket path, like unix:/run/mailyard/clamd.sock")
        return value, 0
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r} is not [IPv6]:PORT")
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not HOST:PORT (like 127.0.0.1:25)")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return host, int(port)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """Check `value` against annotation `tp`; return it (ints widen to floats). Raise TypeError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            if arm is type(None) and value is None:
                return None
            try:
                return _coerce(value, arm)
            except TypeError:
                continue
        raise TypeError
    if origin is list:
        if not isinstance(value, list):
            raise TypeError
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        _, inner = typing.get_args(tp)
        return {str(k): _coerce(v, inner) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise TypeError
        return value
    raise TypeError


def _build_section(cls: type, table: Any, file: str, section: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"must be a table ([{section}])", file=file, key=section)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in table.items():
        dotted = f"{section}.{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown key (known keys: {known})", file=file, key=dotted)
        tp = hints[key]
        try:
            value = _coerce(raw, tp)
        except TypeError:
            raise ConfigError(f"must be {_type_name(tp)}, got {type(raw).__name__} {raw!r}",
                              file=file, key=dotted) from None
        check = fields[key].metadata.get("check")
        if check is not None:
            try:
                check(value)
            except ValueError as exc:
                raise ConfigError(str(exc), file=file, key=dotted) from None
        values[key] = value
    return cls(**values)


def load(path: str | None) -> Settings:
    """Load and validate settings; `None` means built-in defaults."""
    if path is None:
        raw: dict[str, Any] = {}
        base = Path.cwd()
        file = "<defaults>"
    else:
        file = str(path)
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("no such file", file=file) from None
        except PermissionError:
            raise ConfigError("permission denied", file=file) from None
        except IsADirectoryError:
            raise ConfigError("is a directory, not a TOML file", file=file) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", file=file) from None
        except UnicodeDecodeError:
            raise ConfigError("not valid UTF-8", file=file) from None
        base = Path(path).resolve().parent

    hints = typing.get_type_hints(Settings)
    sections: dict[str, Any] = {}
    for name, table in raw.items():
        if name == "source" or name not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(Settings) if f.name != "source")
            raise ConfigError(f"unknown table (known tables: {known})", file=file, key=name)
        sections[name] = _build_section(hints[name], table, file, name)

    settings = Settings(**sections, source=None if path is None else str(Path(path).resolve()))
    return _resolve_paths(settings, base, file)


def _resolve_paths(settings: Settings, base: Path, file: str) -> Settings:
    """Make data_dir absolute (relative to the config file) and check files that must exist."""
    data_dir = Path(settings.server.data_dir)
    if not data_dir.is_absolute():
        data_dir = (base / data_dir).resolve()
    server = dataclasses.replace(settings.server, data_dir=str(data_dir))

    tls = settings.tls
    if bool(tls.cert) != bool(tls.key):
        missing = "tls.key" if tls.cert else "tls.cert"
        raise ConfigError("tls.cert and tls.key must be set together", file=file, key=missing)
    resolved_tls = {}
    for key in ("cert", "key"):
        value = getattr(tls, key)
        if value:
            p = Path(value)
            if not p.is_absolute():
                p = (base / p).resolve()
            if not p.is_file():
                raise ConfigError(f"file not found: {p}", file=file, key=f"tls.{key}")
            resolved_tls[key] = str(p)
    tls = dataclasses.replace(tls, **resolved_tls)

    for key in ("before", "after"):
        value = getattr(settings.sieve, key)
        if value and not Path(value if Path(value).is_absolute() else base / value).is_file():
            raise ConfigError(f"file not found: {value}", file=file, key=f"sieve.{key}")

    return dataclasses.replace(settings, server=server, tls=tls)


def is_trusted(settings: Settings, ip: str) -> bool:
    """Is `ip` inside `[smtp] trusted_networks`?"""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in ipaddress.ip_network(n, strict=False)
               for n in settings.smtp.trusted_networks)


def render_example() -> str:
    """The documented example config: every table, every key, its default and its doc."""
    out = ["# mailyard.toml — every key, with its default. Generated by "
           "`mailyard config example`;", "# uncomment and change what you need.", ""]
    defaults = Settings()
    for table in dataclasses.fields(Settings):
        if table.name == "source":
            continue
        out.append(f"[{table.name}]")
        section = getattr(defaults, table.name)
        for f in dataclasses.fields(section):
            doc = f.metadata.get("doc", "")
            out.append(f"# {doc}")
            value = getattr(section, f.name)
            if table.name == "server" and f.name == "hostname":
                value = "mail.example.test"
            out.append(f"#{f.name} = {_toml_value(value)}")
        out.append("")
    return "\n".join(out)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)
