"""ClamAV logical expressions (`.ldb` third field) → YARA conditions.

Grammar, as ClamAV documents it:
    expr    := operand (('&' | '|') operand)*
    operand := primary [('=' | '>' | '<') COUNT [',' DISTINCT]]
    primary := SUBSIG_INDEX | '(' expr ')'

`0&1` both subsignatures match; `0|1` either; `0>2` subsignature 0 matches more than twice;
`(0|1|2)=3,2` the group matches 3 times in all with at least 2 distinct subsignatures.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(\d+|[&|()=><,])")


class ExpressionError(ValueError):
    """A logical expression that does not follow the grammar."""


def _tokens(expression: str) -> list[str]:
    tokens, pos = [], 0
    expression = expression.strip()
    while pos < len(expression):
        m = _TOKEN.match(expression, pos)
        if not m:
            raise ExpressionError(f"bad character {expression[pos]!r} in expression")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, expression: str, subsig_count: int, var: str,
                 overrides: dict[int, str] | None = None):
        self.tokens = _tokens(expression)
        self.pos = 0
        self.count = subsig_count
        self.var = var
        self.overrides = overrides or {}

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        if self.pos >= len(self.tokens):
            raise ExpressionError("expression ends too early")
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> str:
        if not self.tokens:
            raise ExpressionError("empty expression")
        result, _ = self.expr()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()!r}")
        return result

    def expr(self) -> tuple[str, set[int]]:
        text, ids = self.operand()
        parts = [text]
        while self.peek() in ("&", "|"):
            op = "and" if self.take() == "&" else "or"
            rhs, rhs_ids = self.operand()
            parts += [op, rhs]
            ids |= rhs_ids
        return (parts[0] if len(parts) == 1 else "(" + " ".join(parts) + ")"), ids

    def operand(self) -> tuple[str, set[int]]:
        token = self.take()
        if token == "(":
            text, ids = self.expr()
            if self.take() != ")":
                raise ExpressionError("missing ')'")
        elif token.isdigit():
            index = int(token)
            if index >= self.count:
                raise ExpressionError(f"subsignature {index} does not exist")
            ids = {index}
            text = self.overrides.get(index, f"${self.var}{index}")
        else:
            raise ExpressionError(f"unexpected {token!r}")
        if self.peek() in ("=", ">", "<"):
            op = {"=": "==", ">": ">", "<": "<"}[self.take()]
            number = self.take()
            if not number.isdigit():
                raise ExpressionError("a count must be a number")
            total = " + ".join(f"#{self.var}{i}" for i in sorted(ids))
            text = f"({total}) {op} {number}"
            if self.peek() == ",":
                self.take()
                distinct = self.take()
                if not distinct.isdigit():
                    raise ExpressionError("a distinct count must be a number")
                members = ", ".join(f"${self.var}{i}" for i in sorted(ids))
                text = f"({text} and {distinct} of ({members}))"
        return text, ids


def check_expression(expression: str, subsig_count: int) -> None:
    """Raise ExpressionError unless `expression` is valid for `subsig_count` subsignatures."""
    _Parser(expression, subsig_count, "s").parse()


def to_yara_condition(expression: str, subsig_count: int, var: str = "s",
                      overrides: dict[int, str] | None = None) -> str:
    """The YARA condition for `expression`; `overrides` replaces the plain `$sN` test of
    some subsignatures (a PCRE subsignature counts only when its trigger holds)."""
    return _Parser(expression, subsig_count, var, overrides).parse()
