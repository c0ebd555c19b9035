"""`mtlsc fmt`: one canonical layout for `.mtls` files (docs/language.md, "Formatting").

The AST gives the structure; a second pass of the same contextual lexer gives every token with its
position, comments included. The printer walks the AST in source order and consumes that token stream
with a cursor, so each comment lands in the gap where the user wrote it. Nothing is ever reordered.
Before anything is written, the output is lexed and parsed again and must give the same tokens (strings
compared by value) and the same comments, hence the same AST (black's safety check): a formatter bug
can never change a policy, it is reported instead.
"""

from __future__ import annotations

import difflib
import functools
import os
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from lark import Lark, Token
from lark.exceptions import UnexpectedInput

from mtlsc import ast, files
from mtlsc.diagnostics import Diagnostic, error
from mtlsc.parse import parse, unescape
from mtlsc.render import render
from mtlsc.review.fmt_layout import (  # noqa: F401 (quote: re-exported)
    _BLOCKS, _LIST_WORDS, INDENT, WIDTH, _flat, _header, _list, _nginx_block_lines, _nginx_meaning, quote,
)
from mtlsc.source import Source, point

_sink = threading.local()


def _collect(tok: Token) -> Token:
    _sink.tokens.append(tok)
    return tok


@functools.cache
def _token_parser() -> Lark:
    """The grammar once more, keeping keyword tokens in the tree and reporting comments.

    Only COMMENT gets a lexer callback: lark 1.3 chains user callbacks onto its keyword
    callbacks with a late-bound loop variable, so a NAME callback would miss tokens."""
    grammar = resources.files("mtlsc.grammar").joinpath("mtls.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", keep_all_tokens=True, lexer_callbacks={"COMMENT": _collect})


def _tokens(text: str) -> list[Token]:
    """Every token of a text that parses, comments included, in source order."""
    _sink.tokens = []
    try:
        tree = _token_parser().parse(text)
        code = [v for v in tree.scan_values(lambda v: isinstance(v, Token))]
        return sorted(code + _sink.tokens, key=lambda t: t.start_pos)
    finally:
        _sink.tokens = []


@dataclass
class _Line:
    indent: int
    text: str
    blank_before: bool = False
    comment: str = ""

    def render(self) -> str:
        return INDENT * self.indent + self.text + (f"  {self.comment}" if self.comment else "")


def _comment(tok: Token) -> str:
    return tok.value.rstrip()


