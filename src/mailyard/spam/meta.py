"""`meta` rule expressions: Perl boolean/arithmetic over other rules' hit counts.

`compile_meta("(A && !B) || C + D > 1")` parses with Perl's precedence (unary `!`/`-`, then
`* /`, `+ -`, comparisons, `==`/`!=`, `&&`, `||`, `?:`) into a small tree, emits a fully
parenthesised Python expression over a dict of hit counts, and compiles it once; evaluating a
meta rule is then a single call. Unknown rule names evaluate to 0, as in SpamAssassin.

Lazy evaluation: the engine's hit dict evaluates a rule the first time it is read, so the
order in which a meta reads its operands decides how much work a scan does. Given `cost`
(an estimate of what reading a name costs) and `bound` (the largest value a name can have, or
None when unknown), `compile_meta` emits an equivalent expression that reads less:

- in boolean context (the meta's own truth value, `!x`, operands of `&&`/`||` chains that are
  themselves in boolean context, the condition of `?:`) the operands of an `&&` or `||` chain
  are read cheapest-to-decide first (cost over the chance, from `chance`, that the operand
  ends the chain) — only truth values matter there, and reading has no side effects;
- a comparison `NAME + NAME + ... > K` (or `>=`) becomes `_sum_cmp`, which reads the cheapest
  names first and stops as soon as the outcome is decided: the sum already exceeds K, or
  cannot reach it even if every unread name took its bound (needs every bound known and every
  value non-negative, which hit counts are).

Arithmetic contexts (`(A && B) + C`) keep Perl's left-to-right order, since `&&` then yields
an operand's value, not just a truth value.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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


# Tree nodes are tuples: ("name", N), ("num", "3"), ("not", x), ("neg", x),
# ("bin", op, a, b), ("tern", cond, a, b).

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

    def ternary(self) -> tuple:
        cond = self.binary(0)
        if self.peek() == "?":
            self.take()
            a = self.ternary()
            if self.take() != ":":
                raise MetaError("meta: ? without :")
            b = self.ternary()
            return ("tern", cond, a, b)
        return cond

    def binary(self, level: int) -> tuple:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek() in _BINARY[level]:
            op = self.take()
            right = self.binary(level + 1)
            left = ("bin", op, left, right)
        return left

    def unary(self) -> tuple:
        tok = self.take()
        if tok == "!":
            return ("not", self.unary())
        if tok == "-":
            return ("neg", self.unary())
        if tok == "(":
            inner = self.ternary()
            if self.take() != ")":
                raise MetaError("meta: unbalanced parentheses")
            return inner
        if tok[0].isdigit():
            return ("num", tok)
        if tok[0].isalpha() or tok[0] == "_":
            self.deps.append(tok)
            return ("name", tok)
        raise MetaError(f"meta: unexpected {tok!r}")


def _div(a, b):
    return a / b if b else 0


def _sum_cmp(h, terms: tuple, limit: float, strict: bool) -> bool:
    """`sum(h.get(n, 0) for n, _ in terms) > limit` (`>=` unless strict), reading lazily.

    `terms` are (name, bound) pairs, cheapest first; every value lies in [0, bound].
    """
    total = 0
    remaining = sum(b for _, b in terms)
    for name, b in terms:
        if total > limit or (not strict and total == limit):
            return True
        reach = total + remaining
        if reach < limit or (strict and reach == limit):
            return False
        total += h.get(name, 0)
        remaining -= b
    return total > limit or (not strict and total == limit)


class _Emitter:
    def __init__(self, cost: Callable[[str], float] | None,
                 bound: Callable[[str], float | None] | None,
                 chance: Callable[[str], float] | None = None):
        self.cost_of = cost
        self.bound_of = bound
        self.chance_of = chance
        self.consts: list = []

    def chance(self, node: tuple) -> float:
        """How likely `node` is true (a guess unless `chance` knows the name)."""
        if node[0] == "name":
            return self.chance_of(node[1]) if self.chance_of else 0.1
        if node[0] == "not":
            return 1.0 - self.chance(node[1])
        return 0.5

    def order_key(self, op: str) -> Callable[[tuple], float]:
        """Cheapest-to-decide first: cost over the chance the operand ends the chain."""
        if op == "&&":
            return lambda node: self.cost(node) / max(1.0 - self.chance(node), 0.02)
        return lambda node: self.cost(node) / max(self.chance(node), 0.02)

    def cost(self, node: tuple) -> float:
        kind = node[0]
        if kind == "name":
            return self.cost_of(node[1]) if self.cost_of else 0.0
        if kind == "num":
            return 0.0
        return sum(self.cost(child) for child in node[1:] if isinstance(child, tuple))

    def emit(self, node: tuple, boolean: bool = False) -> str:
        kind = node[0]
        if kind == "name":
            return f"_h.get({node[1]!r}, 0)"
        if kind == "num":
            return node[1]
        if kind == "not":
            return f"(not {self.emit(node[1], True)})"
        if kind == "neg":
            return f"(-{self.emit(node[1])})"
        if kind == "tern":
            return (f"(({self.emit(node[2], boolean)}) if ({self.emit(node[1], True)}) "
                    f"else ({self.emit(node[3], boolean)}))")
        _, op, a, b = node
        if op in ("&&", "||"):
            if boolean and self.cost_of is not None:
                chain = self._chain(node, op)
                chain.sort(key=self.order_key(op))   # stable: ties keep Perl's order
                return "(" + _PY[op].join(self.emit(c, True) for c in chain) + ")"
            return f"({self.emit(a, boolean)}{_PY[op]}{self.emit(b, boolean)})"
        if op in (">", ">=") and b[0] == "num" and self.cost_of is not None:
            lazy = self._sum(a, float(b[1]), op == ">")
            if lazy is not None:
                return lazy
        if op == "/":
            return f"_div({self.emit(a)}, {self.emit(b)})"
        return f"({self.emit(a)}{op}{self.emit(b)})"

    def _chain(self, node: tuple, op: str) -> list[tuple]:
        if node[0] == "bin" and node[1] == op:
            return self._chain(node[2], op) + self._chain(node[3], op)
        return [node]

    def _sum(self, node: tuple, limit: float, strict: bool) -> str | None:
        names = self._chain(node, "+")
        if len(names) < 2 or any(n[0] != "name" for n in names) or self.bound_of is None:
            return None
        terms = []
        for n in names:
            b = self.bound_of(n[1])
            if b is None:
                return None
            terms.append((n[1], b))
        terms.sort(key=lambda t: self.cost_of(t[0]))
        self.consts.append(tuple(terms))
        return f"_sum_cmp(_h, _c[{len(self.consts) - 1}], {limit!r}, {strict})"


def compile_meta(text: str, cost: Callable[[str], float] | None = None,
                 bound: Callable[[str], float | None] | None = None,
                 chance: Callable[[str], float] | None = None):
    """Compile a meta expression into `fn(hits: dict) -> number` and its dependencies.

    With `cost` (and `bound`), operands are read cheapest first where that cannot change the
    result (see the module docstring); `fn`'s truth value is the same either way.
    """
    tokens = tokenize(text)
    if not tokens:
        raise MetaError("meta: empty expression")
    parser = _Parser(tokens)
    tree = parser.ternary()
    if parser.pos != len(tokens):
        raise MetaError(f"meta: unexpected {tokens[parser.pos]!r}")
    emitter = _Emitter(cost, bound, chance)
    expr = emitter.emit(tree, boolean=True)
    code = compile(f"lambda _h: {expr}", "<meta>", "eval")
    fn = eval(code, {"_div": _div, "_sum_cmp": _sum_cmp, "_c": tuple(emitter.consts),
                     "__builtins__": {}})
    return fn, list(dict.fromkeys(parser.deps))
