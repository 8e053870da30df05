"""Sieve lexer and parser (RFC 5228 §8): script text in, a syntax tree out.

Theory of operation: `tokenize` walks the text once, yielding `Token`s that carry their line
and column; comments (`# ...` and `/* ... */`) and white space are dropped there. The
recursive-descent `Parser` follows the ABNF of RFC 5228 §8.2 literally:

    commands   = *command
    command    = identifier arguments (";" / block)
    block      = "{" commands "}"
    arguments  = *argument [ test / test-list ]
    argument   = string-list / number / tag
    test       = identifier arguments
    test-list  = "(" test *("," test) ")"
    string-list = "[" string *("," string) "]" / string

It knows nothing of what a command means: `mailyard.sieve.validate` checks names, argument
shapes and `require` afterwards. Every error is a `SieveCompileError` naming the line and the
column; nesting depth and script size are bounded so hostile input fails cleanly instead of
exhausting the Python stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_NESTING = 32  # blocks and tests inside each other
MAX_SCRIPT_CHARS = 4 * 1024 * 1024


class SieveCompileError(Exception):
    """A script that cannot be compiled; `line` and `column` are 1-based."""

    def __init__(self, line: int, column: int, message: str):
        super().__init__(f"line {line}, column {column}: {message}")
        self.line = line
        self.column = column
        self.message = message


# Token kinds
IDENT, TAG, NUMBER, STRING, MULTILINE, PUNCT, EOF = (
    "identifier", "tag", "number", "string", "multi-line string", "punctuation", "end of script")


@dataclass(frozen=True)
class Token:
    """One lexical token with the 1-based line and column where it starts."""

    kind: str
    value: object
    line: int
    column: int


# -- the syntax tree ---------------------------------------------------------------------

@dataclass
class Tag:
    """A tagged argument such as `:contains` (name without the colon, lower-cased)."""

    name: str
    line: int
    column: int


@dataclass
class Number:
    """A number argument, K/M/G quantifiers already applied (RFC 5228 §2.4.1)."""

    value: int
    line: int
    column: int


@dataclass
class StringList:
    """One string or a bracketed list; `single` is True for a bare string."""

    values: list[str]
    single: bool
    line: int
    column: int


@dataclass
class Test:
    """A test (`header`, `allof`, ...): its raw arguments, nested tests, and — after
    validation — `tagged` and `positional`."""

    name: str
    arguments: list
    tests: list[Test]
    line: int
    column: int
    # Filled by the validator: tags (name -> value or True) and positional arguments.
    tagged: dict = field(default_factory=dict)
    positional: list = field(default_factory=list)


@dataclass
class Command:
    """A command (`if`, `fileinto`, ...): raw arguments, its test(s), its block if any,
    and — after validation — `tagged` and `positional`."""

    name: str
    arguments: list
    tests: list[Test]
    block: list[Command] | None
    line: int
    column: int
    tagged: dict = field(default_factory=dict)
    positional: list = field(default_factory=list)


_SIZE_SUFFIX = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_IDENT_START = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | set("0123456789")
_PUNCT = set("[](){};,")
MAX_NUMBER = (1 << 63) - 1


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens (RFC 5228 §8.1), or raise SieveCompileError."""
    if len(text) > MAX_SCRIPT_CHARS:
        raise SieveCompileError(1, 1, "script too large")
    tokens: list[Token] = []
    i, n, line, line_start = 0, len(text), 1, 0

    def err(msg: str, at: int | None = None) -> SieveCompileError:
        pos = i if at is None else at
        return SieveCompileError(line, pos - line_start + 1, msg)

    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            line_start = i
        elif c in " \t\r":
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == "/" and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise err("unterminated /* comment")
            line += text.count("\n", i, j)
            k = text.rfind("\n", i, j)
            if k >= 0:
                line_start = k + 1
            i = j + 2
        elif c in _PUNCT:
            tokens.append(Token(PUNCT, c, line, i - line_start + 1))
            i += 1
        elif c == '"':
            start_line, start_col = line, i - line_start + 1
            out: list[str] = []
            i += 1
            while True:
                if i >= n:
                    raise SieveCompileError(start_line, start_col, "unterminated string")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    # RFC 5228 §2.4.2: "\\" and "\"" are escapes; any other escaped
                    # character stands for itself.
                    if i + 1 >= n:
                        raise SieveCompileError(start_line, start_col, "unterminated string")
                    c = text[i + 1]
                    i += 1
                if c == "\n":
                    line += 1
                    line_start = i + 1
                out.append(c)
                i += 1
            tokens.append(Token(STRING, "".join(out), start_line, start_col))
        elif c == ":":
            j = i + 1
            if j >= n or text[j] not in _IDENT_START:
                raise err("':' must be followed by a tag name")
            while j < n and text[j] in _IDENT_CHARS:
                j += 1
            tokens.append(Token(TAG, text[i + 1:j].lower(), line, i - line_start + 1))
            i = j
        elif c.isdigit() and c.isascii():
            j = i
            while j < n and text[j].isascii() and text[j].isdigit():
                j += 1
            value = int(text[i:j]) if j - i < 40 else MAX_NUMBER + 1
            if j < n and text[j].lower() in _SIZE_SUFFIX:
                value *= _SIZE_SUFFIX[text[j].lower()]
                j += 1
            if value > MAX_NUMBER:
                raise err("number too large")
            if j < n and text[j] in _IDENT_CHARS:
                raise err("bad number")
            tokens.append(Token(NUMBER, value, line, i - line_start + 1))
            i = j
        elif c in _IDENT_START:
            j = i
            while j < n and text[j] in _IDENT_CHARS:
                j += 1
            word = text[i:j]
            col = i - line_start + 1
            if word.lower() == "text" and j < n and text[j] == ":":
                value, i, lines = _multiline(text, j + 1, line, col)
                tokens.append(Token(MULTILINE, value, line, col))
                line += lines
                line_start = text.rfind("\n", 0, i) + 1
                continue
            tokens.append(Token(IDENT, word.lower(), line, col))
            i = j
        else:
            raise err(f"unexpected character {c!r}")
    tokens.append(Token(EOF, None, line, i - line_start + 1))
    return tokens


