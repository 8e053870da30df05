"""Compiling a script: parse, decode encoded characters, validate → `Script`."""

from __future__ import annotations

from dataclasses import dataclass, field

from mailyard.sieve.grammar import Command, SieveCompileError, parse
from mailyard.sieve.validate import Validator, apply_encoded_character


@dataclass
class Script:
    """A compiled script: the checked syntax tree and the extensions it requires."""

    name: str
    commands: list[Command]
    required: frozenset[str]
    text: str = field(repr=False, default="")


def _declared_requires(commands: list[Command]) -> set[str]:
    out: set[str] = set()
    for cmd in commands:
        if cmd.name != "require":
            break
        for arg in cmd.arguments:
            values = getattr(arg, "values", None)
            if values:
                out.update(values)
    return out


def compile_script(text: str, *, name: str = "script") -> Script:
    """Compile Sieve source text; raises SieveCompileError naming line and column."""
    if not isinstance(text, str):
        raise TypeError("script text must be str")
    if "\x00" in text:
        index = text.index("\x00")
        line = text.count("\n", 0, index) + 1
        raise SieveCompileError(line, index - (text.rfind("\n", 0, index) + 1) + 1,
                                "NUL character in script")
    commands = parse(text)
    if "encoded-character" in _declared_requires(commands):
        apply_encoded_character(commands)
    validator = Validator()
    validator.commands(commands, top=True)
    return Script(name, commands, frozenset(validator.required), text)
