"""Helpers shared by the lowering modules: collecting diagnostics, resolving names."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field

from mtlsc import ast
from mtlsc.diagnostics import Diagnostic, Related, error
from mtlsc.emit import quote


@dataclass
class Ctx:
    diags: list[Diagnostic] = field(default_factory=list)
    # (kind, name) of blocks that are defined but were refused: a reference to one is not
    # "unknown" (that would tell the user to define what is already there), the block's own
    # error says what to fix
    refused: set[tuple[str, str]] = field(default_factory=set)

    def err(self, code, span, message, help="", label="", related=()):
        self.diags.append(error(code, span, message, help, label, related))


def once(ctx: Ctx, body, kind, block_name: str):
    """The single statement of type `kind` in a block, or None; a second one is an error."""
    found = [s for s in body if isinstance(s, kind)]
    for extra in found[1:]:
        keyword = getattr(kind, "keyword", kind.__name__.lower())
        ctx.err("MTLS013", extra.span, f"`{keyword}` is given twice in {block_name}",
                "keep one", related=[Related(found[0].span, "first given here")])
    return found[0] if found else None


def suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"did you mean `{close[0]}`?" if close else ""


def resolve(ctx: Ctx, word: ast.Word, table: dict, kind: str, code: str):
    if word.value in table:
        return table[word.value]
    if (kind, word.value) in ctx.refused:
        return None
    defined = set(table) | {name for k, name in ctx.refused if k == kind}
    hint = suggest(word.value, defined) or f"define it with `{kind} {word.value} {{ ... }}`"
    ctx.err(code, word.span, f"unknown {kind} `{word.value}`", hint, label=f"no {kind} of this name")
    return None


def file_path(ctx: Ctx, s: ast.Str, policy_path: str) -> str:
    """A file named by the policy, resolved against the policy's directory."""
    problem = quote.path_problem(s.value)
    if problem:
        ctx.err("MTLS020", s.span, f"the path {problem}", "rename the file")
    # Relative to the policy file, and relative to the working directory when the policy path is:
    # messages and outputs then show the paths the user typed, on any machine.
    return os.path.normpath(os.path.join(os.path.dirname(policy_path), s.value))


def nginx_string(ctx: Ctx, s: ast.Str, what: str, reserve: int = 0) -> str:
    """A string that will be placed in nginx config: refused when it cannot be made safe, or would
    make an argument longer than nginx reads (`reserve`: bytes mtlsc adds to that argument)."""
    problem = quote.text_problem(s.value) or quote.length_problem(s.value, reserve)
    if problem:
        ctx.err("MTLS020", s.span, f"{what} {problem}", "nginx config cannot hold this string safely; change it")
    return s.value
