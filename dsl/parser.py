"""Text -> AST, with every syntax error of a file reported in words.

Recovery is by declaration: the file is cut where a line starts at column 1
(outside a triple-quoted string), each piece is parsed alone, so one broken
declaration never hides the errors or the meaning of the others.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import cast

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.indenter import Indenter

from dsl import nodes as n
from dsl.builder import Builder, BuildError
from dsl.diagnostics import Diagnostic, make, point_span
from dsl.suggest import closest

GRAMMAR = Path(__file__).with_name("grammar.lark")
MAX_NESTING = 64
MAX_EXPECTED_SHOWN = 8


class _SyntaxProblem(Exception):
    def __init__(self, code: str, message: str, offset: int, length: int = 1, hint: str | None = None):
        super().__init__(message)
        self.code, self.message, self.offset, self.length, self.hint = code, message, offset, length, hint


class PlayIndenter(Indenter):
    """Lark's Indenter, plus: brackets may not nest deeper than MAX_NESTING,
    and a bad dedent is reported with its position. (A line starting with
    `and`/`or` continues the previous one: see _CONTINUATION in the grammar.)"""

    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB"]
    CLOSE_PAREN_types = ["RPAR", "RSQB"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def handle_NL(self, token: Token):
        if self.paren_level > 0:
            return
        indent_str = token.rsplit("\n", 1)[1]
        indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len
        yield token
        if indent > self.indent_level[-1]:
            self.indent_level.append(indent)
            yield Token.new_borrow_pos(self.INDENT_type, indent_str, token)
        else:
            while indent < self.indent_level[-1]:
                self.indent_level.pop()
                yield Token.new_borrow_pos(self.DEDENT_type, indent_str, token)
            if indent != self.indent_level[-1]:
                raise _SyntaxProblem(
                    "PB004",
                    "this line's indentation matches no enclosing block",
                    token.end_pos or 0, 1,
                    "indent it like the lines of the block it belongs to",
                )

    def _process(self, stream):
        for token in stream:
            if token.type == self.NL_type:
                yield from self.handle_NL(token)
                continue
            if token.type in self.OPEN_PAREN_types:
                self.paren_level += 1
                if self.paren_level > MAX_NESTING:
                    raise _SyntaxProblem(
                        "PB005", f"brackets nest deeper than {MAX_NESTING} levels", token.start_pos, 1,
                        "split the condition into `let` fields",
                    )
            elif token.type in self.CLOSE_PAREN_types:
                self.paren_level = max(0, self.paren_level - 1)
            yield token
        while len(self.indent_level) > 1:
            self.indent_level.pop()
            yield Token(self.DEDENT_type, "")


@lru_cache(maxsize=1)
def lark_parser() -> Lark:
    """The Lark parser, built once per process from grammar.lark.

    The analysed grammar is kept on disk between runs (0.27 s less at every
    start of a command), under a name keyed by the grammar, this module and
    Lark's version; it is written under a private name and renamed into
    place, so no process ever reads another's half-written file.
    """
    final = _cache_path()
    if final is not None and final.exists():
        return _lark(str(final))
    if final is None:
        return _lark(None)
    private = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    try:
        parser = _lark(str(private))
        os.replace(private, final)
    except OSError:  # a read-only temp folder: the same parser, uncached
        parser = _lark(None)
    return parser


def _lark(cache: str | None) -> Lark:
    return Lark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=PlayIndenter(),
        propagate_positions=True,
        maybe_placeholders=False,
        strict=True,
        cache=cache,
    )


def _cache_path() -> Path | None:
    import hashlib
    import tempfile

    import lark

    try:
        key = hashlib.sha256(GRAMMAR.read_bytes() + Path(__file__).read_bytes() + lark.__version__.encode())
        return Path(tempfile.gettempdir()) / f"playbook-grammar-{key.hexdigest()[:20]}.lark-cache"
    except OSError:
        return None


# Strings and comments, to find where declarations start and to keep comments.
_SCAN = re.compile(r'"""(?:.|\n)*?(?:"""|\Z)|"(?:[^"\\\n]|\\.)*"?|#[^\n]*', re.S)


@dataclass
class Chunk:
    text: str
    offset: int
    line: int


@dataclass
class ParseResult:
    module: n.Module
    diagnostics: list[Diagnostic] = field(default_factory=list)


def split(text: str) -> tuple[list[Chunk], list[n.Comment]]:
    """Cut `text` into top-level declarations; collect `#` comments."""
    comments: list[n.Comment] = []
    blocked: list[tuple[int, int]] = []  # spans inside multi-line strings
    for m in _SCAN.finditer(text):
        tok = m.group()
        if tok.startswith("#"):
            line = text.count("\n", 0, m.start()) + 1
            col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
            comments.append(n.Comment(line=line, column=col, text=tok))
        elif "\n" in tok:
            blocked.append((m.start(), m.end()))
    starts = [0]
    for m in re.finditer(r"\n(?=[^\s#])", text):
        pos = m.end()
        if not any(a < pos < b for a, b in blocked):
            starts.append(pos)
    chunks = []
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(text)
        chunk = text[s:e]
        if chunk.strip():
            chunks.append(Chunk(chunk, s, text.count("\n", 0, s) + 1))
    return chunks, comments


def parse(text: str, file: str = "<input>") -> ParseResult:
    """Parse one file's text. Never raises on any input."""
    if text.startswith("\ufeff"):
        text = text[1:]
    chunks, comments = split(text)
    declarations: list = []
    diagnostics: list[Diagnostic] = []
    broken: list[tuple[str, str]] = []
    for chunk in chunks:
        decls, diag = _parse_chunk(chunk, file, text)
        declarations += decls
        if diag is not None:
            diagnostics.append(diag)
            if (header := _broken_header(chunk.text)) is not None:
                broken.append(header)
    module = n.Module(file=file, declarations=declarations, comments=comments, broken=broken)
    return ParseResult(module, diagnostics)


# The first two words of a declaration, read even when the rest does not parse.
_HEADER = re.compile(r"([A-Za-z_]+)[ \t]+([A-Za-z_][A-Za-z0-9_]*)")
_NAMED_KINDS = ("entity", "metric", "event", "calendar", "source", "trigger", "score", "gate", "route", "template", "play")


def _broken_header(text: str) -> tuple[str, str] | None:
    """The kind and name of a declaration that did not parse, also under a misspelt
    keyword (`paly usage_limit`): the checker stays quiet about what it would have defined."""
    header = _HEADER.match(text)
    if header is None:
        return None
    word = header.group(1)
    kind = word if word in _NAMED_KINDS else closest(word.lower(), _NAMED_KINDS)
    return (kind, header.group(2)) if kind is not None else None


def parse_file(path: str | Path, display: str | None = None) -> ParseResult:
    path = Path(path)
    name = display or str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        return _unreadable(name, f"cannot read file: {e.strerror or e}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return _unreadable(name, f"file is not UTF-8 text (byte {e.start} is 0x{raw[e.start]:02x})")
    return parse(text, name)


def _unreadable(name: str, message: str) -> ParseResult:
    d = make("PB001", message, n.Span(file=name))
    return ParseResult(n.Module(file=name), [d])


def _parse_chunk(chunk: Chunk, file: str, whole: str) -> tuple[list, Diagnostic | None]:
    text = chunk.text if chunk.text.endswith("\n") else chunk.text + "\n"
    parser = lark_parser()
    try:
        tree = parser.parse(text)
    except _SyntaxProblem as p:
        return [], _diag(p, chunk, file, whole)
    except UnexpectedInput as e:
        return [], _diag(_describe(e, text), chunk, file, whole)
    try:
        return Builder(file, chunk.line - 1, chunk.offset).transform(tree), None
    except BuildError as e:
        return [], make("PB006", str(e), e.span)
    except RecursionError:
        return [], _diag(_too_deep(chunk), chunk, file, whole)


def _too_deep(chunk: Chunk) -> _SyntaxProblem:
    return _SyntaxProblem("PB005", "expression is too long or nested too deeply", 0, 1, "split it into `let` fields")


def _diag(p: _SyntaxProblem, chunk: Chunk, file: str, whole: str) -> Diagnostic:
    offset = chunk.offset + min(p.offset, len(chunk.text))
    return make(p.code, p.message, point_span(file, whole, offset, p.length), detail=p.hint)


# ---------------------------------------------------------------- messages

_TERMINAL_WORDS = {
    "_NL": "end of line",
    "$END": "end of file",
    "_INDENT": "an indented line",
    "_DEDENT": "the end of the indented block",
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": 'a "quoted text"',
    "LONG_STRING": 'a """multi-line text"""',
    "DATE": "a date (YYYY-MM-DD)",
    "TIME": "a time (HH:MM)",
    "DURATION_UNIT": "a unit (days, business days, weeks, months, hours)",
}


def _word(terminal: str) -> str:
    if terminal in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[terminal]
    try:
        pattern = lark_parser().get_terminal(terminal).pattern
    except KeyError:
        return terminal
    if pattern.type == "str":
        return f"`{pattern.value}`"
    return terminal.lower()


def _found(token: Token) -> str:
    if token.type in ("_NL", "$END", "_INDENT", "_DEDENT"):
        return _TERMINAL_WORDS[token.type]
    text = str(token)
    return f"`{text[:40]}`" if len(text) <= 40 else f"`{text[:37]}...`"


_DECLARATION_WORDS = "a declaration (entity, metric, event, calendar, source, trigger, score, gate, route, template, play or test)"
_VALUE_WORDS = 'a value (a number, "text", a field such as account.arr, or a function such as days_since(...))'


def _expected(expected: set[str]) -> str | None:
    if {"PLAY", "TRIGGER", "ENTITY"} <= expected:
        return _DECLARATION_WORDS
    if {"NUMBER", "NAME", "STRING"} <= expected:
        return _VALUE_WORDS
    words = sorted({_word(t) for t in expected if not t.startswith("__")})
    if not words or len(words) > MAX_EXPECTED_SHOWN:
        return None
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _describe(e: UnexpectedInput, text: str) -> _SyntaxProblem:
    if isinstance(e, UnexpectedCharacters):
        # lark declares pos_in_stream None on UnexpectedInput; the lexer sets it to an int here.
        pos = cast(int, e.pos_in_stream)
        ch = text[pos] if pos < len(text) else ""
        shown = repr(ch)[1:-1] if not ch.isprintable() else ch
        if ch == '"':
            return _SyntaxProblem("PB003", "this text has no closing quote", pos, 1,
                                  'close it with " on the same line, or use """ for several lines')
        return _SyntaxProblem("PB003", f"unexpected character '{shown}' (U+{ord(ch):04X})" if ch else "unexpected character",
                              pos, 1, _CHARACTER_HINTS.get(ch, "remove it, or put it inside \"quotes\""))
    if isinstance(e, UnexpectedToken):
        tok = e.token
        known = _known_mistake(e, tok, text)
        expected = _expected(e.expected)
        msg = f"unexpected {_found(tok)}"
        if expected:
            msg += f"; expected {expected}"
        offset = tok.start_pos if tok.start_pos is not None else len(text)
        length = len(str(tok)) if tok.type not in ("_NL", "_INDENT", "_DEDENT", "$END") else 1
        if tok.type in ("_NL", "_DEDENT", "_INDENT"):
            offset, length = tok.start_pos or 0, 1
            if tok.type == "_INDENT":
                offset = tok.end_pos or offset
        return _SyntaxProblem("PB002", msg, offset, length, known)
    if isinstance(e, UnexpectedEOF):
        expected = _expected(set(e.expected))
        return _SyntaxProblem("PB002", "unexpected end of file" + (f"; expected {expected}" if expected else ""),
                              len(text.rstrip()), 1)
    return _SyntaxProblem("PB002", "syntax error", 0, 1)


# Characters people bring from other languages, and what to write instead.
_CHARACTER_HINTS = {
    "&": "write `and` to join conditions",
    "|": "write `or` to join conditions",
    "'": 'quote text with double quotes: "like this"',
    "!": "write `!=` for not equal, or `not` before a condition",
    ":": "no colon here: write `day 1 email ...`, and `name=value` in a given",
    ";": "one clause per line; no `;`",
}


@dataclass(frozen=True)
class _Seen:
    """What the parser met: the token, what it expected instead, and the line before the token."""

    token: str
    type: str
    expected: frozenset[str]
    before: str  # the token's line up to the token, without indentation
    decl: str  # the declaration's first word: trigger, route, ...


# The table of known mistakes: (test, hint), the first match wins. Each test reads
# the token, the expected terminals and the line before it, so a hint fits its shape.
_KNOWN_MISTAKES: list[tuple[Callable[[_Seen], bool], str]] = [
    (lambda s: s.token == "=" and ("EQ" in s.expected or s.before.startswith("expect")),
     "compare with `==`; a single `=` only sets a value"),
    (lambda s: s.before.startswith("given") and s.token in ("=", ":"),
     "give fields as name=value: `given account arr=5000, usage_percent=85%`"),
    (lambda s: s.type == "_NL" and "THEN" in s.expected,
     "a trigger needs a `then start PLAY` line under its `when`"),
    (lambda s: s.token == "then",
     "`then start PLAY` goes on its own line, under the `when` condition"),
    (lambda s: s.type == "NAME" and "START" in s.expected,
     "write `then start PLAY`"),
    (lambda s: s.type == "START" and "COMMA" in s.expected,
     "separate the plays with a comma: `then start a, start b`"),
    (lambda s: s.token in ("AND", "OR", "And", "Or", "NOT", "Not"),
     "keywords are lower case: and, or, not"),
    (lambda s: s.token.lower() in ("null", "none", "nil"),
     "write `is empty` (or `is not empty`)"),
    (lambda s: s.type == "_INDENT",
     "this line is indented more than the line before it, which opens no block"),
    (lambda s: s.token == "?" and re.match(r"field\s+\w+\s+\w+\s+\S*\.\.", s.before) is not None,
     "`?` goes right after the type name, before the range: `number? 0..10`"),
    (lambda s: s.before.startswith("points") and s.token == "otherwise",
     "`otherwise N` comes last, after a comma: `points 25 if ..., 15 if ..., otherwise 5`"),
    (lambda s: s.before.startswith("points") and s.token == "when",
     "a points case reads `25 if CONDITION`"),
    (lambda s: s.before.startswith("band") and s.token == "-",
     "a band's range uses `..`: `band high 80..100`"),
    (lambda s: s.token == "-" and re.match(r"field\s+\w+\s+\w+\??\s+-?[\d.]+$", s.before) is not None,
     "a field's range uses `..`: `number? 0..100`"),
    (lambda s: s.before == "band" and s.type != "NAME",
     "name the band first: `band high 80..100 \"Immediate outreach\"`"),
    (lambda s: s.decl == "route" and s.before.startswith("when") and s.type == "NAME",
     "a route case reads `when CONDITION -> TARGET`"),
    (lambda s: s.type == "NUMBER" and "DURATION_UNIT" in s.expected,
     "give a unit after the number, e.g. `90 days`"),
    (lambda s: s.token == "ago", "a duration needs a unit: `30 days ago`"),
    (lambda s: s.expected == {"DURATION_UNIT"} or (s.type == "_NL" and "DURATION_UNIT" in s.expected),
     "durations need a unit: days, business days, weeks, months or hours"),
    (lambda s: s.token == ">" and s.before.endswith("<"), "write `!=` for not equal"),
    (lambda s: s.token == "if" and s.before == "else",
     "write `else` alone and indent the `if` under it"),
    (lambda s: s.type == "LPAR" and "LSQB" in s.expected,
     "a list uses square brackets: `in [smb, mid_market]`"),
    (lambda s: s.before.endswith("enum") and s.token != "(",
     "list the values in parentheses: `enum(smb, mid_market, enterprise)`"),
    (lambda s: re.fullmatch(r"field\s+\w+", s.before) is not None and s.type == "_NL",
     "give the field a type: `field arr money`, `field nps number? 0..10`"),
    (lambda s: s.before == "test" and s.type != "STRING",
     'quote the test\'s name: `test "busy, healthy account enters usage_limit"`'),
    (lambda s: s.type == "STRING" and "NAME" in s.expected and s.before in _NAMED_KINDS,
     "name it first, then its title: `trigger usage_ceiling \"Usage ceiling\"`"),
    (lambda s: s.before in ("subject", "body") and s.type not in ("STRING", "LONG_STRING"),
     'quote it: `subject "..."`, `body """..."""`'),
    (lambda s: "UP" in s.expected and s.before.endswith("wait"),
     "write `wait up to 5 days for replied`"),
    (lambda s: s.before in ("day", "business day") and s.type != "NUMBER",
     "give the day's number: `day 1 email account.admin template welcome`"),
]


def _known_mistake(e: UnexpectedToken, tok: Token, text: str) -> str | None:
    """A hint for a mistake people make often (the table above), or None."""
    pos = tok.start_pos if tok.start_pos is not None else len(text)
    line_start = text.rfind("\n", 0, pos) + 1
    seen = _Seen(token=str(tok) if tok.type not in ("_NL", "_INDENT", "_DEDENT", "$END") else "",
                 type=tok.type, expected=frozenset(e.expected), before=text[line_start:pos].strip(),
                 decl=text.split(None, 1)[0] if text.strip() else "")
    return next((hint for test, hint in _KNOWN_MISTAKES if test(seen)), None)
