"""Step one: text -> lark Tree -> AST. Syntax errors become MTLS00x diagnostics.

The lark Tree goes no further than mtlsc/parse_tree.py, which turns it into the AST. The
parser is built once per process, or loaded from the user's cache (`mtlsc.cache`).
"""

from __future__ import annotations

import difflib
import functools
import re
import sys
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternRE, PatternStr, TerminalDef

from mtlsc import ast, cache, parse_fast
from mtlsc.parse_tree import ToAst as _ToAst, token_span as _token_span
from mtlsc.diagnostics import Diagnostic, error
from mtlsc.parse_fast import unescape  # noqa: F401  (part of this module's interface)
from mtlsc.source import Source, Span

# Words for the named terminals; keyword terminals are shown as the keyword itself.
FRIENDLY_TERMINALS = {
    "NAME": "a name",
    "STRING": "a quoted string",
    "PATH": "a path starting with `/`",
    "HOSTNAME": "a host name",
    "LISTEN": "a port or `address:port`",
    "INT": "a number",
    "QUANTITY": "a number with a unit, such as `10m` or `5s`",
    "CODE": "a check code such as `MTLS201`",
    "EXACT": "`=`",
    "NGINX_BODY": "`{` and nginx directives, each ending with `;`",
    "$END": "the end of the file",
}


_OPTIONS = {"parser": "lalr", "propagate_positions": True, "maybe_placeholders": True}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# A keyword ends where a name would: without this, where the grammar takes only keywords the
# lexer matched `allowed` as `allow` + `ed` (an allow list naming identity `ed`) and
# `backend_paths` misspelt as `backend` + a stray name.
_KEYWORD_END = r"(?![A-Za-z0-9_-])"
# How close a name in a list must be to a keyword to be taken for a misspelt statement: a
# valid name may resemble one (`public_api`, 0.75 of `public`), a typo is nearer (`forwad`, 0.92)
LIST_TYPO_CUTOFF = 0.8
_KEYWORD_PRIORITY = 1  # above NAME's: where both fit, `allow` is the keyword, as before


def _whole_word_keyword(term: TerminalDef) -> None:
    """lark `edit_terminals` hook: a word keyword becomes a regex that will not match the start
    of a longer name."""
    if isinstance(term.pattern, PatternStr) and _WORD.fullmatch(term.pattern.value):
        term.pattern = PatternRE(re.escape(term.pattern.value) + _KEYWORD_END)
        term.priority = _KEYWORD_PRIORITY


@functools.cache
def parser() -> Lark:
    """The LALR parser, loaded from the user's cache (`mtlsc.cache`) when an identical one was
    built before: building it took a sixth of a cold `mtlsc check`, loading it takes 3 ms."""
    grammar = resources.files("mtlsc.grammar").joinpath("mtls.lark").read_text(encoding="utf-8")
    import lark

    path = cache.entry("parser", f"{grammar}{sorted(_OPTIONS.items())}{_KEYWORD_END}{_KEYWORD_PRIORITY}"
                                 f"{lark.__version__}{sys.version_info[:2]}")
    try:
        with open(path, "rb") as f:
            return Lark.load(f)
    except Exception:  # absent, unreadable or damaged: build it
        pass
    built = Lark(grammar, edit_terminals=_whole_word_keyword, **_OPTIONS)
    cache.write_atomic(path, built.save)
    return built


def parse(source: Source) -> tuple[ast.PolicyFile | None, list[Diagnostic]]:
    """Parse one file. Returns the AST, or None and the syntax error."""
    found = parse_fast.split(source.path, source.text, frozenset(_keywords().values()))
    if found is not None:
        merged = _parse_split(source.path, found)
        if merged is not None:
            return merged, []
    try:
        tree = parser().parse(source.text)
    except UnexpectedInput as exc:
        return None, [_syntax_error(source, exc)]
    return _ToAst(source.path).transform(tree), []


def _parse_split(path: str, found: parse_fast.Split) -> ast.PolicyFile | None:
    """lark's reading of the blanked text with what the fast path took put back, or None when
    lark must read the whole text (a syntax error, whose wording comes from the whole text, or
    something taken that lark does not read as the fast path thought)."""
    try:
        rest = parser().parse(found.rest)
    except UnexpectedInput:
        return None
    tails = dict(found.allow_tails)
    parsed = _ToAst(path, tails).transform(rest)
    if tails:  # an allow list the fast path saw that lark did not read as one
        return None
    return parse_fast.merge(path, parsed, found.identities)


def _describe_expected(names) -> str:
    words = sorted({_friendly(n) for n in names}, key=lambda w: (not w.startswith("`"), w.strip("`")))  # keywords, then prose
    if not words:
        return "something else"
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


@functools.cache
def _keywords() -> dict[str, str]:
    """Terminal name -> the keyword it stands for (`REQUIRE` -> `require`); punctuation and
    pattern terminals are left out."""
    out = {}
    for t in parser().terminals:
        text = t.pattern.value
        if isinstance(t.pattern, PatternRE) and text.endswith(_KEYWORD_END) and _WORD.fullmatch(text[:-len(_KEYWORD_END)]):
            out[t.name] = text[: -len(_KEYWORD_END)]
    return out


def _keyword(name: str) -> str | None:
    return _keywords().get(name)


