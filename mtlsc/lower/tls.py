"""Lowering of a server's own TLS: `tls PROFILE`, `hsts ...` and `stapling on|off`
(docs/language.md "Server TLS"). Defaults: Mozilla's `intermediate`, HSTS for two years, no stapling.
"""

from __future__ import annotations

import difflib
import re

from mtlsc import ast, ir
from mtlsc.diagnostics import Related
from mtlsc.lower.common import Ctx, once, suggest
from mtlsc.parse import LIST_TYPO_CUTOFF, keywords_after
from mtlsc.tls_profiles import PROFILES

HSTS_OPTIONS = ("include_subdomains", "preload")
# What hstspreload.org asks of the header before it takes a domain into browsers' preload lists.
PRELOAD_MIN_AGE = 31536000  # one year
HSTS_MAX_AGE = 2**31 - 1
_UNITS = {"": 1, "s": 1, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_QUANTITY = re.compile(r"([0-9]+)([A-Za-z]*)")


def lower_server_tls(ctx: Ctx, body, where: str) -> ir.ServerTls:
    tls = once(ctx, body, ast.Tls, where)
    hsts = once(ctx, body, ast.Hsts, where)
    stapling = once(ctx, body, ast.Stapling, where)
    out = ir.ServerTls()
    if tls is not None:
        name = tls.profile.value
        if name in PROFILES:
            out = ir.ServerTls(name, profile_span=tls.span)
        else:
            ctx.err("MTLS012", tls.profile.span, f"`{name}` is not a TLS profile",
                    suggest(name, PROFILES) or "use `modern`, `intermediate` (the default) or `old` (Mozilla's profiles)",
                    label="unknown profile")
    return ir.ServerTls(
        out.profile, _hsts(ctx, hsts) if hsts else ir.DEFAULT_HSTS, _stapling(ctx, stapling),
        profile_span=out.profile_span, hsts_span=hsts.span if hsts else None,
        stapling_span=stapling.span if stapling else None)


def _stapling(ctx: Ctx, stmt: ast.Stapling | None) -> bool:
    if stmt is None:
        return False
    if stmt.mode.value not in ("on", "off"):
        ctx.err("MTLS012", stmt.mode.span, f"`stapling {stmt.mode.value}` is not `on` or `off`",
                "write `stapling on` to staple the OCSP answer for the server certificate, or leave it out")
    return stmt.mode.value == "on"


def _hsts(ctx: Ctx, stmt: ast.Hsts) -> ir.Hsts | None:
    word = stmt.max_age
    if word.value == "off":
        for extra in stmt.options:
            ctx.err("MTLS012", extra.span, f"`hsts off` takes no `{extra.value}`", "remove it, or give a max-age: `hsts 2y`")
        return None
    age = _max_age(ctx, word)
    seen: dict[str, ast.Word] = {}
    for w in _options(ctx, stmt.options):
        if w.value not in HSTS_OPTIONS:
            ctx.err("MTLS012", w.span, f"`{w.value}` is not an `hsts` option",
                    suggest(w.value, HSTS_OPTIONS) or "options: `include_subdomains`, `preload`", label="unknown option")
        elif w.value in seen:
            ctx.err("MTLS013", w.span, f"`{w.value}` is given twice", "keep one",
                    related=[Related(seen[w.value].span, "first given here")])
        seen.setdefault(w.value, w)
    out = ir.Hsts(age if age is not None else ir.DEFAULT_HSTS.max_age, "include_subdomains" in seen, "preload" in seen)
    if out.preload and age is not None:
        _preload_requirements(ctx, stmt, out, seen["preload"])
    return out


def _options(ctx: Ctx, words: tuple[ast.Word, ...]) -> tuple[ast.Word, ...]:
    """The options up to a misspelt statement: `hsts` reads every name up to the next statement, so
    `hsts 2y  staplig on` reads as two options; report the statement it looks like, once."""
    statements = keywords_after("server a {")
    for i, w in enumerate(words):
        close = [] if w.value in HSTS_OPTIONS else difflib.get_close_matches(
            w.value.lower(), statements, n=1, cutoff=LIST_TYPO_CUTOFF)
        if close:
            ctx.err("MTLS003", w.span, f"`{w.value}` is read as an `hsts` option: is it a misspelt `{close[0]}`?",
                    f"did you mean `{close[0]}`? `hsts` reads every name up to the next statement, so a misspelt "
                    "statement and its arguments read as options", label="read as an option")
            return words[:i]
    return words


def _max_age(ctx: Ctx, word: ast.Word) -> int | None:
    m = _QUANTITY.fullmatch(word.value)
    if m is None:
        ctx.err("MTLS012", word.span, f"`hsts {word.value}` is neither a max-age nor `off`",
                "give how long browsers keep to HTTPS, e.g. `hsts 2y` (`s`, `h`, `d`, `w`, `y`), or `hsts off`")
        return None
    number, unit = m.groups()
    if unit not in _UNITS:
        hint = " (`m` would be minutes to nginx and months to a reader: write `180d` or `26w`)" if unit in ("m", "M") else ""
        ctx.err("MTLS012", word.span, f"`{unit}` is not a unit of `hsts`{hint}",
                "use `s`, `h`, `d`, `w` or `y` (365 days), e.g. `hsts 2y`")
        return None
    seconds = int(number) * _UNITS[unit]
    if seconds > HSTS_MAX_AGE:
        ctx.err("MTLS012", word.span, f"`hsts {word.value}` is {seconds} seconds, more than a max-age can hold",
                "two years (`hsts 2y`) is what Mozilla recommends")
        return None
    return seconds


def _preload_requirements(ctx: Ctx, stmt: ast.Hsts, hsts: ir.Hsts, preload: ast.Word) -> None:
    """MTLS040: the preload list refuses, and may later remove, a domain whose header lacks these."""
    missing = []
    if hsts.max_age < PRELOAD_MIN_AGE:
        missing.append(f"a max-age of at least one year (31536000 s; this is {hsts.max_age} s)")
    if not hsts.include_subdomains:
        missing.append("`include_subdomains`")
    if missing:
        ctx.err("MTLS040", preload.span, "`preload` needs " + " and ".join(missing),
                "the HSTS preload list (hstspreload.org) takes a domain only when its header has max-age >= 1 year, "
                "includeSubDomains and preload: write `hsts 2y include_subdomains preload`, or leave `preload` out",
                label="the preload list would refuse this header", related=[Related(stmt.span, "the `hsts` statement")])


def merge_tls(ctx: Ctx, group: list[ir.Server]) -> ir.ServerTls:
    """Blocks naming one server: each of `tls`, `hsts`, `stapling` as one declaration; blocks that
    state one must state the same."""
    fields = {}
    for value, span in (("profile", "profile_span"), ("hsts", "hsts_span"), ("stapling", "stapling_span")):
        stated = [s for s in group if getattr(s.tls, span) is not None]
        for other in stated[1:]:
            if getattr(other.tls, value) != getattr(stated[0].tls, value):
                ctx.err("MTLS023", getattr(other.tls, span),
                        f"server `{other.names[0]}` is declared twice with a different `{_KEYWORD[value]}`",
                        "blocks naming the same server are merged; make them agree or move the declaration into one file",
                        related=[Related(getattr(stated[0].tls, span), "the other declaration")])
        source = stated[0].tls if stated else ir.ServerTls()
        fields[value], fields[span] = getattr(source, value), getattr(source, span)
    return ir.ServerTls(**fields)


_KEYWORD = {"profile": "tls", "hsts": "hsts", "stapling": "stapling"}


def own_hsts(ctx: Ctx, directives: tuple[ir.NginxDirective, ...]) -> None:
    """MTLS037 for a Strict-Transport-Security header of the user's own: mtlsc writes it where a
    route's own `add_header` cannot drop it, and two would reach browsers."""
    for d in directives:
        if _sets_hsts(d):
            ctx.err("MTLS037", d.span, "`Strict-Transport-Security` is written by mtlsc from the server's `hsts`",
                    "remove this line and say it in the server: `hsts 2y include_subdomains` (or `hsts off`); mtlsc "
                    "puts the header in the server and in every location with headers of its own, with `always`",
                    label="set by `hsts`")


def _sets_hsts(d: ir.NginxDirective) -> bool:
    words = [w.strip("\"'").lower() for w in d.words]
    if words[0] == "add_header" and len(words) > 1:
        return words[1] == "strict-transport-security"
    if words[0] == "more_set_headers":
        return any(w.split(":", 1)[0].strip() == "strict-transport-security" for w in words[1:] if not w.startswith("-"))
    return False
