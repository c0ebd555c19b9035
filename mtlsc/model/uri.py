"""How nginx turns a request target into the path it matches locations against.

Measured on nginx 1.22 (ngx_http_parse_complex_uri, docs/nginx-facts.md §2) and held to it by the
differential tests: mtlsc's model, `mtlsc test` and the tests all match routes on this path.

Also the two halves of "what nginx judged is what the backend serves" (docs/language.md "Paths"):
`NONCANONICAL` lists the raw request targets refused before any route runs, and
`forwarded_target` is what the backend receives for the others (each location's proxy_pass
carries a URI part, so nginx forwards the normalised path, never the raw target).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEX = frozenset(b"0123456789abcdefABCDEF")


def _path_bytes(raw: bytes) -> list[tuple[int, bool]]:
    """Percent-decode like ngx_http_parse_complex_uri: (byte, literal) pairs up to `?` or `#`.

    A decoded `%`, `#` or `?` is plain data (literal); every other decoded byte then acts exactly
    like the raw byte, so `%2F` is a slash and `%2E%2E` a `..` segment."""
    out, i = [], 0
    while i < len(raw) and raw[i] not in b"?#":
        if raw[i] != 0x25:
            out.append((raw[i], False))
            i += 1
            continue
        pair = raw[i + 1 : i + 3]
        if len(pair) < 2 or not set(pair) <= _HEX:
            raise ValueError(f"`{raw[i:i + 3].decode(errors='replace')}` is not a `%XX` escape")
        value = int(pair, 16)
        if value == 0:
            raise ValueError("`%00` in a path")
        out.append((value, value in b"%#?"))
        i += 3
    return out


def _up(out: bytearray) -> None:
    """`out` ends with `/..`: remove it and the segment before it."""
    i = len(out) - 4
    while i >= 0 and out[i] != 0x2F:
        i -= 1
    if i < 0:
        raise ValueError("`..` climbs above `/`")
    del out[i + 1 :]


def normalise_path(raw: str) -> str:
    """The path nginx matches locations against, for a request target as sent: percent-decoded,
    `//` merged (merge_slashes), `.` and `..` segments resolved, query and fragment dropped.

    Raises ValueError when nginx answers 400 instead (bad escape, `%00`, `..` above the root).
    The backend still receives the target as sent: proxy_pass without a URI passes it unchanged.
    """
    if not raw.startswith("/"):
        raise ValueError("a request path starts with `/`")
    if any(c <= " " or c == "\x7f" for c in raw):
        raise ValueError("a request line cannot hold spaces or control characters")
    out, state = bytearray(), "usual"
    for b, literal in _path_bytes(raw.encode("utf-8")):
        c = None if literal else b
        if c == 0x2F:
            if state == "slash":
                continue  # merge_slashes
            if state == "dot":
                out.pop()  # "/./" -> "/"
            elif state == "dotdot":
                _up(out)  # "/a/../" -> "/"
            else:
                out.append(b)
            state = "slash"
        elif c == 0x2E and state in ("slash", "dot"):
            out.append(b)
            state = "dot" if state == "slash" else "dotdot"
        else:
            out.append(b)
            state = "usual"
    if state == "dot":
        out.pop()
    elif state == "dotdot":
        _up(out)
    return out.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class TargetRule:
    """A raw-target form nginx and a backend may read differently: refused with 400."""

    why: str
    pattern: str  # PCRE and Python alike, over `$request_uri`; only the path part (before ? or #)
    semicolon: bool = False  # waived by `backend_paths literal_semicolons`


# Checked on $request_uri, the target exactly as sent (a backend sees these forms if anything
# forwards the raw target, and frameworks disagree on them: docs/nginx-facts.md §F1-F2).
NONCANONICAL = (
    TargetRule("a `.` or `..` segment", r"^[^?#]*/\.\.?(?:[/?#]|$)"),
    TargetRule("an encoded `.`, `/`, `\\`, `%`, `;`, NUL or overlong UTF-8 byte",
               r"^[^?#]*%(?:2[eEfF]|5[cC]|25|3[bB]|00|[cC][01])"),
    TargetRule("a backslash", r"^[^?#]*\\"),
    TargetRule("a `;` path parameter (Tomcat and Spring strip it)", r"^[^?#]*;", semicolon=True),
)
_RULES = tuple((rule, re.compile(rule.pattern)) for rule in NONCANONICAL)


def target_problem(raw: str, literal_semicolons: bool = False) -> str | None:
    """Why nginx refuses the raw request target `raw` before routing it (mtlsc's gate), or None."""
    for rule, rx in _RULES:
        if rule.semicolon and literal_semicolons:
            continue
        if rx.search(raw):
            return rule.why
    return None


# ngx_escape_uri(NGX_ESCAPE_URI): space, `#`, `%`, `?`, control characters and non-ASCII bytes.
_ESCAPED = frozenset(b" #%?\x7f") | frozenset(range(0x20)) | frozenset(range(0x80, 0x100))


def forwarded_target(raw: str) -> str:
    """The request target the backend receives through `proxy_pass http://b/p/;` in `location ^~
    /p/` (or `= /p`): the normalised path, re-escaped only when the client's path held a `%`
    escape (nginx's quoted_uri), then `?` and the query as sent up to any `#` (when not empty).
    Raises ValueError where nginx answers 400 itself."""
    path = normalise_path(raw)
    end = min((i for i in (raw.find("?"), raw.find("#")) if i >= 0), default=len(raw))
    if "%" in raw[:end]:
        data = path.encode("utf-8", "surrogateescape")
        path = "".join(f"%{b:02X}" if b in _ESCAPED else chr(b) for b in data)
    query = raw[end + 1:].split("#", 1)[0] if end < len(raw) and raw[end] == "?" else ""
    return path + ("?" + query if query else "")
