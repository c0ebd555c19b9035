"""Chain-level lockout (MTLS1xx) and over-trust (MTLS2xx) read from the CA and CRL files.

nginx builds each client's chain from one trust file and one CRL file per server (the CAs its
routes name), so these checks walk chains: which CA certificate issued which, how deep a client
sits below its root, which CRL covers which certificate, what OCSP will ask, and which CAs could
stand in for each other. Single-certificate facts are in `trust_files.py`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from urllib.parse import urlsplit

from cryptography import x509

from mtlsc import ir
from mtlsc.checks.trust_files import bundle_span, ca_files, crl_span, in_system_trust_dir, parsed, public_match
from mtlsc.diagnostics import Finding, Related
from mtlsc.pki import CertInfo, CrlInfo, describe


# ----- chains -------------------------------------------------------------------------------------

def _issues(parent: CertInfo, child: CertInfo) -> bool:
    """Whether `parent` is the issuer OpenSSL would pick for `child`: name, then key identifier."""
    if parent.fingerprint == child.fingerprint or parent.subject.lower() != child.issuer.lower():
        return False
    return child.aki is None or parent.ski is None or child.aki == parent.ski


def root_path(cert: CertInfo, pool) -> list[CertInfo] | None:
    """The shortest path [cert, issuer, ..., self-signed root] inside `pool`, or None."""
    paths, seen = [[cert]], {cert.fingerprint}
    while paths:
        nxt = []
        for path in paths:
            if path[-1].self_signed:
                return path
            for parent in pool:
                if parent.fingerprint not in seen and _issues(parent, path[-1]):
                    seen.add(parent.fingerprint)
                    nxt.append([*path, parent])
        paths = nxt
    return None


def _cas(certs) -> list[CertInfo]:
    return [c for c in certs if c.is_ca]


def _intermediates(path: list[CertInfo]) -> int:
    """Intermediates between a leaf issued by path[0] and the root, as nginx counts depth (§3).
    Self-issued certificates (key rollover) do not count, as in OpenSSL."""
    return sum(1 for c in path[:-1] if c.subject.lower() != c.issuer.lower())


def needed_depth(certs) -> tuple[int, CertInfo] | None:
    """(depth the deepest CA certificate needs, that certificate), or None without any chain."""
    found = [(_intermediates(p), c) for c in _cas(certs) if (p := root_path(c, certs))]
    return max(found, key=lambda x: x[0]) if found else None


def _servers_of(ctx) -> Iterator[tuple[ir.Server, list[tuple[ir.Ca, tuple[CertInfo, ...], tuple[CrlInfo, ...]]]]]:
    files = {ca.name: (ca, certs, crls) for ca, certs, crls in ca_files(ctx)}
    for server in ctx.policy.servers:
        yield server, [files[c.name] for c in server.cas if c.name in files]


# ----- lockout --------------------------------------------------------------------------------------

def _covered(cert: CertInfo, crls) -> bool:
    return any(crl.issuer.lower() == cert.subject.lower()
               and (crl.aki is None or cert.ski is None or crl.aki == cert.ski) for crl in crls)


def crl_missing_for_some_ca(ctx):
    """What it catches: a server that checks CRLs (some CA of it names a `crl`) while a CA
    certificate of its trust file, root or intermediate, has no CRL in the server's CRL file.

    Why: `ssl_crl` is one file per server, and once it is set nginx wants the CRL of every CA in
    every chain, the intermediate's and the root's: the clients below a certificate without one get
    `unable to get certificate CRL`. With only the intermediate's CRL, *everyone* is rejected,
    because the intermediate's own check needs the root's CRL (nginx-facts §4, lockout trap 1).

    Example: `bundle "root.pem" "issuing.pem"  crl "issuing.crl"`.

    Fix: give every CA certificate its CRL (`crl "root.crl" "issuing.crl"`), or serve a CA
    without CRLs on its own server.
    """
    seen = set()
    for server, cas in _servers_of(ctx):
        crls = [crl for _, _, cs in cas for crl in cs]
        turned_on = next(((ca, cs[0]) for ca, _, cs in cas if cs), None)
        if turned_on is None:
            continue
        on_span = crl_span(*turned_on)
        for ca, certs, _ in cas:
            for cert in _cas(certs):
                if _covered(cert, crls) or (ca.name, cert.fingerprint) in seen:
                    continue
                seen.add((ca.name, cert.fingerprint))
                if cert.self_signed and any(_covered(c, crls) for c in _cas(certs)):
                    what = (f"the CRL file has a CRL for the intermediate but none for the root {describe(cert)}: "
                            "the intermediate's own check needs it, so every client is rejected")
                elif cert.self_signed:
                    what = f"no CRL for the root {describe(cert)}: every client below it is rejected"
                else:
                    what = f"no CRL for {describe(cert)}: every client below it is rejected"
                yield Finding(bundle_span(ca, cert),
                              f"server `{server.names[0]}` checks CRLs, but {what} (`unable to get certificate CRL`)",
                              f"add the CRL of `{cert.subject}` to the `crl` of ca `{ca.name}`",
                              label="this certificate has no CRL",
                              related=(Related(on_span, "CRL checking is turned on here"),))


def verify_depth_too_small(ctx):
    """What it catches: a `depth` smaller than the number of intermediates the bundle puts between
    a client and its root.

    Why: `ssl_verify_depth N` allows N intermediates between the client certificate and the root,
    counting neither; one more and the client gets `unable to get issuer certificate` (not "chain
    too long"). Depth 0 rejects every client of an intermediate (nginx-facts §3, lockout trap 4).

    Example: `bundle "root.pem" "mid.pem" "issuing.pem"  depth 1`.

    Fix: set `depth` to the number the help names.
    """
    for ca, certs, _ in ca_files(ctx):
        found = needed_depth(certs)
        if found and found[0] > ca.depth:
            need, deepest = found
            yield Finding(ca.span or bundle_span(ca, deepest),
                          f"ca `{ca.name}` has depth {ca.depth}, but clients of {describe(deepest)} sit {need} "
                          f"intermediate(s) below the root: they get `unable to get issuer certificate`",
                          f"write `depth {need}` in ca `{ca.name}`",
                          related=(Related(bundle_span(ca, deepest), f"needs depth {need}"),))


def chain_without_root(ctx):
    """What it catches: an intermediate whose chain does not reach a self-signed root inside the bundle.

    Why: nginx allows no partial chains: with only the intermediate in the file, its clients get
    `unable to get issuer certificate`, even when they send the chain themselves (nginx-facts §3,
    lockout trap 5).

    Example: `bundle "issuing.pem"` (the root that signed it is missing).

    Fix: add the root (and any missing intermediate) to `bundle`, root first.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in _cas(certs):
            if cert.self_signed or root_path(cert, certs):
                continue
            yield Finding(bundle_span(ca, cert),
                          f"{describe(cert)} is an intermediate whose issuer `{cert.issuer}` is not in ca `{ca.name}`: "
                          "nginx allows no partial chains, its clients get `unable to get issuer certificate`",
                          f"add the certificate of `{cert.issuer}` (up to the self-signed root) to `bundle`",
                          label="no root above this certificate")


def path_length_exceeded(ctx):
    """What it catches: a CA certificate below an ancestor whose basicConstraints pathLen it exceeds.

    Why: OpenSSL enforces pathLen on every CA of the chain, so every client below the offending
    certificate gets `path length constraint exceeded`; `nginx -t` does not look (same class of
    trap as nginx-facts §12; proven on nginx in tests/test_checks_pki_nginx.py).

    Example: a root with `pathlen:0` and an intermediate below it that issues the clients.

    Fix: reissue the ancestor with a larger pathLen (or none), or issue the clients from the ancestor.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in _cas(certs):
            path = root_path(cert, certs) or []
            for k, above in enumerate(path[1:], start=1):
                below = _intermediates(path[:k + 1])
                if above.path_length is not None and below > above.path_length:
                    yield Finding(bundle_span(ca, cert),
                                  f"{describe(cert)} is {below} CA level(s) below {describe(above)}, whose pathLen is "
                                  f"{above.path_length}: its clients get `path length constraint exceeded`",
                                  f"reissue `{above.subject}` with a pathLen of at least {below}, or without one",
                                  related=(Related(bundle_span(ca, above), f"pathLen {above.path_length}"),))
                    break


# ----- OCSP (nginx-facts §10) -------------------------------------------------------------------------

def _server_ocsp(cas) -> tuple[ir.Ca, ir.Ocsp] | None:
    # The emitted server takes the first `ocsp` of its CAs, by name, for all of them.
    return next(((ca, ca.ocsp) for ca, _, _ in cas if ca.ocsp), None)


def ocsp_without_responder_url(ctx):
    """What it catches: `ocsp on|leaf` without `responder`, for a CA whose certificates show no
    OCSP URL (AIA) anywhere, so nothing says its client certificates carry one.

    Why: without `ssl_ocsp_responder` nginx asks the URL in each client certificate; a certificate
    without one gets `certificate status request failed`, a hard failure (nginx-facts §10, lockout
    trap 10). mtlsc cannot see client certificates, so it warns. The server's `ssl_ocsp` covers
    every CA of the server, also those without an `ocsp` line.

    Example: `ca a { bundle "root.pem"  ocsp leaf }`.

    Fix: give a `responder "http://IP:PORT/"`, or make sure the CA puts an OCSP URL in every client
    certificate and waive this warning saying so.
    """
    seen = set()
    for server, cas in _servers_of(ctx):
        found = _server_ocsp(cas)
        if found is None or found[1].responder:
            continue
        owner, ocsp = found
        for ca, certs, _ in cas:
            if any(c.ocsp_urls for c in certs) or ca.name in seen:
                continue
            seen.add(ca.name)
            other = "" if ca is owner else f" (server `{server.names[0]}` checks OCSP for every CA it trusts)"
            yield Finding(ca.ocsp.span if ca is owner else ca.span,
                          f"`ocsp {ocsp.mode}` without `responder`: every client certificate of ca `{ca.name}` must "
                          f"carry an OCSP URL, or nginx rejects it{other}",
                          "add `responder \"http://IP:PORT/\"`, or waive this if the CA writes an OCSP URL in every certificate",
                          related=() if ca is owner else (Related(ocsp.span, "OCSP is turned on here"),))


def _intermediate_certs(certs) -> list[CertInfo]:
    return [c for c in _cas(certs) if not c.self_signed]


def ocsp_intermediate_without_url(ctx):
    """What it catches: `ocsp on` without `responder` where an intermediate of the bundle carries
    no OCSP URL.

    Why: `ssl_ocsp on` asks about the intermediate too, not only the client (nginx-facts §10), and
    without a responder the URL must come from the intermediate itself: none means `certificate
    status request failed` for every client below it (lockout trap 10).

    Example: `ca a { bundle "root.pem" "issuing.pem"  ocsp on }`, issuing.pem without AIA.

    Fix: `ocsp leaf` (check only client certificates), or a `responder` that answers for the
    intermediate as well.
    """
    for server, cas in _servers_of(ctx):
        found = _server_ocsp(cas)
        if found is None or found[1].mode != "on" or found[1].responder:
            continue
        for ca, certs, _ in cas:
            for cert in _intermediate_certs(certs):
                if not cert.ocsp_urls:
                    yield Finding(bundle_span(ca, cert),
                                  f"`ocsp on` asks about intermediate {describe(cert)} too, and it names no OCSP URL: "
                                  "every client below it gets `certificate status request failed`",
                                  "write `ocsp leaf`, or a `responder` that answers for the intermediate too",
                                  related=(Related(found[1].span, "`ocsp on` here"),))


def ocsp_responder_host_name(ctx):
    """What it catches: an OCSP `responder` given by host name rather than an IP address.

    Why: nginx resolves the name once, when it loads the configuration: `nginx -t` and every
    reload fail with `host not found in OCSP responder` if it does not resolve then, and a changed
    address is not seen until the next reload (nginx-facts §10, lockout trap 11).

    Example: `ocsp leaf responder "http://ocsp.example.com/"`.

    Fix: give the responder's IP address, or make sure the name resolves wherever nginx loads.
    """
    for ca in ctx.policy.cas:
        if ca.ocsp is None or not ca.ocsp.responder:
            continue
        host = urlsplit(ca.ocsp.responder).hostname or ""
        try:
            ipaddress.ip_address(host)
        except ValueError:
            yield Finding(ca.ocsp.span,
                          f"OCSP responder host `{host}` is a name: nginx resolves it at load time, and `nginx -t` "
                          "fails if it does not resolve then",
                          "write the responder's IP address, or make sure the name resolves wherever nginx loads")


def ocsp_checks_intermediates(ctx):
    """What it catches (a note): `ocsp on` on a server whose bundle holds intermediates.

    Why: `ssl_ocsp on` queries the status of each intermediate as well as the client's, and any
    failed answer rejects the client (nginx-facts §10): the responder must answer for the
    intermediates too. `ocsp leaf` asks only about the client certificate.

    Example: `ca a { bundle "root.pem" "issuing.pem"  ocsp on responder "http://10.0.0.5/" }`.

    Fix: none needed if the responder answers for the intermediates; else write `ocsp leaf`.
    """
    seen = set()
    for server, cas in _servers_of(ctx):
        found = _server_ocsp(cas)
        if found is None or found[1].mode != "on" or found[0].name in seen:
            continue
        seen.add(found[0].name)
        inter = [c for _, certs, _ in cas for c in _intermediate_certs(certs)
                 if found[1].responder or c.ocsp_urls]
        if inter:
            names = ", ".join(f"`{c.subject}`" for c in inter)
            yield Finding(found[1].span,
                          f"`ocsp on`: nginx also asks the responder about intermediate(s) {names}; a failed answer "
                          "rejects every client below them",
                          "make sure the responder answers for them, or write `ocsp leaf`")
