"""`mtlsc import`: the `.mtls` policy equivalent to a hand-written nginx configuration, for what a
policy can say (CAs, servers, routes, verify modes, identity gates that are exact DNs or safe
patterns, forwarded headers), with a comment at every construct left out and why.

Access is read the way `mtlsc audit` reads it (mtlsc.audit.flow): a location whose rewrite phase
refuses a client without a certificate becomes `require`, the DN tests it passes become `allow`
identities, a location that lets everyone in becomes `public` (or `optional` when it forwards
certificate fields). Where the original had a hole, the policy has mtlsc's construction instead:
that difference is what `mtlsc import --prove` shows on real nginx.
"""

from __future__ import annotations

import os
import re
from collections import Counter

from mtlsc.audit import dn_tests
from mtlsc.audit.flow import Client
from mtlsc.audit.import_identity import _dn_sample, _q, identity_body
from mtlsc.audit.import_model import Imported, PCa, PIdentity, PRoute, PServer
from mtlsc.audit.model import ARRAY_HEADERS, Config, Location, Server, own
from mtlsc.audit.traps import ANY_CERT, NO_CERT, dead_verify_test, is_probe, proxied, refuses
from mtlsc.audit.trust import resolve
from mtlsc.lower.nginx_block import ALLOWED
from mtlsc.nginx_conf import Directive
from mtlsc.nginx_facts import reserved_header

FIELDS = {"ssl_client_verify": ("verify", "X-Client-Verify"), "ssl_client_s_dn": ("subject", "X-Client-Subject"),
          "ssl_client_i_dn": ("issuer", "X-Client-Issuer"), "ssl_client_fingerprint": ("fingerprint", "X-Client-Fingerprint"),
          "ssl_client_serial": ("serial", "X-Client-Serial"), "ssl_client_escaped_cert": ("cert", "X-Client-Cert"),
          "ssl_client_v_start": ("not_before", "X-Client-Not-Before"),
          "ssl_client_v_end": ("not_after", "X-Client-Not-After"),
          "ssl_client_v_remain": ("days_remaining", "X-Client-Days-Remaining")}
_PATH = re.compile(r"/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]+/?)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IGNORED = {"proxy_pass", "proxy_set_header", "if", "set", "return", "break", "location", "include",
            "access_log", "error_log"} | set(ARRAY_HEADERS)


def _where(d: Directive) -> str:
    return f"{os.path.basename(d.path)}:{d.line}"