class _Printer:
    """Walks the AST in order; `pos` is the first token of the stream not yet printed."""

    def __init__(self, toks: list[Token]):
        self.toks = toks
        self.starts = {(t.line, t.column): i for i, t in enumerate(toks)}
        self.ends = {(t.end_line, t.end_column): i for i, t in enumerate(toks)}
        self.pos, self.last_line, self.out = 0, 1, []

    def first(self, node) -> int:
        return self.starts[(node.span.line, node.span.col)]

    def last(self, node) -> int:
        return self.ends[(node.span.end_line, node.span.end_col)]

    def comments(self, a: int, b: int) -> list[Token]:
        return [t for t in self.toks[a : b + 1] if t.type == "COMMENT"]

    def line(self, a: int, b: int, indent: int, text: str, first_blank: str = "keep",
             comment_indent: int | None = None, code_blank: bool | None = None, gaps: bool = True) -> None:
        """Print tokens a..b as one line. Comments still pending before `a` go on their own lines
        first; comments between a and b are hoisted above the line; a comment right after b on
        its source line stays at the end of the line. `first_blank` ("keep", "never", "force")
        decides the blank line before the first line printed; later ones keep the user's."""
        state = {"first": True}

        def blank(src_line: int) -> bool:
            gap = gaps and src_line - self.last_line >= 2
            if state["first"]:
                state["first"] = False
                return {"keep": gap, "never": False, "force": True}[first_blank]
            return gap

        for t in self.toks[self.pos : a]:
            assert t.type == "COMMENT", f"fmt skipped {t.type} at {t.line}:{t.column}"
            self.out.append(_Line(indent if comment_indent is None else comment_indent, _comment(t), blank(t.line)))
            self.last_line = t.end_line
        start = self.toks[a].line
        for j, t in enumerate(self.comments(a, b)):
            self.out.append(_Line(indent, _comment(t), blank(start) if j == 0 else False))
            self.last_line = start
        code = blank(start)
        end, self.pos = self.toks[b].end_line, b + 1
        trailing = ""
        if self.pos < len(self.toks) and self.toks[self.pos].type == "COMMENT" and self.toks[self.pos].line == end:
            trailing, self.pos = _comment(self.toks[self.pos]), self.pos + 1
        self.out.append(_Line(indent, text, code if code_blank is None else code_blank, trailing))
        self.last_line = end

    # ---- layout decisions: each depends only on what the output keeps, so fmt is idempotent
    def braces(self, node) -> tuple[int, int]:
        lb = self.last(_header(node)[1]) + 1
        while self.toks[lb].type != "LBRACE":
            lb += 1
        return lb, self.last(node)

    def one_line_block(self, node, indent: int) -> bool:
        """Empty blocks are `{}`. A route or identity stays on one line if the user wrote its
        braces on one line, it holds no comment and it fits; ca and server never do."""
        lb, rb = self.braces(node)
        if self.comments(lb, rb):
            return False
        if not node.body:
            return True
        if isinstance(node, (ast.Ca, ast.Server)) or self.toks[lb].line != self.toks[rb].end_line:
            return False
        return len(INDENT * indent) + len(self.block_text(node)) <= WIDTH

    def block_text(self, node) -> str:
        body = "  ".join(_flat(s) for s in node.body)
        return _header(node)[0] + (f" {{ {body} }}" if body else " {}")

    def one_line_list(self, node, indent: int) -> bool:
        """A list statement stays on one line if the user wrote it on one line and it fits."""
        a, b = self.first(node), self.last(node)
        return (self.toks[a].line == self.toks[b].end_line and not self.comments(a, b)
                and len(INDENT * indent) + len(_flat(node)) <= WIDTH)

    # ---- printing
    def statement(self, node, indent: int, first_blank: str = "keep") -> None:
        if isinstance(node, _BLOCKS):
            return self.block(node, indent, first_blank)
        a, b = self.first(node), self.last(node)
        if isinstance(node, ast.NginxBlock):
            return self.line(a, b, indent, _nginx_block_lines(node, indent), first_blank)
        if type(node) not in _LIST_WORDS or self.one_line_list(node, indent):
            return self.line(a, b, indent, _flat(node), first_blank)
        keyword, items = _list(node)
        self.line(a, a, indent, keyword, first_blank)
        for text, item in items:
            self.line(self.first(item), self.last(item), indent + 1, text, gaps=False)

    def block(self, node, indent: int, first_blank: str = "keep") -> None:
        a, (lb, rb) = self.first(node), self.braces(node)
        if self.one_line_block(node, indent):
            return self.line(a, rb, indent, self.block_text(node), first_blank)
        self.line(a, lb, indent, _header(node)[0] + " {", first_blank)
        for i, stmt in enumerate(node.body):
            self.statement(stmt, indent + 1, "never" if i == 0 else "keep")
        self.line(rb, rb, indent, "}", "keep" if node.body else "never", comment_indent=indent + 1, code_blank=False)

    def policy(self, tree: ast.PolicyFile) -> str:
        prev_multi = False
        for item in tree.items:
            multi = isinstance(item, _BLOCKS) and not self.one_line_block(item, 0)
            self.statement(item, 0, "force" if (multi or prev_multi) and self.out else "keep")
            prev_multi = multi
        for t in self.toks[self.pos :]:  # comments after the last item
            self.out.append(_Line(0, _comment(t), t.line - self.last_line >= 2))
            self.last_line = t.end_line
        lines = []
        for i, ln in enumerate(self.out):
            if ln.blank_before and i:
                lines.append("")
            lines.append(ln.render())
        return "".join(line + "\n" for line in lines)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _meaning(toks: list[Token]) -> tuple[list, Counter]:
    """What fmt must keep: the code tokens (strings by value) in order, and the comments."""
    code = [(t.type, unescape(t.value) if t.type == "STRING" else _nginx_meaning(t.value) if t.type == "NGINX_BODY"
             else t.value) for t in toks if t.type != "COMMENT"]
    return code, Counter(_comment(t) for t in toks if t.type == "COMMENT")