def _multiline(text: str, i: int, line: int, col: int) -> tuple[str, int, int]:
    """Read a `text:` string after the colon; returns (value, new index, lines consumed).

    RFC 5228 §8.1: white space or a hash comment may follow "text:" up to the line end;
    lines follow until a line holding only "."; a leading ".." stands for ".".
    """
    n = len(text)
    while i < n and text[i] in " \t":
        i += 1
    if i < n and text[i] == "#":
        j = text.find("\n", i)
        i = n if j < 0 else j
    if i < n and text[i] == "\r":
        i += 1
    if i >= n or text[i] != "\n":
        raise SieveCompileError(line, col, "text: must be followed by a line break")
    i += 1
    lines = 1
    out: list[str] = []
    while True:
        if i >= n:
            raise SieveCompileError(line, col, "unterminated multi-line string")
        j = text.find("\n", i)
        end = n if j < 0 else j
        raw = text[i:end]
        stripped = raw.removesuffix("\r")
        if stripped == ".":
            if j < 0:
                return "".join(out), n, lines
            return "".join(out), j + 1, lines + 1
        if j < 0:
            raise SieveCompileError(line, col, "unterminated multi-line string")
        if stripped.startswith(".."):
            stripped = stripped[1:]
        out.append(stripped + "\r\n")
        lines += 1
        i = j + 1


