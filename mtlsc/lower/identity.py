"""Lowering of `identity` blocks: DNs parsed into nginx's own form, patterns checked."""

from __future__ import annotations

import difflib

from mtlsc import ast, dn, ir, san, values
from mtlsc.emit import quote
from mtlsc.lower.common import Ctx
from mtlsc.parse import keywords_after
from mtlsc.source import Span


def _inside(s: ast.Str, offset: int) -> Span:
    """A one-character span at `offset` inside a string literal (after its opening quote)."""
    sp = s.span
    col = sp.col + 1 + offset
    return Span(sp.path, sp.line, col, sp.line, col + 1)


def _dn(ctx: Ctx, s: ast.Str, what: str) -> str | None:
    try:
        return dn.nginx_form(s.value)
    except dn.DnError as e:
        copied = dn.copied_form(s.value)
        if copied is not None:  # copied from another tool: say so, and what nginx prints instead
            from mtlsc.review.fmt import quote as quote_string  # only here: fmt is not needed to compile

            form, fixed = copied
            ctx.err("MTLS014", _content(s), f"{what} is not a DN nginx can produce: it is written in {form}",
                    f"write it as nginx prints it: {quote_string(fixed)}", label="nginx never prints a DN this way")
        else:
            ctx.err("MTLS014", _inside(s, e.offset), f"{what} is not a DN nginx can produce: {e.message}",
                    "write the DN as nginx prints `$ssl_client_s_dn` (RFC 2253): `CN=alice,O=Acme,C=US`")
        return None


def _content(s: ast.Str) -> Span:
    """The text of a one-line string literal, without its quotes."""
    sp = s.span
    return Span(sp.path, sp.line, sp.col + 1, sp.line, max(sp.col + 2, sp.end_col - 1))


def lower_identity(ctx: Ctx, node: ast.Identity) -> ir.Identity | None:
    name = node.name.value
    if len(node.body) == 1 and type(node.body[0]) is ast.Subject and name != "any":
        return _subject_identity(ctx, name, node.body[0], node.span)  # most identities: skip the sorting below
    if name == "any":
        ctx.err("MTLS012", node.name.span, "`any` is reserved", "`allow any` means every certificate of the CA; pick another name")
    body = [s for s in node.body if not isinstance(s, ast.Waive)]
    unknown = [s for s in body if isinstance(s, (ast.AttrEq, ast.AttrRe)) and dn.canonical_attribute(s.attr.value) is None]
    for s in unknown:  # first: a misspelt `serial` or `subject` must not read as "mixes attrs and serial"
        ctx.err("MTLS014", s.attr.span, f"`{s.attr.value}` is not a DN attribute nginx prints",
                _attr_hint(s.attr.value), label="unknown attribute")
    if unknown:
        return None
    kinds = {
        ir.IdentityKind.SUBJECT: [s for s in body if isinstance(s, ast.Subject)],
        ir.IdentityKind.ATTRS: [s for s in body if isinstance(s, (ast.AttrEq, ast.AttrRe))],
        ir.IdentityKind.FINGERPRINT: [s for s in body if isinstance(s, ast.Fingerprint)],
        ir.IdentityKind.SERIAL: [s for s in body if isinstance(s, (ast.Serial, ast.Issuer))],
        ir.IdentityKind.SAN: [s for s in body if isinstance(s, ast.San)],
    }
    used = [k for k, stmts in kinds.items() if stmts]
    if not used:
        ctx.err("MTLS014", node.name.span, f"identity `{name}` matches nothing",
                'give a `subject "CN=..."`, attribute matches such as `cn "x"`, a `fingerprint`, `serial` + `issuer` '
                'or a `san`')
        return None
    if len(used) > 1:
        ctx.err("MTLS014", kinds[used[1]][0].span, f"identity `{name}` mixes {used[0].value} and {used[1].value} matching",
                "one identity matches one way; define two identities and allow both")
        return None
    kind, stmts = used[0], kinds[used[0]]
    if kind is not ir.IdentityKind.ATTRS and len(stmts) > (2 if kind is ir.IdentityKind.SERIAL else 1):
        ctx.err("MTLS013", stmts[-1].span, f"identity `{name}` states its {kind.value} twice", "keep one")
        return None
    if kind is ir.IdentityKind.SUBJECT:
        return _subject_identity(ctx, name, stmts[0], node.span)
    if kind is ir.IdentityKind.FINGERPRINT:
        return _fingerprint_identity(ctx, name, stmts[0], node.span)
    if kind is ir.IdentityKind.SAN:
        return _san_identity(ctx, name, stmts[0], node.span)
    if kind is ir.IdentityKind.SERIAL:
        return _serial_identity(ctx, node, stmts)
    attrs = [a for a in (_attr(ctx, s) for s in stmts) if a is not None]
    if len(attrs) != len(stmts):
        return None
    regex = dn.constraints_regex(tuple(dn.AttrConstraint(a.attr, a.op, a.value) for a in attrs))
    if _too_long(ctx, node.span, f"the regex compiled from identity `{name}`", "~" + regex):
        return None
    return ir.Identity(name, kind, attrs=tuple(attrs), span=node.span)


def _subject_identity(ctx: Ctx, name: str, stmt: ast.Subject, span: Span) -> ir.Identity | None:
    subject = _dn(ctx, stmt.dn, "the subject")
    if subject is None or _too_long(ctx, stmt.dn.span, "the subject", subject):
        return None
    return ir.Identity(name, ir.IdentityKind.SUBJECT, subject=subject, span=span)