def _slug(text: str, fallback: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not s or not s[0].isalpha():
        s = f"{fallback}_{s}" if s else fallback
    return s[:40]


# ---- routes ---------------------------------------------------------------------------------------

def _backend_of(d: Directive) -> tuple[str | None, str | None]:
    """(mtlsc backend URL, what was lost) of a proxy_pass."""
    if not d.args or "$" in d.args[0]:
        return None, f"`proxy_pass {' '.join(d.args)}` uses variables"
    m = re.fullmatch(r"(https?)://([^/]+)(/.*)?", d.args[0])
    if m is None:
        return None, f"`proxy_pass {d.args[0]}` is not an http(s) URL"
    host = m[2]
    return f"{m[1]}://{host}", m[3]


def _forwards(loc: Location, comments: list[str]) -> list[tuple[str, str | None]]:
    out = []
    have, _ = loc.headers("proxy_set_header")
    for h in have:
        if "$ssl_client_" not in h.value:
            continue
        var = h.value.strip()
        name = var.lstrip("$").strip("{}") if var.startswith("$") and re.fullmatch(r"\$\{?\w+\}?", var) else None
        if name not in FIELDS:
            comments.append(f"not carried over: `proxy_set_header {h.name} {h.value}` ({_where(h.directive)}): "
                            "only one whole certificate field per header can be forwarded")
            continue
        fld, default = FIELDS[name]
        if "_" in h.name or reserved_header(h.name):
            comments.append(f"not carried over: the header name `{h.name}` ({_where(h.directive)}) is one mtlsc "
                            "refuses (MTLS020, MTLS032); forwarded as the default header instead")
            out.append((fld, None))
            continue
        out.append((fld, None if h.name.lower() == default.lower() else h.name))
    for kind in ("fastcgi_param", "uwsgi_param", "scgi_param", "grpc_set_header"):
        if any("$ssl_client_" in h.value for h in loc.headers(kind)[0]):
            comments.append(f"not carried over: `{kind}` with certificate fields: mtlsc proxies over HTTP only")
    return sorted(set(out), key=lambda x: (list(f for f, _ in FIELDS.values()).index(x[0]), x[1] or ""))


def _extra_directives(loc: Location, comments: list[str]) -> list[str]:
    out = []
    for d in loc.body:
        if not isinstance(d, Directive) or d.name in _IGNORED:
            continue
        text = " ".join(w.raw for w in d.words) + ";"
        if d.block is None and "location" in ALLOWED.get(d.name, ()):
            out.append(text)
        elif d.name not in ("internal",):
            comments.append(f"not carried over: `{d.name}` ({_where(d)}): mtlsc does not let it into a route "
                            "(it could answer or route requests past the gate, MTLS037)")
    return out


class _Builder:
    def __init__(self, config: Config):
        self.config = config
        self.cas: dict[str, PCa] = {}
        self.identities: dict[str, PIdentity] = {}
        self.tests = dn_tests.collect(config)
        self.comments: list[str] = []

    def ca_for(self, srv: Server) -> str | None:
        d = srv.setting("ssl_client_certificate")
        if d is None or not d.args:
            return None
        # a policy's paths are relative to the policy file: write the files where nginx finds them
        bundle = os.path.abspath(resolve(self.config, d.args[0]))
        crl_d = srv.setting("ssl_crl")
        crl = os.path.abspath(resolve(self.config, crl_d.args[0])) if crl_d is not None and crl_d.args else None
        depth_d = srv.setting("ssl_verify_depth")
        depth = int(depth_d.args[0]) if depth_d is not None and depth_d.args and depth_d.args[0].isdigit() else None
        for ca in self.cas.values():
            if (ca.bundle, ca.crl, ca.depth) == (bundle, crl, depth):
                return ca.name
        name = _slug(os.path.splitext(os.path.basename(bundle))[0], "ca")
        while name in self.cas:
            name += "_2"
        ca = PCa(name, bundle, crl, depth)
        trusted = srv.setting("ssl_trusted_certificate")
        if trusted is not None:
            ca.comments.append(f"not carried over: `ssl_trusted_certificate {' '.join(trusted.args)}` ({_where(trusted)}) "
                               "also verified clients (docs/nginx-facts.md §8); add its CAs to `bundle` only if meant")
        self.cas[name] = ca
        return name

    def identity(self, t: dn_tests.DnTest) -> PIdentity | None:
        body, notes = identity_body(t)
        if body is None:
            return None
        for ident in self.identities.values():
            if ident.body == body:
                return ident
        words = re.findall(r'"([^"]*)"', body)
        name = _slug("_".join(w for w in words[:2]), "id")
        while name in self.identities:
            name += "_2"
        ident = PIdentity(name, body, f"{_where(t.directive)} `{t.pattern}`", notes)
        self.identities[name] = ident
        return ident

    def gate(self, srv: Server, loc: Location, ca: str | None, comments: list[str]) -> tuple[str, list[str], bool]:
        """(mode, identities, allow any)."""
        if ca is None or not srv.verifies:
            return "public", [], False
        if srv.verify == "on":
            if is_probe(loc):
                comments.append("was behind `ssl_verify_client on`, which answers 400 to probes without a "
                                "certificate (docs/nginx-facts.md §1): imported as `public`")
                return "public", [], False
            none_refused = True
        else:
            none_refused = refuses(self.config, srv, loc, NO_CERT)
        if not none_refused:
            dead = [d for block in (srv.directive.block, loc.body) for d in own(block, "if") if dead_verify_test(d)]
            if not dead:
                return "optional", [], False
            # MTLS523: the `if` was meant to refuse, and never did; fail closed, and say so
            comments.append(f"the original's `if ({' '.join(dead[0].args).strip('()')})` ({_where(dead[0])}) never fired "
                            "(nginx never sets that value), so clients without a certificate got in: imported as "
                            "`require`, as that test meant; write `optional` if they must keep access")
        if not refuses(self.config, srv, loc, ANY_CERT):
            return "require", [], True
        allowed = []
        for t in self.tests:
            sample = _dn_sample(t)
            if sample is None:
                continue
            client = Client("identity", "SUCCESS", sample if t.var == "ssl_client_s_dn" else ANY_CERT.s_dn,
                            sample if t.var == "ssl_client_i_dn" else ANY_CERT.i_dn)
            if refuses(self.config, srv, loc, client):
                continue
            ident = self.identity(t)
            if ident is None:
                comments.append(f"not carried over: the subject test `{t.pattern}` ({_where(t.directive)}): "
                                + "; ".join(identity_body(t)[1]))
            elif ident.name not in allowed:
                allowed.append(ident.name)
        if not allowed:
            comments.append("not carried over: the original also tested the certificate, and no identity mtlsc could "
                            "read passes those tests; this route admits nobody until you list identities in `allow`")
            return "require", [self.placeholder().name], False
        return "require", allowed, False

    def placeholder(self) -> PIdentity:
        name = "no_identity_imported"
        if name not in self.identities:
            self.identities[name] = PIdentity(name, 'subject "CN=mtlsc import placeholder,O=replace me"',
                                              "mtlsc import", ["matches no real certificate: replace it"])
        return self.identities[name]

    def route(self, srv: Server, loc: Location, ca: str | None, backend: str) -> PRoute | None:
        comments: list[str] = []
        d = loc.directive
        if loc.named:
            self.comments.append(f"not carried over: named `{loc.describe()}` ({_where(d)})")
            return None
        if loc.is_regex:
            srv_comment = (f"not carried over: regex `{loc.describe()}` ({_where(d)}): routes are exact paths and "
                           "prefixes, so no regex can take a request away from a gated route (docs/nginx-facts.md §2); "
                           "its requests now go to the route whose prefix covers them")
            self.comments.append(srv_comment)
            return None
        if not _PATH.fullmatch(loc.path) or "/." in loc.path or "//" in loc.path:
            self.comments.append(f"not carried over: `{loc.describe()}` ({_where(d)}): not a clean absolute path")
            return None
        exact = loc.modifier == "="
        if not exact and not loc.path.endswith("/"):
            comments.append(f"nginx's `{loc.describe()}` was a string prefix (it also matched `{loc.path}-x`); "
                            f"`route {loc.path}` covers `{loc.path}` and what is below `{loc.path}/` only "
                            "(docs/nginx-facts.md §F5)")
        mode, allow, allow_any = self.gate(srv, loc, ca, comments)
        forward = _forwards(loc, comments)
        if mode == "public" and forward:
            comments.append("its certificate headers are not carried over: a public route clears them all")
            forward = []
        if mode != "public" and not any(f == "verify" for f, _ in forward) and mode == "optional":
            forward.insert(0, ("verify", None))
            comments.append("`forward verify` added: the backend must tell a verified certificate from none")
        passes = proxied(loc)
        route_backend = None
        if passes:
            url, lost = _backend_of(passes[0])
            if url is None:
                comments.append(f"not carried over: {lost} ({_where(passes[0])})")
            else:
                route_backend = url if url != backend else None
                if lost and lost not in ("/", loc.path):
                    comments.append(f"the original sent `{loc.path}...` to `{lost}...` ({_where(passes[0])}); the "
                                    "route forwards the path nginx matched, unchanged")
        else:
            answer = own(loc.body, "return")
            what = f"`return {' '.join(answer[0].args)}`" if answer else "files or nginx itself"
            comments.append(f"the original answered with {what} ({_where(d)}); routes proxy to the backend")
        nginx = _extra_directives(loc, comments)
        return PRoute(exact, loc.path, mode, ca if mode != "public" else None, allow, allow_any, forward,
                      route_backend, nginx, loc, comments)

    def server(self, srv: Server) -> PServer | None:
        d = srv.directive
        names = tuple(n for n in srv.names if n and n != "_" and not n.startswith(("~", "*", ".")) and "*" not in n)
        if not srv.ssl:
            self.comments.append(f"not carried over: the server at {_where(d)} has no TLS listener")
            return None
        if not names:
            self.comments.append(
                f"not carried over: the server at {_where(d)} has no exact name (it was a catch-all): mtlsc writes its "
                "own default server for each address, which refuses clients without a known SNI name "
                "(docs/nginx-facts.md §5)")
            return None
        cert, key = srv.setting("ssl_certificate"), srv.setting("ssl_certificate_key")
        if cert is None or key is None or not cert.args or not key.args:
            self.comments.append(f"not carried over: server `{names[0]}` ({_where(d)}) names no ssl_certificate/key")
            return None
        comments: list[str] = []
        listens = []
        for listen in srv.listens:
            addr, port = listen.key
            if not listen.ssl:
                comments.append(f"not carried over: `listen {' '.join(listen.directive.args)}` "
                                f"({_where(listen.directive)}) has no TLS; mtlsc writes TLS listeners only")
                continue
            text = str(port) if addr == "*" else (f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}")
            if text not in listens:
                listens.append(text)
        ca = self.ca_for(srv) if srv.verifies else None
        if srv.verify == "optional_no_ca":
            comments.append("`ssl_verify_client optional_no_ca` is not carried over: unverified certificates never "
                            "reach a route (docs/nginx-facts.md §9)")
        for name in ("ssl_session_cache", "ssl_session_ticket_key", "ssl_protocols", "underscores_in_headers"):
            s = srv.setting(name)
            if s is not None:
                comments.append(f"`{name} {' '.join(s.args)}` ({_where(s)}) is replaced by mtlsc's own setting")
        backends = Counter(u for loc in srv.locations for p in proxied(loc)[:1] for u in [_backend_of(p)[0]] if u)
        backend = backends.most_common(1)[0][0] if backends else "http://127.0.0.1:80"
        if not backends:
            comments.append("no location proxies: `backend` is a placeholder")
        routes: dict[tuple[bool, str], PRoute] = {}
        for loc in srv.locations:
            r = self.route(srv, loc, ca, backend)
            if r is not None and r.key not in routes:
                routes[r.key] = r
        if not routes:
            comments.append("no location could be carried over")
            return None
        require_all = srv.verify == "on" and all(r.mode == "require" for r in routes.values())
        return PServer(names, listens or ["443"], cert.args[0], key.args[0], backend,
                       sorted(routes.values(), key=lambda r: (r.path, not r.exact)), require_all, srv, comments)


def import_configs(configs: list[Config]) -> Imported:
    servers, comments, cas, identities, origins = [], [], {}, {}, []
    for config in configs:
        b = _Builder(config)
        b.cas, b.identities = cas, identities
        origins.append(config.loaded.origin)
        for srv in config.servers:
            ps = b.server(srv)
            if ps is not None:
                servers.append(ps)
        comments += b.comments
    return Imported(list(cas.values()), list(identities.values()), servers, comments, origins)


# ---- text ---------------------------------------------------------------------------------------

def _comment_lines(comments: list[str], indent: str) -> list[str]:
    # a comment ends at the line break: config text quoted in one (`return 200 "ok\n"`) must not
    return [f"{indent}# {_CONTROL.sub(lambda m: repr(m[0])[1:-1], c)}" for c in comments]


def render(p: Imported, paths: dict[str, str] | None = None, listen: dict[str, str] | None = None,
           backend: str | None = None, install: str | None = None) -> str:
    """The policy text. `paths`, `listen`, `backend`, `install`: replacements used by `--prove`
    (lab files, loopback ports, the echo backend, where the lab's nginx reads the trust files)."""
    paths = paths or {}

    def path(x: str) -> str:
        return paths.get(x, x)

    lines = [f"# Imported by `mtlsc import` from {', '.join(p.origins)}.",
             "# Review every comment: each says what the original did that this policy does not.",
             'nginx ">= 1.22"', ""]
    lines += _comment_lines(p.comments, "")
    if p.comments:
        lines.append("")
    for ca in p.cas:
        lines += _comment_lines(ca.comments, "")
        if not ca.crl:  # MTLS546: nothing to carry over, so the gap is said where the CRL belongs
            lines.append("# no revocation: the original names no `ssl_crl`; publish a CRL for every CA certificate "
                         "of this bundle and add `crl \"...\"` here, or a revoked certificate keeps access until it expires")
        body = [f"bundle {_q(path(ca.bundle))}"]
        if ca.depth is not None:
            body.append(f"depth {ca.depth}")
        if ca.crl:
            body.append(f"crl {_q(path(ca.crl))}")
        lines.append(f"ca {ca.name} {{ {'  '.join(body)} }}")
    if p.cas:
        lines.append("")
    for ident in p.identities:
        lines.append(f"# from {ident.origin}")
        lines += _comment_lines(ident.comments, "")
        lines.append(f"identity {ident.name} {{ {ident.body} }}")
    if p.identities:
        lines.append("")
    for srv in p.servers:
        d = srv.origin.directive
        lines.append(f"# from {_where(d)}")
        lines.append(f"server {' '.join(srv.names)} {{")
        lines += _comment_lines(srv.comments, "  ")
        for lst in srv.listens:
            lines.append(f"  listen {(listen or {}).get(lst, lst)}")
        lines.append(f"  certificate {_q(path(srv.certificate))} key {_q(path(srv.key))}")
        lines.append(f"  backend {_q(backend or srv.backend)}")
        if install:
            lines.append(f"  install {_q(install)}")
        if srv.handshake_require:
            lines.append("  handshake require")
        for r in srv.routes:
            lines.append("")
            lines.append(f"  # from {_where(r.origin.directive)} `{r.origin.describe()}`")
            lines += _comment_lines(r.comments, "  ")
            stmts = []
            if r.mode == "public":
                stmts.append("public")
            else:
                stmts.append(f"{r.mode} {r.ca}")
                if r.mode == "require":
                    stmts.append("allow any" if r.allow_any else "allow " + " ".join(r.allow))
            if r.forward:
                stmts.append("forward " + " ".join(f if h is None else f"{f} as {_q(h)}" for f, h in r.forward))
            if r.backend and backend is None:
                stmts.append(f"backend {_q(r.backend)}")
            if r.nginx:
                stmts.append("nginx { " + " ".join(r.nginx) + " }")
            lines.append(f"  route {'= ' if r.exact else ''}{r.path} {{ {'  '.join(stmts)} }}")
        lines.append("}")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