def format_text(source: Source) -> tuple[str | None, list[Diagnostic]]:
    """The canonical text of one policy file, or None and the syntax error when it does not
    parse. Line endings are normalised to `\\n` first."""
    source = Source(source.path, _normalise_newlines(source.text))
    tree, diags = parse(source)
    if tree is None:
        return None, diags
    toks = _tokens(source.text)
    try:
        out = _Printer(toks).policy(tree)
        # The same token types and values (hence the same parse tree and AST) and the same comments.
        same = _meaning(_tokens(out)) == _meaning(toks)
    except (UnexpectedInput, AssertionError, KeyError, TypeError):  # a bug in the printer, not in the file
        same = False
    if not same:
        return None, [error("MTLS902", point(source.path),
                            "mtlsc fmt would change this policy's meaning; the file is left as it is",
                            "this is a bug in `mtlsc fmt`: please report it with the file")]
    return out, []


class FmtResult(NamedTuple):
    code: int  # 0 ok; 1 files would change (--check / --diff); 2 unreadable file or syntax error
    out: str  # stdout: the changed files, one per line, or the unified diff
    err: str  # stderr: diagnostics


def policy_files(paths) -> list[str]:
    """The files to format: each PATH, or every `*.mtls` under a directory (hidden ones skipped)."""
    found: list[str] = []
    for p in map(str, paths):
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [os.path.join(root, f) for f in sorted(files) if f.endswith(".mtls") and not f.startswith(".")]
        else:
            found.append(p)
    return list(dict.fromkeys(found))


def format_paths(paths, check: bool = False, diff: bool = False, write: bool | None = None) -> FmtResult:
    """`mtlsc fmt [--check] [--diff] PATH...`. Without flags files are rewritten in place and
    listed; `check` lists the files that would change, `diff` prints a unified diff; both write
    nothing and exit 1 when anything would change."""
    write = not (check or diff) if write is None else write
    out, diags, sources, changed, broken = [], [], {}, 0, False
    for path in policy_files(paths):
        try:
            raw = files.read_text(path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            diags.append(error("MTLS900", point(path), f"cannot read the policy file: {reason}",
                               "check the path; policy files are UTF-8 text"))
            broken = True
            continue
        sources[path] = Source(path, _normalise_newlines(raw))
        formatted, found = format_text(sources[path])
        if formatted is None:
            diags, broken = diags + found, True
            continue
        if formatted == raw:
            continue
        changed += 1
        if diff:
            out.append(_diff(path, raw, formatted))
        if write:
            try:
                _write_atomic(Path(path), formatted)
            except OSError as exc:
                diags.append(error("MTLS902", point(path), f"cannot write the policy file: {exc.strerror or exc}",
                                   "check the permissions of the file and its directory"))
                broken = True
                continue
        if not diff:
            out.append(path + "\n")
    code = 2 if broken else 1 if changed and not write else 0
    return FmtResult(code, "".join(out), render(diags, sources) if diags else "")


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    return lines + ([parts[-1] + "\n\\ No newline at end of file\n"] if parts[-1] else [])


def _diff(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(_lines(old), _lines(new), f"a/{path}", f"b/{path}"))


def _write_atomic(path: Path, text: str) -> None:
    """Write beside the file, keep its permissions, then rename over it: never half a policy."""
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
