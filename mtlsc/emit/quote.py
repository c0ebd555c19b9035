"""The only code that turns user strings into nginx text, regexes, comments and shell words.

Every function returns `Safe`, and the Jinja environment refuses to render a plain `str`, so a
user string cannot reach a template without passing through here. Lowering calls the
`*_problem` validators first, so the emitters never meet a string they must refuse.

nginx quoting (ngx_conf_file.c): inside "...", `\\"`, `\\'` and `\\\\` are unescaped and `\\t \\r \\n`
become control characters; any other backslash pair is kept as is. `$` starts a variable in
every directive that takes a complex value (return, proxy_set_header, map values, and
ssl_certificate since 1.15.9), and nginx has no escape for it.
"""

from __future__ import annotations

import re
import shlex


class Safe(str):
    """Text already made safe for the place it is rendered into."""


class UnsafeString(ValueError):
    pass


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_IDENT = re.compile(r"[a-z0-9_]+")
# Words a map key must not be, or nginx reads them as parameters of the map block.
_MAP_SPECIAL = {"default", "hostnames", "include", "volatile"}


def text_problem(s: str) -> str | None:
    """Why `s` cannot be a quoted nginx string that nginx may interpolate, or None."""
    if _CONTROL.search(s):
        return "contains a control character (newline, tab, ...)"
    if "$" in s:
        return "contains `$`, which nginx reads as the start of a variable and cannot escape"
    return None


# nginx reads its configuration through a 4 KiB buffer and refuses one longer argument at nginx -t
# (`too long parameter`, measured on 1.22); mtlsc keeps every argument it writes below this.
TOKEN_MAX = 4000


def length_problem(s: str, reserve: int = 0) -> str | None:
    """Why `s`, quoted, is too long to be one nginx config argument, or None. `reserve`: bytes
    mtlsc adds to the same argument (a file name after a directory, `\\n` after a body)."""
    size = len(_quoted(s).encode("utf-8")) + reserve
    if size > TOKEN_MAX:
        return (f"is too long: {size} bytes in one nginx config argument, and nginx refuses arguments over "
                f"4 KiB (`too long parameter`); mtlsc allows {TOKEN_MAX}")
    return None


def path_problem(s: str) -> str | None:
    """Why `s` cannot be a file path in nginx config, or None."""
    if not s:
        return "is empty"
    return text_problem(s)


def header_problem(name: str) -> str | None:
    if "_" in name:
        return "contains `_`: nginx drops such headers by default and, with underscores_in_headers, they can be spoofed (docs/nginx-facts.md §6)"
    if not _HEADER_NAME.fullmatch(name):
        return "is not an HTTP header name (letters, digits and `-`)"
    if len(name) > 256:
        return "is longer than 256 characters"
    return None


def _quoted(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nginx_text(s: str) -> Safe:
    """A quoted argument that nginx may interpolate (paths, return bodies, header values we own)."""
    problem = text_problem(s)
    if problem:
        raise UnsafeString(f"{s!r} {problem}")
    return Safe(_quoted(s))


def map_key(s: str) -> Safe:
    """An exact (hashed, case-insensitive) `map` key. Keys are literal: `$` is not interpolated."""
    if _CONTROL.search(s):
        raise UnsafeString(f"{s!r} contains a control character")
    if s.startswith("~") or s.lower() in _MAP_SPECIAL or s.startswith("\\"):
        s = "\\" + s  # a leading backslash makes nginx read the rest literally
    return Safe(_quoted(s))


def map_key_folded(key: Safe) -> bytes:
    """What nginx tells `map_key`s apart by: it lowercases ASCII letters only, at load and lookup."""
    return str(key).encode().lower()


def map_regex(pattern: str) -> Safe:
    """A case-sensitive `map` regex key. nginx unescapes `\\\\` in quotes, so every backslash doubles."""
    if _CONTROL.search(pattern):
        raise UnsafeString(f"{pattern!r} contains a control character")
    return Safe(_quoted("~" + pattern))


def header_name(name: str) -> Safe:
    problem = header_problem(name)
    if problem:
        raise UnsafeString(f"{name!r} {problem}")
    return Safe(name)


def ident(s: str) -> Safe:
    """A name mtlsc builds for nginx variables: lower-case letters, digits and `_` only."""
    if not _IDENT.fullmatch(s):
        raise UnsafeString(f"{s!r} is not a variable-safe identifier")
    return Safe(s)


def ident_from(s: str) -> Safe:
    """Fold any name into an identifier (`api.example.com_443` -> `api_example_com_443`)."""
    return ident(re.sub(r"[^a-z0-9_]", "_", s.lower()))


def bare(s: str) -> Safe:
    """A value mtlsc itself validated to a closed syntax (ports, addresses, hostnames, paths)."""
    if _CONTROL.search(s) or re.search(r"[\s;{}\"'$\\#]", s):
        raise UnsafeString(f"{s!r} cannot be written unquoted")
    return Safe(s)


COMMENT_MAX = 200


def comment(s: str) -> Safe:
    """Text for a `# ...` comment: one line, control characters replaced, and short: nginx reads a
    comment as one token and refuses tokens longer than its 4 KiB config buffer."""
    s = _CONTROL.sub("?", s)
    return Safe(s if len(s) <= COMMENT_MAX else s[: COMMENT_MAX - 3] + "...")


def shell_word(s: str) -> Safe:
    return Safe(shlex.quote(s))


def nginx_body(s: str) -> Safe:
    """A `return` body: the text plus a newline, which nginx writes as `\\n` inside quotes."""
    quoted = nginx_text(s)
    return Safe(quoted[:-1] + '\\n"')


def nginx_var(name: str) -> Safe:
    """A reference to a variable mtlsc defined or one of nginx's own (`$ssl_client_s_dn`)."""
    return Safe("$" + ident(name))


def nginx_concat(*names: str) -> Safe:
    """A quoted map source joining variables: `"$a:$b"` (`:` ends a variable name)."""
    return Safe('"' + ":".join("$" + ident(n) for n in names) + '"')


_WORD = re.compile(r"[A-Za-z0-9._~!&*+,=:@/-]+")


def nginx_word(s: str) -> Safe:
    """An argument nginx does not interpolate (a location path): bare when plain, else quoted."""
    if _WORD.fullmatch(s):
        return Safe(s)
    if _CONTROL.search(s):
        raise UnsafeString(f"{s!r} contains a control character")
    return Safe(_quoted(s))


def markdown_cell(s: str) -> Safe:
    """Text for one Markdown table cell: one line, `|` escaped."""
    return Safe(_CONTROL.sub(" ", s).replace("|", "\\|"))


def nginx_directive(words: tuple[str, ...]) -> Safe:
    """A user's own directive from an `nginx { }` block (already checked by lowering): its words as
    written, on one line. Read back with nginx's tokenizer rules it must be that one simple directive
    with those words, or it is refused here: it can never close a block or add a directive."""
    from mtlsc.nginx_conf import ConfError, Directive, parse

    text = " ".join(words) + ";"
    try:
        items = parse(text)
    except ConfError as exc:
        raise UnsafeString(f"{text!r}: {exc.message}") from None
    if (len(items) != 1 or not isinstance(items[0], Directive) or items[0].block is not None
            or tuple(w.raw for w in items[0].words) != tuple(words) or _CONTROL.search(text)):
        raise UnsafeString(f"{text!r} is not one nginx directive")
    return Safe(text)