class Parser:
    """Recursive-descent parser over the token list (see the module docstring)."""

    def __init__(self, tokens: list[Token]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        tok = self.tokens[self.pos]
        if tok.kind != EOF:
            self.pos += 1
        return tok

    def error(self, tok: Token, msg: str) -> SieveCompileError:
        return SieveCompileError(tok.line, tok.column, msg)

    def expect_punct(self, char: str) -> Token:
        tok = self.take()
        if tok.kind != PUNCT or tok.value != char:
            raise self.error(tok, f"expected '{char}' but found {_describe(tok)}")
        return tok

    def _enter(self, tok: Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error(tok, f"nesting deeper than {MAX_NESTING} levels")

    def commands(self, top: bool) -> list[Command]:
        out: list[Command] = []
        while True:
            tok = self.peek()
            if tok.kind == EOF:
                if not top:
                    raise self.error(tok, "missing '}' at end of script")
                return out
            if tok.kind == PUNCT and tok.value == "}" and not top:
                return out
            out.append(self.command())

    def command(self) -> Command:
        tok = self.take()
        if tok.kind != IDENT:
            raise self.error(tok, f"expected a command but found {_describe(tok)}")
        arguments, tests = self.arguments()
        end = self.take()
        if end.kind == PUNCT and end.value == ";":
            return Command(tok.value, arguments, tests, None, tok.line, tok.column)
        if end.kind == PUNCT and end.value == "{":
            self._enter(end)
            block = self.commands(top=False)
            self.expect_punct("}")
            self.depth -= 1
            return Command(tok.value, arguments, tests, block, tok.line, tok.column)
        raise self.error(end, f"expected ';' or '{{' after command {tok.value!r} "
                              f"but found {_describe(end)}")

    def arguments(self) -> tuple[list, list[Test]]:
        arguments: list = []
        while True:
            tok = self.peek()
            if tok.kind == TAG:
                self.take()
                arguments.append(Tag(tok.value, tok.line, tok.column))
            elif tok.kind == NUMBER:
                self.take()
                arguments.append(Number(tok.value, tok.line, tok.column))
            elif tok.kind in (STRING, MULTILINE):
                self.take()
                arguments.append(StringList([tok.value], True, tok.line, tok.column))
            elif tok.kind == PUNCT and tok.value == "[":
                arguments.append(self.string_list())
            else:
                break
        tok = self.peek()
        if tok.kind == IDENT:
            return arguments, [self.test()]
        if tok.kind == PUNCT and tok.value == "(":
            return arguments, self.test_list()
        return arguments, []

    def string_list(self) -> StringList:
        start = self.expect_punct("[")
        values: list[str] = []
        while True:
            tok = self.take()
            if tok.kind not in (STRING, MULTILINE):
                raise self.error(tok, f"expected a string in the list but found "
                                      f"{_describe(tok)}")
            values.append(tok.value)
            sep = self.take()
            if sep.kind == PUNCT and sep.value == "]":
                return StringList(values, False, start.line, start.column)
            if not (sep.kind == PUNCT and sep.value == ","):
                raise self.error(sep, f"expected ',' or ']' but found {_describe(sep)}")

    def test(self) -> Test:
        tok = self.take()
        if tok.kind != IDENT:
            raise self.error(tok, f"expected a test but found {_describe(tok)}")
        self._enter(tok)
        arguments, tests = self.arguments()
        self.depth -= 1
        return Test(tok.value, arguments, tests, tok.line, tok.column)

    def test_list(self) -> list[Test]:
        start = self.expect_punct("(")
        self._enter(start)
        tests = [self.test()]
        while True:
            sep = self.take()
            if sep.kind == PUNCT and sep.value == ")":
                self.depth -= 1
                return tests
            if not (sep.kind == PUNCT and sep.value == ","):
                raise self.error(sep, f"expected ',' or ')' but found {_describe(sep)}")
            tests.append(self.test())


def _describe(tok: Token) -> str:
    if tok.kind == EOF:
        return "the end of the script"
    if tok.kind in (STRING, MULTILINE):
        return "a string"
    if tok.kind == TAG:
        return f"tag ':{tok.value}'"
    return f"{tok.kind} {tok.value!r}"


def parse(text: str) -> list[Command]:
    """Parse script text into a list of `Command`s (syntax only)."""
    return Parser(tokenize(text)).commands(top=True)