def closest_keyword(word: str, expected, cutoff: float = 0.6) -> str | None:
    """The keyword among the `expected` terminals that `word` is most likely a typo of. The
    candidates come from the grammar (what the parser accepts at that point), so the suggestions
    follow the language as it changes."""
    if not _WORD.fullmatch(word):
        return None
    keywords = sorted({k for k in map(_keyword, expected) if k})
    close = difflib.get_close_matches(word.lower(), keywords, n=1, cutoff=cutoff)
    return close[0] if close and close[0] != word else None


@functools.cache
def keywords_after(prefix: str) -> tuple[str, ...]:
    """The keywords the grammar accepts after the text `prefix` (e.g. the statements that may open
    a line of an `identity` block: `keywords_after("identity x {")`)."""
    state = parser().parse_interactive(prefix)
    state.exhaust_lexer()
    return tuple(sorted({k for k in map(_keyword, state.accepts()) if k}))


def _misspelt_before(text: str, exc: UnexpectedToken) -> tuple[Token, str] | None:
    """(name token, keyword) when the token before the error is a name that a list statement
    (`backend_paths a b`, `allow a b`) took, while the parser also accepted, there, a keyword it
    looks like: `backend_paths case_sensitive  backend_c "ca.pem"` fails at the string."""
    history = getattr(exc, "token_history", None) or ()
    prev = history[-1] if history else None
    if prev is None or prev.type != "NAME" or prev.start_pos is None:
        return None
    try:
        state = parser().parse_interactive(text[: prev.start_pos])
        state.exhaust_lexer()
        accepted = state.accepts()
    except UnexpectedInput:
        return None
    # closer than for a word the parser refused: this name was a valid name (`public_api`)
    keyword = closest_keyword(str(prev.value), accepted, cutoff=LIST_TYPO_CUTOFF)
    return (prev, keyword) if keyword else None


def _friendly(name: str) -> str:
    if name in FRIENDLY_TERMINALS:
        return FRIENDLY_TERMINALS[name]
    if name in _keywords():
        return f"`{_keywords()[name]}`"
    for term in parser().terminals:
        if term.name == name and isinstance(term.pattern, PatternStr):
            return f"`{term.pattern.value}`"
    return name.lower()


def _syntax_error(source: Source, exc: UnexpectedInput) -> Diagnostic:
    line, col = max(exc.line, 1), max(exc.column, 1)
    if isinstance(exc, UnexpectedCharacters):
        char = source.text[exc.pos_in_stream]
        span = Span(source.path, line, col, line, col + 1)
        if char == '"':
            rest = source.line_text(line)[col - 1 :]
            return error(
                "MTLS002", Span(source.path, line, col, line, col + len(rest)),
                "unterminated string", "close the string with `\"` on the same line; write `\\\"` for a quote inside it",
                label="this string has no closing quote",
            )
        shown = repr(char)[1:-1] if not char.isprintable() else char
        return error(
            "MTLS001", span, f"unexpected character `{shown}`",
            f"expected {_describe_expected(exc.allowed or ())} here", label="not allowed here",
        )
    if isinstance(exc, UnexpectedToken) and exc.token.type != "$END":
        tok = exc.token
        span = _token_span(source.path, tok)
        if set(exc.accepts or exc.expected) == {"NGINX_BODY"}:  # the body regex found no closing brace
            return error("MTLS038", span, "this `nginx` block does not end where nginx would end it",
                         "close every quote inside it, and end it with `}`; nested blocks are not allowed",
                         label="the block starting here")
        expected = exc.accepts or exc.expected
        word = _WORD.match(source.text, tok.start_pos) if tok.start_pos is not None else None
        if word and len(word[0]) > len(str(tok.value)) and word[0].startswith(str(tok.value)) and "\n" not in word[0]:
            # the fallback lexer may have cut a misspelt keyword short (`clear_headrs` read as
            # the host name `clear`): quote and underline the whole word
            span = Span(source.path, tok.line, tok.column, tok.line, tok.column + len(word[0]))
            tok = tok.update(value=word[0])
        keyword = closest_keyword(str(tok.value), expected)
        if keyword:
            return error(
                "MTLS003", span, f"unexpected `{tok.value}`",
                f"did you mean `{keyword}`? (expected {_describe_expected(expected)})", label="not a keyword here",
            )
        listed = _misspelt_before(source.text, exc)
        if listed:
            prev, keyword = listed
            after = f"`{tok.value}`" if len(str(tok.value)) <= 24 else "what follows it"
            return error(
                "MTLS003", _token_span(source.path, prev), f"`{prev.value}` is read as a name: is it a misspelt `{keyword}`?",
                f"did you mean `{keyword}`? a list of names runs up to the next statement, so a misspelt statement "
                f"reads as one more name, and then {after} is unexpected",
                label="read as a name",
            )
        return error(
            "MTLS003", span, f"unexpected `{tok.value}`",
            f"expected {_describe_expected(expected)}", label="not expected here",
        )
    expected = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or ()
    lines = source.text.splitlines() or [""]
    end = Span(source.path, len(lines), len(lines[-1]) + 1, len(lines), len(lines[-1]) + 1)
    return error(
        "MTLS004", end, "unexpected end of file",
        f"expected {_describe_expected(expected)}; is a `}}` missing?", label="the file ends here",
    )
