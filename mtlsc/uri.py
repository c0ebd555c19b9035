"""How nginx turns a request target into the path it matches locations against.

Measured on nginx 1.22 (ngx_http_parse_complex_uri, nginx-facts §2) and held to it by the
differential tests: mtlsc's model, `mtlsc test` and the tests all match routes on this path,
while the backend receives the target exactly as the client sent it.
"""

from __future__ import annotations

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