def _fingerprint_identity(ctx: Ctx, name: str, stmt: ast.Fingerprint, span: Span) -> ir.Identity | None:
    """SHA-1 (`$ssl_client_fingerprint`) or SHA-256 (njs), by `sha1`/`sha256` or by length; or, by
    `spki`, SHA-256 of the certificate's public key (njs): a pin that survives renewal with the same key."""
    algorithm = stmt.algorithm.value.lower() if stmt.algorithm else None
    if algorithm not in (None, "sha1", "sha256", "spki"):
        ctx.err("MTLS012", stmt.algorithm.span, f"`{stmt.algorithm.value}` is not a fingerprint algorithm",
                "write `fingerprint sha256 \"...\"`, `fingerprint sha1 \"...\"` (the certificate), "
                "`fingerprint spki \"...\"` (its public key), or leave it out: the length tells")
        return None
    try:
        digits = values.fingerprint(stmt.value.value, algorithm)
    except values.ValueProblem as p:
        ctx.err("MTLS014", stmt.value.span, p.message, p.help)
        return None
    if algorithm == "spki":
        return ir.Identity(name, ir.IdentityKind.SPKI, fingerprint=digits, span=span)
    kind = ir.IdentityKind.SHA256 if len(digits) == 64 else ir.IdentityKind.FINGERPRINT
    return ir.Identity(name, kind, fingerprint=digits, span=span)


def _san_identity(ctx: Ctx, name: str, stmt: ast.San, span: Span) -> ir.Identity | None:
    try:
        rule = san.policy_rule(stmt.kind.value, stmt.value.value)
    except san.SanProblem as p:
        where = stmt.kind.span if stmt.kind.value not in san.KINDS else _content(stmt.value)
        ctx.err("MTLS014", where, p.message, p.help)
        return None
    if quote.length_problem(rule.regex() if rule.pattern else rule.value, reserve=2):
        ctx.err("MTLS020", stmt.value.span, "the SAN value is too long for one nginx argument", "shorten it")
        return None
    return ir.Identity(name, ir.IdentityKind.SAN, san=rule, span=span)


def _too_long(ctx: Ctx, span: Span, what: str, emitted: str) -> bool:
    """MTLS020 when `emitted` (the map key nginx will read) exceeds one nginx config argument."""
    problem = quote.length_problem(emitted, reserve=2)
    if problem:
        ctx.err("MTLS020", span, f"{what} {problem}", "shorten it: nginx cannot read the compiled map key")
    return problem is not None


def _serial_identity(ctx: Ctx, node: ast.Identity, stmts) -> ir.Identity | None:
    serial = next((s for s in stmts if isinstance(s, ast.Serial)), None)
    issuer = next((s for s in stmts if isinstance(s, ast.Issuer)), None)
    if serial is None or issuer is None:
        ctx.err("MTLS014", node.name.span, f"identity `{node.name.value}` needs both `serial` and `issuer`",
                "a serial number is unique only within its issuer")
        return None
    try:
        number = values.serial(serial.value.value)
    except values.ValueProblem as p:
        ctx.err("MTLS014", serial.value.span, p.message, p.help)
        return None
    issuer_dn = _dn(ctx, issuer.dn, "the issuer")
    if issuer_dn and _too_long(ctx, issuer.dn.span, "the issuer", f"{number}:{issuer_dn}"):
        return None
    return issuer_dn and ir.Identity(node.name.value, ir.IdentityKind.SERIAL, serial=number, issuer=issuer_dn, span=node.span)


def _attr(ctx: Ctx, s) -> ir.AttrMatch | None:
    attr = dn.canonical_attribute(s.attr.value)  # known: lower_identity reported unknown ones
    if isinstance(s, ast.AttrEq):
        return ir.AttrMatch(attr, "eq", s.value.value, s.span)
    if quote.length_problem(s.pattern.value):  # before the (superlinear) analysis of a huge regex
        ctx.err("MTLS020", s.pattern.span, f"the pattern {quote.length_problem(s.pattern.value)}", "shorten it")
        return None
    try:
        dn.check_value_pattern(s.pattern.value)
        dn.example_value(s.pattern.value)  # raises when no value nginx prints can match
    except dn.DnError as e:
        ctx.err("MTLS014", _inside(s.pattern, e.offset), f"unsafe or unsupported pattern: {e.message}",
                "patterns are anchored regexes (`^...$`) over the value as nginx prints it, confined to one attribute")
        return None
    return ir.AttrMatch(attr, "re", s.pattern.value, s.span)


def _attr_hint(word: str) -> str:
    """`did you mean` for a word that opens an identity line: the grammar parses any unknown word
    there as an attribute, so a misspelt statement (`subjct`) arrives here, not as a syntax error."""
    statements = [k for k in keywords_after("identity x {") if k != "waive"]
    attributes = [a for a in dn.attribute_spellings() if not a[0].isdigit()]  # not the OIDs
    close = difflib.get_close_matches(word.lower(), statements + attributes, n=1)
    if close:
        return f"did you mean `{close[0]}`?"
    return "use a short name such as `cn`, `o`, `ou`, `c`, `l`, `st`, `dc` or `uid`"
