"""Tests on `$ssl_client_s_dn` / `$ssl_client_i_dn` in a hand-written config (map keys, `if`
conditions), and the DN traps in them (docs/nginx-facts.md §7, over-trust trap 6): a regex not
anchored at the start of the DN, one that an escaped `\\,` inside a value satisfies, one that
assumes a letter case or a DN form nginx never prints.

Every finding carries a subject nginx would print for a certificate an attacker can get issued
(or, for a test that can never match, the one nginx prints instead), checked against the regex.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mtlsc import dn
from mtlsc.audit.flow import strip_parens
from mtlsc.audit.model import Config, span_word
from mtlsc.audit.report import finding
from mtlsc.audit.sample import example
from mtlsc.diagnostics import Diagnostic
from mtlsc.nginx_conf import Directive

DN_VARS = ("ssl_client_s_dn", "ssl_client_i_dn")
_IMPORT = ("turns it into an identity matched by an anchored, escape-aware regex per attribute, each attribute "
           "required exactly once")
_LOWER_ATTR = re.compile(r"(?:^|[\^,(|])(cn|o|ou|c|l|st|dc|uid|emailaddress|serialnumber)=")


@dataclass(frozen=True)
class DnTest:
    directive: Directive  # the map entry, or the `if`
    word: int  # the word holding the pattern or string
    var: str
    pattern: str
    regex: bool
    icase: bool


def _if_test(d: Directive) -> DnTest | None:
    words = strip_parens(d.args)
    if len(words) != 3:
        return None
    var, op, value = words
    if var.lstrip("$").strip("{}") not in DN_VARS:
        return None
    regex = op in ("~", "~*", "!~", "!~*")
    if not regex and op not in ("=", "!="):
        return None
    index = 3 if d.args[0] != "(" else 4
    return DnTest(d, index, var.lstrip("$").strip("{}"), value, regex, "*" in op)


def collect(config: Config) -> list[DnTest]:
    tests: list[DnTest] = []
    for name, m in sorted(config.maps.items(), key=lambda kv: (kv[1].path, kv[1].line)):
        source = m.args[0].lstrip("$").strip("{}")
        if source not in DN_VARS:
            continue
        for entry in m.block or ():
            if not isinstance(entry, Directive) or entry.name in ("default", "hostnames", "volatile", "include"):
                continue
            key = entry.name
            if key.startswith("~*"):
                tests.append(DnTest(entry, 0, source, key[2:], True, True))
            elif key.startswith("~"):
                tests.append(DnTest(entry, 0, source, key[1:], True, False))
            else:
                tests.append(DnTest(entry, 0, source, key.removeprefix("\\"), False, False))

    def walk(block):
        for d in block or ():
            if not isinstance(d, Directive):
                continue
            if d.name == "if":
                t = _if_test(d)
                if t is not None:
                    tests.append(t)
            if d.block is not None:
                walk(d.block)

    for srv in config.servers:
        walk(srv.directive.block)
    return tests


def _anchored_start(pattern: str) -> bool:
    return re.sub(r"^\(\?[a-zA-Z]+\)", "", pattern).startswith("^")


def _compiled(t: DnTest):
    try:
        return re.compile(t.pattern, re.I if t.icase else 0)
    except (re.error, RecursionError, OverflowError):
        return None


def _unanchored(t: DnTest, rx, sample: str) -> str | None:
    """A subject the regex accepts although what it looks for sits inside another value."""
    if not _anchored_start(t.pattern):
        attack = "CN=mallory\\" + ("" if sample.startswith(",") else ",") + sample
        attack += "O=Evil" if attack.endswith(",") else ""
        if rx.search(attack):
            return attack
    if not t.pattern.endswith("$") and re.search(r"[A-Za-z0-9]$", t.pattern) and not sample.endswith(","):
        longer = sample + "-evil"  # another value that merely starts like the one meant
        if rx.search(longer):
            return longer
    return None


def _comma_unsafe(rx, sample: str) -> str | None:
    for i, ch in enumerate(sample):
        if ch in ",+" and (i == 0 or sample[i - 1] != "\\"):
            forged = sample[:i] + "\\" + sample[i:]
            if rx.search(forged):
                forged = ("CN=mallory" if forged.startswith("\\") else "") + forged
                return forged + ("O=Evil" if forged.endswith(",") else "")
    return None


def _regex_findings(t: DnTest) -> list[Diagnostic]:
    rx = _compiled(t)
    if rx is None:
        return []
    span = span_word(t.directive, t.word)
    where = f"`${t.var}`"
    out = []
    sample = example(t.pattern, t.icase)
    if sample is not None:
        attack = _unanchored(t, rx, sample)
        if attack is not None:
            out.append(finding(
                "MTLS520", span,
                f"the regex `{t.pattern}` on {where} is not anchored to whole attributes: a certificate whose "
                f"subject nginx prints as `{attack}` matches it (docs/nginx-facts.md §7, over-trust trap 6)",
                "anchor it (`^`...`$`) and match values escape-aware (`(?:[^,+\\\\]|\\\\.)*`), or compare whole "
                "subjects with `map` string keys",
                _IMPORT, label="matches inside another value"))
        else:
            forged = _comma_unsafe(rx, sample)
            if forged is not None:
                out.append(finding(
                    "MTLS521", span,
                    f"the regex `{t.pattern}` on {where} is fooled by RFC 2253 escaping: a certificate whose value "
                    f"holds a comma prints as `{forged}` and matches it (docs/nginx-facts.md §7, over-trust trap 6)",
                    "match each value as a run of `(?:[^,+\\\\]|\\\\.)` so an escaped `\\,` stays inside its value",
                    _IMPORT, label="`\\,` inside a value satisfies this"))
    if t.icase and sample is not None:
        out.append(finding(
            "MTLS522", span,
            f"the regex on {where} ignores letter case: `{sample.swapcase()}` matches as well as `{sample}`; attribute "
            f"constraints are meant case-sensitively (docs/nginx-facts.md §7)",
            "use `~` (case-sensitive) and spell out the cases you accept with classes", _IMPORT))
    elif not t.icase and _LOWER_ATTR.search(t.pattern):
        out.append(finding(
            "MTLS522", span,
            f"the regex `{t.pattern}` on {where} writes attribute names in lower case, but nginx prints them in "
            f"upper case (`CN=`, `O=`): it never matches, so whatever it admits is locked out (docs/nginx-facts.md §7)",
            "write attribute names as nginx prints them: `CN=`, `O=`, `OU=`, `C=`", _IMPORT))
    return out


def _string_findings(t: DnTest) -> list[Diagnostic]:
    if not t.pattern or "$" in t.pattern:
        return []
    try:
        dn.parse_dn(t.pattern)
        return []
    except dn.DnError:
        pass
    copied = dn.copied_form(t.pattern)
    if copied is None:
        return []
    form, printed = copied
    return [finding(
        "MTLS522", span_word(t.directive, t.word),
        f"`{t.pattern}` is written in {form}; nginx prints `${t.var}` as `{printed}`, so this never matches "
        f"(docs/nginx-facts.md §7)",
        f"write `{printed}`", "writes the DN as nginx prints it")]


def dn_findings(config: Config) -> list[Diagnostic]:
    out = []
    for t in collect(config):
        out += _regex_findings(t) if t.regex else _string_findings(t)
    return out

