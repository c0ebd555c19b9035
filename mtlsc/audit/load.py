"""Reading the configuration to audit: a main file and what it includes, or an `nginx -T` dump,
without ever stopping at the first problem. A file that cannot be read or that nginx would refuse
to parse is one located MTLS500; the rest is still audited."""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field

from mtlsc import files as mtlsc_files
from mtlsc.audit.report import finding
from mtlsc.diagnostics import Diagnostic
from mtlsc.nginx_conf import (DUMP_MARK, MAX_INCLUDE_DEPTH, MTLSC_HEADER, ConfError, Directive, Loaded, load_files,
                              parse, split_dump)
from mtlsc.source import Source, Span, point

STDIN = "<stdin>"


@dataclass
class Input:
    loaded: list[Loaded] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, Source] = field(default_factory=dict)
    io_error: bool = False  # nothing at all could be read: exit 2


def _template_hint(text: str, line: int) -> str:
    lines = text.split("\n")
    here = lines[line - 1] if 0 < line <= len(lines) else ""
    if any(mark in here for mark in ("{{", "}}", "{%", "%}", "<%")):
        return "; this line looks like an unrendered template: audit the rendered configuration (`nginx -T`)"
    return ""


_LUA_BLOCK = re.compile(r"(?m)^[ \t]*[a-z_]+_by_lua_block[ \t]*\{")


def blank_lua(text: str) -> str:
    """`*_by_lua_block { ... }` holds Lua, which OpenResty's own reader skips by brace counting:
    blank the code (line breaks kept, so positions stay) so the rest can be read with nginx's rules."""
    out, pos = [], 0
    for m in _LUA_BLOCK.finditer(text):
        if m.start() < pos:
            continue
        i, depth, n = m.end(), 1, len(text)
        while i < n and depth:
            ch = text[i]
            if ch in "\"'":
                j = i + 1
                while j < n and text[j] != ch and text[j] != "\n":
                    j += 2 if text[j] == "\\" else 1
                i = j + 1
                continue
            if text.startswith("--", i):
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            depth += {"{": 1, "}": -1}.get(ch, 0)
            i += 1
        if depth:
            break  # unbalanced: let the reader report it
        out.append(text[pos:m.end()])
        out.append("".join(c if c == "\n" else " " for c in text[m.end():i - 1]))
        pos = i - 1
    out.append(text[pos:])
    return "".join(out)


def _conf_error(exc: ConfError, path: str, text: str) -> Diagnostic:
    span = Span(exc.path or path, exc.line, exc.col, exc.line, exc.col + 1)
    return finding("MTLS500", span, f"nginx would refuse this file: {exc.message}",
                   "fix the syntax (`nginx -t` shows the same place)" + _template_hint(text, exc.line),
                   label="here")


def _walk(items):
    for d in items:
        if isinstance(d, Directive):
            yield d
            if d.block is not None:
                yield from _walk(d.block)


def _include_targets(d: Directive, prefix: str) -> str:
    arg = d.args[0]
    return os.path.normpath(arg if os.path.isabs(arg) else os.path.join(prefix, arg))


def _read_disk(main: str, out: Input) -> dict[str, str]:
    """Every file the main config includes, read from disk; parse errors and unreadable
    includes reported, those files left out (nginx would stop there; the audit goes on)."""
    texts: dict[str, str] = {}
    prefix = os.path.dirname(main)
    todo: list[tuple[str, Directive | None]] = [(main, None)]
    for _ in range(MAX_INCLUDE_DEPTH + 1):
        nxt: list[tuple[str, Directive | None]] = []
        for name, by in todo:
            if name in texts:
                continue
            try:
                text = mtlsc_files.read_text(name)
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                where = _span_of_include(by) if by is not None else point(name)
                out.diagnostics.append(finding("MTLS500", where, f"cannot read `{name}`: {reason}",
                                               "check the path and permissions, or audit `nginx -T` output "
                                               "(`nginx -T | mtlsc audit -`)"))
                if by is None:
                    out.io_error = True
                continue
            texts[name] = text
            try:
                items = parse(_readable(text), name)
            except ConfError:
                continue  # reported with the others below
            for d in _walk(items):
                if d.name == "include" and d.block is None and len(d.args) == 1:
                    pattern = _include_targets(d, prefix)
                    if any(ch in pattern for ch in "*?["):
                        nxt += [(found, d) for found in sorted(glob.glob(pattern))]
                    else:
                        nxt.append((pattern, d))
        todo = nxt
        if not todo:
            break
    return texts


def _span_of_include(d: Directive) -> Span:
    w = d.words[-1]
    return Span(d.path, w.line, w.col, w.end_line, w.end_col)


def _readable(text: str) -> str:
    """The text to parse: Lua blanked; mtlsc's own files audited like any other (nginx_conf leaves
    them out when fitting mtlsc's output to a config, by their first line: shifted by a space here,
    which moves no line)."""
    text = blank_lua(text)
    return " " + text if text.startswith(MTLSC_HEADER) else text


def _loaded(main: str, texts: dict[str, str], origin: str, out: Input) -> None:
    for name, text in texts.items():
        out.sources[name] = Source(name, text)
    usable = {}
    for name, text in texts.items():
        try:
            parse(_readable(text), name)
            usable[name] = _readable(text)
        except ConfError as exc:
            out.diagnostics.append(_conf_error(exc, name, text))
    if main not in usable:
        return
    try:
        out.loaded.append(load_files(main, usable, origin))
    except ConfError as exc:  # an include loop
        out.diagnostics.append(_conf_error(exc, main, texts.get(exc.path, "")))


def read_inputs(paths: list[str], stdin_text: str | None = None) -> Input:
    out = Input()
    for path in paths:
        if path == "-":
            text = stdin_text or ""
            if any(line.startswith(DUMP_MARK) and line.endswith(":") for line in text.split("\n")):
                try:
                    main, texts = split_dump(text)
                except ConfError as exc:
                    out.diagnostics.append(_conf_error(exc, STDIN, text))
                    continue
                _loaded(main, texts, "nginx -T", out)
            else:
                _loaded(STDIN, {STDIN: text}, STDIN, out)
            continue
        main = os.path.normpath(path)  # as given: diagnostics then name files the way the user does
        _loaded(main, _read_disk(main, out), main, out)
    return out
