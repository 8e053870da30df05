"""`meta` rule expressions: Perl boolean/arithmetic over other rules' hit counts.

`compile_meta("(A && !B) || C + D > 1")` parses with Perl's precedence (unary `!`/`-`, then
`* /`, `+ -`, comparisons, `==`/`!=`, `&&`, `||`, `?:`), emits a fully parenthesised Python
expression over a dict of hit counts, and compiles it once; evaluating a meta rule is then a
single call. Unknown rule names evaluate to 0, as in SpamAssassin.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(&&|\|\||==|!=|>=|<=|[-+*/()!<>?:]))")
_BINARY = [("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/")]
_PY = {"||": " or ", "&&": " and "}


class MetaError(ValueError):
    """A meta expression we cannot parse."""


def tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise MetaError(f"meta: unexpected {text[pos:pos + 10]!r}")
        tokens.append(m.group(m.lastindex))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


class _Parser:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0
        self.deps: list[str] = []

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise MetaError("meta: unexpected end of expression")
        self.pos += 1
        return tok

    def ternary(self) -> str:
        cond = self.binary(0)
        if self.peek() == "?":
            self.take()
            a = self.ternary()
            if self.take() != ":":
                raise MetaError("meta: ? without :")
            b = self.ternary()
            return f"(({a}) if ({cond}) else ({b}))"
        return cond

    def binary(self, level: int) -> str:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in _BINARY[level]:
            op = self.take()
            right = self.binary(level + 1)
            if op == "/":
                left = f"_div({left}, {right})"
            else:
                left = f"({left}{_PY.get(op, op)}{right})"
        return left

    def unary(self) -> str:
        tok = self.take()
        if tok == "!":
            return f"(not {self.unary()})"
        if tok == "-":
            return f"(-{self.unary()})"
        if tok == "(":
            inner = self.ternary()
            if self.take() != ")":
                raise MetaError("meta: unbalanced parentheses")
            return f"({inner})"
        if tok[0].isdigit():
            return tok
        if tok[0].isalpha() or tok[0] == "_":
            self.deps.append(tok)
            return f"_h.get({tok!r}, 0)"
        raise MetaError(f"meta: unexpected {tok!r}")


def _div(a, b):
    return a / b if b else 0


def compile_meta(text: str):
    """Compile a meta expression into `fn(hits: dict) -> number` and its dependencies."""
    tokens = tokenize(text)
    if not tokens:
        raise MetaError("meta: empty expression")
    parser = _Parser(tokens)
    expr = parser.ternary()
    if parser.pos != len(tokens):
        raise MetaError(f"meta: unexpected {tokens[parser.pos]!r}")
    code = compile(f"lambda _h: {expr}", "<meta>", "eval")
    fn = eval(code, {"_div": _div, "__builtins__": {}})
    return fn, list(dict.fromkeys(parser.deps))
