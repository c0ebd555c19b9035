"""What nginx's rewrite phase does with one client's request in one location: the `if`, `set`,
`return` and `break` of the server, then of the location, evaluated with the client's variables
and the http block's `map`s. A condition mtlsc cannot decide (a variable it does not model, a
regex Python cannot read) is followed both ways, so the answer is every possible outcome.

Only what decides access is modelled: `$ssl_client_verify`, `$ssl_client_s_dn`, `$ssl_client_i_dn`
(and the other `$ssl_client_*` a client kind sets), `set` variables and maps over them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mtlsc.audit.model import Config, Location, Server, own, variables
from mtlsc.nginx_conf import Directive

UNKNOWN = None  # a value mtlsc does not model
MAX_OUTCOMES = 64  # forks on undecidable conditions, per request: configs have a handful


@dataclass(frozen=True)
class Client:
    """The `$ssl_client_*` values nginx shows for one kind of client."""

    kind: str
    verify: str = "NONE"
    s_dn: str = ""
    i_dn: str = ""
    extra: tuple[tuple[str, str], ...] = ()

    def var(self, name: str) -> str | None:
        if name == "ssl_client_verify":
            return self.verify
        if name == "ssl_client_s_dn":
            return self.s_dn
        if name == "ssl_client_i_dn":
            return self.i_dn
        for k, v in self.extra:
            if k == name:
                return v
        if name.startswith("ssl_client_") and self.verify in ("NONE", ""):
            return ""
        return UNKNOWN


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the status a `return` answers; None: the location's content runs
    at: Directive | None  # that `return`
    certain: bool  # no undecidable condition on the way
    checked: frozenset[str] = frozenset()  # client variables a deciding condition read


def strip_parens(args: tuple[str, ...]) -> list[str]:
    """The operands of `if (...)`: nginx takes `(` off the first word and `)` off the last, which
    may be words of their own; an empty operand (`""`) stays."""
    out = list(args)
    if out and out[0] == "(":
        out = out[1:]
    elif out and out[0].startswith("("):
        out[0] = out[0][1:]
    if out and out[-1] == ")":
        out = out[:-1]
    elif out and out[-1].endswith(")"):
        out[-1] = out[-1][:-1]
    return out


def compile_regex(pattern: str, icase: bool = False) -> re.Pattern | None:
    try:
        return re.compile(pattern, re.I if icase else 0)
    except (re.error, RecursionError, OverflowError):
        return None


@dataclass
class _Env:
    config: Config
    client: Client
    sets: dict[str, str | None] = field(default_factory=dict)
    read: set[str] = field(default_factory=set)
    depth: int = 0

    def var(self, name: str) -> str | None:
        if name in self.sets:
            return self.sets[name]
        if name.startswith("ssl_client_"):
            self.read.add(name)
            return self.client.var(name)
        m = self.config.maps.get(name)
        if m is not None and self.depth < 8:
            self.depth += 1
            try:
                return map_value(m, self)
            finally:
                self.depth -= 1
        return UNKNOWN

    def expand(self, text: str) -> str | None:
        if "$" not in text:
            return text
        out = text
        for name in sorted(set(variables(text)), key=len, reverse=True):
            value = self.var(name)
            if value is UNKNOWN:
                return UNKNOWN
            out = out.replace("${" + name + "}", value).replace("$" + name, value)
        return out


def map_value(block: Directive, env: _Env) -> str | None:
    """nginx's `map`: an exact string key first (ASCII case-insensitive, docs/nginx-facts.md §7),
    then the regex keys in order, else `default`."""
    source = env.expand(block.args[0])
    if source is UNKNOWN:
        return UNKNOWN
    default, regexes = "", []
    for d in block.block or ():
        if not isinstance(d, Directive) or not d.args:
            if isinstance(d, Directive) and d.name == "default" and not d.args:
                continue
            if isinstance(d, Directive) and d.name in ("hostnames", "volatile"):
                continue
            continue
        key, value = d.name, d.args[0]
        if key == "default":
            default = value
        elif key == "include":
            return UNKNOWN
        elif key.startswith("~"):
            regexes.append((key, value))
        elif key.removeprefix("\\").lower() == source.lower():
            return env.expand(value) if "$" in value and not re.search(r"\$\d", value) else (
                UNKNOWN if "$" in value else value)
    for key, value in regexes:
        icase = key.startswith("~*")
        rx = compile_regex(key[2:] if icase else key[1:], icase)
        if rx is None:
            return UNKNOWN
        if rx.search(source):
            return UNKNOWN if re.search(r"\$\d", value) else env.expand(value)
    return env.expand(default)


def condition(args: tuple[str, ...], env: _Env) -> bool | None:
    parts = strip_parens(args)
    if len(parts) == 1 and parts[0].startswith("$"):
        value = env.var(parts[0][1:].strip("{}"))
        return UNKNOWN if value is UNKNOWN else value not in ("", "0")
    if len(parts) == 3 and parts[0].startswith("$"):
        left = env.var(parts[0][1:].strip("{}"))
        op, right = parts[1], parts[2]
        if left is UNKNOWN:
            return UNKNOWN
        if op in ("=", "!="):
            value = env.expand(right)
            if value is UNKNOWN:
                return UNKNOWN
            return (left == value) == (op == "=")
        if op in ("~", "~*", "!~", "!~*"):
            rx = compile_regex(right, "*" in op)
            if rx is None:
                return UNKNOWN
            return bool(rx.search(left)) != op.startswith("!")
    return UNKNOWN


def _run(block, env: _Env, certain: bool, out: list[Outcome]) -> bool:
    """Run the rewrite directives of `block` in order; True when the request stopped (a return,
    a break) on every path; outcomes of forked paths that stopped are appended to `out`."""
    for i, d in enumerate(block or ()):
        if not isinstance(d, Directive):
            continue
        if d.name == "return":
            status = int(d.args[0]) if d.args and d.args[0].isdigit() else 302
            out.append(Outcome(status, d, certain, frozenset(env.read)))
            return True
        if d.name == "break":
            return True
        if d.name == "set" and len(d.args) >= 2:
            env.sets[d.args[0].lstrip("$")] = env.expand(d.args[1])
        elif d.name == "rewrite":
            return False  # the request may move to another location: not followed
        elif d.name == "if" and d.block is not None:
            verdict = condition(d.args, env)
            if verdict is UNKNOWN:
                if len(out) >= MAX_OUTCOMES:
                    return False
                fork = _Env(env.config, env.client, dict(env.sets), set(env.read))
                sub: list[Outcome] = []
                if _run(d.block, fork, False, sub):
                    out += sub
                else:  # the `if` may or may not have set its variables
                    env.sets.update({k: UNKNOWN for k, v in fork.sets.items() if env.sets.get(k) != v})
                certain = False
                continue
            if verdict:
                stopped = _run(d.block, env, certain, out)
                if stopped:
                    return True
    return False


def outcomes(config: Config, server: Server, location: Location | None, client: Client) -> list[Outcome]:
    """Every way the rewrite phase can end for this client: refusals (`return`) and, last, the
    content handler (status None) when some path reaches it."""
    env = _Env(config, client)
    out: list[Outcome] = []
    if _run(server.directive.block, env, True, out):
        return out
    if location is not None and _run(location.body, env, all(o.certain for o in out) if out else True, out):
        return out
    out.append(Outcome(None, None, all(o.certain for o in out) if out else True, frozenset(env.read)))
    return out


def reaches(config: Config, server: Server, location: Location, client: Client) -> bool:
    """The client surely gets to the location's content (a proxy_pass): no path refuses it."""
    outs = outcomes(config, server, location, client)
    return all(o.status is None for o in outs)


def may_reach(config: Config, server: Server, location: Location, client: Client) -> bool:
    return any(o.status is None for o in outcomes(config, server, location, client))


def gate_ifs(server: Server, location: Location | None) -> list[Directive]:
    """The `if` blocks on the way to this location that can refuse (hold a `return`)."""
    blocks = [server.directive.block] + ([location.body] if location is not None else [])
    return [d for block in blocks for d in own(block, "if") if own(d.block, "return")]
