"""Rewrite a policy for a lab: same CAs, identities and routes; local ports, files and backend.

Works on the source text through the AST's spans, so everything the user wrote (comments,
order, identities) stays as it is and only the deployment details change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mtlsc import ast
from mtlsc.source import Source, Span


@dataclass(frozen=True, slots=True)
class CaFiles:
    """Where the lab's copy of a policy finds one CA's files, in the order the policy names them."""

    bundle: tuple[str, ...]
    crls: tuple[str, ...]


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rewrite_for_lab(source: Source, tree: ast.PolicyFile, *, port_for, cert_dir: str,
                    backend: str, install_dir: str, ocsp_responder: str | None = None,
                    resolver: str | None = None, ca_files: Mapping[str, CaFiles] | None = None,
                    add_responder: bool = False, key_pins: Mapping[str, str] | None = None) -> str:
    """Every `listen X` of server N becomes `listen 127.0.0.1:port_for(N, X)` (X = "443" when the
    server has no listen); certificates become `cert_dir/<N>_<port>.crt|.key`, every backend
    `backend`, every install dir `install_dir`, every OCSP `responder` `ocsp_responder` and the
    `resolver`'s DNS servers the one `resolver`, when given: the lab asks nothing off loopback.
    The `bundle` and `crl` files of a CA in `ca_files` become the ones named there, so the lab
    never writes where the policy points. `add_responder`: an `ocsp` line without a `responder`
    gets `ocsp_responder` (the user's own certificates name the user's responder, or none).
    `key_pins[identity]` replaces the value of that identity's `fingerprint spki`: the lab pins a
    key it holds, as only the holder of the policy's key could make a certificate that matches."""
    text = source.text
    starts = _line_starts(text)  # once: a policy with a backend per route has thousands of edits

    def _offset(_text: str, line: int, col: int) -> int:
        return starts[line - 1] + col - 1

    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) offsets into text

    def replace(span: Span, value: str) -> None:
        edits.append((_offset(text, span.line, span.col), _offset(text, span.end_line, span.end_col), value))

    for item in tree.items:
        if isinstance(item, ast.Resolver) and resolver is not None:
            first, last = item.addresses[0].span, item.addresses[-1].span
            edits.append((_offset(text, first.line, first.col), _offset(text, last.end_line, last.end_col),
                          _quoted(resolver)))
        elif isinstance(item, ast.Identity) and item.name.value in (key_pins or {}):
            for stmt in (s for s in item.body if isinstance(s, ast.Fingerprint)):
                replace(stmt.value.span, _quoted(key_pins[item.name.value]))
        elif isinstance(item, ast.Ca):
            files = (ca_files or {}).get(item.name.value)
            for stmt in item.body:
                if isinstance(stmt, ast.Ocsp) and ocsp_responder is not None:
                    if stmt.responder is not None:
                        replace(stmt.responder.span, _quoted(ocsp_responder))
                    elif add_responder:
                        end = _offset(text, stmt.mode.span.end_line, stmt.mode.span.end_col)
                        edits.append((end, end, f" responder {_quoted(ocsp_responder)}"))
                elif isinstance(stmt, (ast.Bundle, ast.Leaf, ast.Crl)) and files is not None:
                    paths = files.crls if isinstance(stmt, ast.Crl) else files.bundle
                    for written, path in zip(stmt.files, paths):
                        replace(written.span, _quoted(path))
    for server in (i for i in tree.items if isinstance(i, ast.Server)):
        name = server.names[0].value.lower()
        listens = [s for s in server.body if isinstance(s, ast.Listen)]
        port = port_for(name, listens[0].address.value if listens else "443")
        for stmt in listens:
            replace(stmt.address.span, f"127.0.0.1:{port_for(name, stmt.address.value)}")
        added = ([] if listens else [f"listen 127.0.0.1:{port}"]) + (
            [] if any(isinstance(s, ast.Install) for s in server.body) else [f"install {_quoted(install_dir)}"])
        if added:
            last = server.names[-1].span
            brace = text.index("{", _offset(text, last.end_line, last.end_col)) + 1
            edits.append((brace, brace, " " + "  ".join(added) + " "))
        for stmt in server.body:
            if isinstance(stmt, ast.Certificate):
                slug = f"{name.replace('*', 'wildcard')}_{port}"
                replace(stmt.cert.span, _quoted(f"{cert_dir}/{slug}.crt"))
                replace(stmt.key.span, _quoted(f"{cert_dir}/{slug}.key"))
            elif isinstance(stmt, ast.Install):
                replace(stmt.directory.span, _quoted(install_dir))
            elif isinstance(stmt, ast.Backend):
                replace(stmt.url.span, _quoted(backend))
            elif isinstance(stmt, ast.Route):
                for r in (s for s in stmt.body if isinstance(s, ast.Backend)):
                    replace(r.url.span, _quoted(backend))
    out, done = [], 0
    for start, end, value in sorted(edits):  # one pass: edits never overlap
        out += [text[done:start], value]
        done = end
    return "".join(out) + text[done:]
