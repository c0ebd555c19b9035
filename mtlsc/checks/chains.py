"""Chain-level lockout (MTLS1xx) and over-trust (MTLS2xx) read from the CA and CRL files.

nginx builds each client's chain from one trust file and one CRL file per server (the CAs its
routes name), so these checks walk chains: which CA certificate issued which, how deep a client
sits below its root, which CRL covers which certificate, what OCSP will ask, and which CAs could
stand in for each other. Single-certificate facts are in `trust_files.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator


from mtlsc import ir
from mtlsc.pki.binding import impersonations, key_bound
from mtlsc.pki.chains import ca_certs, intermediates, needed_depth, parsed, root_path
from mtlsc.checks.trust_files import bundle_span, ca_files, crl_span, in_system_trust_dir, public_match
from mtlsc.diagnostics import Finding, Related
from mtlsc.pki import CertInfo, CrlInfo, describe


def servers_of(ctx) -> Iterator[tuple[ir.Server, list[tuple[ir.Ca, tuple[CertInfo, ...], tuple[CrlInfo, ...]]]]]:
    files = {ca.name: (ca, certs, crls) for ca, certs, crls in ca_files(ctx, leaves=True)}
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
    because the intermediate's own check needs the root's CRL (docs/nginx-facts.md §4, lockout trap 1).

    Example: `bundle "root.pem" "issuing.pem"  crl "issuing.crl"`.

    Fix: give every CA certificate its CRL (`crl "root.crl" "issuing.crl"`), or serve a CA
    without CRLs on its own server.
    """
    seen = set()
    for server, cas in servers_of(ctx):
        crls = [crl for _, _, cs in cas for crl in cs]
        turned_on = next(((ca, cs[0]) for ca, _, cs in cas if cs), None)
        if turned_on is None:
            continue
        on_span = crl_span(*turned_on)
        for ca, certs, _ in cas:
            if ca.leaf:
                continue  # no CRL can be had for a leaf: MTLS121
            for cert in ca_certs(certs):
                if _covered(cert, crls) or (ca.name, cert.fingerprint) in seen:
                    continue
                seen.add((ca.name, cert.fingerprint))
                name = server.names[0]
                if cert.self_signed and any(_covered(c, crls) for c in ca_certs(certs)):
                    what = (f"server `{name}` checks CRLs and has the intermediate's, but none for the root "
                            f"{describe(cert)}: the intermediate's own check needs it, so every client is rejected")
                else:
                    what = (f"server `{name}` checks CRLs but has none for {'the root ' * cert.self_signed}"
                            f"{describe(cert)}: every client below it is rejected")
                yield Finding(bundle_span(ca, cert),
                              f"{what} (`unable to get certificate CRL`)",
                              f"add the CRL of `{cert.subject}` to the `crl` of ca `{ca.name}`",
                              label="this certificate has no CRL",
                              related=(Related(on_span, "CRL checking is turned on here"),))


def verify_depth_too_small(ctx):
    """What it catches: a `depth` smaller than the number of intermediates the bundle puts between
    a client and its root.

    Why: `ssl_verify_depth N` allows N intermediates between the client certificate and the root,
    counting neither; one more and the client gets `unable to get issuer certificate` (not "chain
    too long"). Depth 0 rejects every client of an intermediate (docs/nginx-facts.md §3, lockout trap 4).

    Example: `bundle "root.pem" "mid.pem" "issuing.pem"  depth 1`.

    Fix: set `depth` to the number the help names.
    """
    for ca, certs, _ in ca_files(ctx):
        found = needed_depth(certs)
        if found and found[0] > ca.depth:
            need, deepest = found
            yield Finding(ca.depth_span or ca.span or bundle_span(ca, deepest),
                          f"ca `{ca.name}` has depth {ca.depth}, but clients of {describe(deepest)} sit {need} "
                          f"intermediate(s) below the root: they get `unable to get issuer certificate`",
                          f"write `depth {need}` in ca `{ca.name}`",
                          related=(Related(bundle_span(ca, deepest), f"needs depth {need}"),))


def chain_without_root(ctx):
    """What it catches: an intermediate whose chain does not reach a self-signed root inside the bundle.

    Why: nginx allows no partial chains: with only the intermediate in the file, its clients get
    `unable to get issuer certificate`, even when they send the chain themselves (docs/nginx-facts.md §3,
    lockout trap 5).

    Example: `bundle "issuing.pem"` (the root that signed it is missing).

    Fix: add the root (and any missing intermediate) to `bundle`, root first.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in ca_certs(certs):
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
    trap as docs/nginx-facts.md §12; proven on nginx in tests/test_checks_pki_nginx.py).

    Example: a root with `pathlen:0` and an intermediate below it that issues the clients.

    Fix: reissue the ancestor with a larger pathLen (or none), or issue the clients from the ancestor.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in ca_certs(certs):
            path = root_path(cert, certs) or []
            for k, above in enumerate(path[1:], start=1):
                below = intermediates(path[:k + 1])
                if above.path_length is not None and below > above.path_length:
                    yield Finding(bundle_span(ca, cert),
                                  f"{describe(cert)} is {below} CA level(s) below {describe(above)}, whose pathLen is "
                                  f"{above.path_length}: its clients get `path length constraint exceeded`",
                                  f"reissue `{above.subject}` with a pathLen of at least {below}, or without one",
                                  related=(Related(bundle_span(ca, above), f"pathLen {above.path_length}"),))
                    break


# ----- over-trust ------------------------------------------------------------------------------------

def issuer_dn_shared_between_cas(ctx):
    """What it catches: two CAs of one server that hold certificates with the same subject DN.

    Why: nginx shows a route only `$ssl_client_i_dn`; mtlsc binds each route to its CA by the issuer
    DN, which cannot tell two issuers with the same DN apart (docs/nginx-facts.md §E2, over-trust trap 9).
    OpenSSL compares names with ASCII case folded and runs of whitespace as one: it may take the
    other CA's certificate for the issuer of a client naming no key, and refuse the client, so a
    `leaf` holder's name that differs only so locks another CA's clients out (§F11).

    Example: `ca a { bundle "a.pem" }` and `ca b { bundle "copy-of-a.pem" }` on one server.

    Fix: serve the two CAs on different server names or ports.
    """
    seen = set()
    for server, cas in servers_of(ctx):
        owner: dict[object, tuple[ir.Ca, CertInfo]] = {}
        for ca, certs, _ in cas:
            for cert in certs:
                first = next((owner[k] for k in _name_keys(cert) if k in owner), (ca, cert))
                for k in _name_keys(cert):
                    owner.setdefault(k, first)
                if first[0].name != ca.name and (ca.name, cert.fingerprint) not in seen:
                    seen.add((ca.name, cert.fingerprint))
                    yield Finding(bundle_span(ca, cert),
                                  f"ca `{ca.name}` and ca `{first[0].name}` both hold a certificate named `{cert.subject}`",
                                  "nginx cannot tell their clients apart; serve them on different server names or ports",
                                  related=(Related(bundle_span(*first), f"ca `{first[0].name}`"),))


_OPENSSL_SPACE = re.compile(r"[ \t\n\v\f\r]+")


def _name_keys(cert: CertInfo) -> tuple:
    """What makes two subjects one name: to nginx's map (as printed, ASCII case folded) and to
    OpenSSL (X509_NAME_cmp's canonical form: string values trimmed, runs of whitespace as one
    space, ASCII letters folded)."""
    canon = tuple(tuple(sorted((a.oid.dotted_string, _OPENSSL_SPACE.sub(" ", a.value).strip(" ").encode().lower()
                               if isinstance(a.value, str) else a.value) for a in rdn))
                  for rdn in parsed(cert.pem).subject.rdns)
    return cert.subject.encode().lower(), canon


def public_ca_in_bundle(ctx):
    """What it catches: a bundle certificate that belongs to the public web PKI: a root or
    intermediate of certifi's Mozilla store or of the system store (same fingerprint, or same
    subject and key), or a certificate issued by one of them.

    Why: every certificate such a CA issues, to anyone, verifies as SUCCESS (docs/nginx-facts.md §1, §8,
    over-trust trap 10); an identity list is then the only thing between the internet and the route.

    Example: `bundle "/etc/ssl/certs/ISRG_Root_X1.pem"`.

    Fix: trust a private CA dedicated to client certificates.
    """
    for ca, certs, _ in ca_files(ctx):
        for cert in certs:
            how = public_match(cert)
            if how:
                yield Finding(bundle_span(ca, cert), f"{describe(cert)} {how}: anyone it issues a certificate to passes",
                              "trust a private CA made for client certificates", label="public web PKI")


def bundle_in_system_trust_store(ctx):
    """What it catches: a `bundle` file inside a system trust store (`/etc/ssl/certs`,
    `/etc/pki/tls`, `/usr/share/ca-certificates`, certifi's directory).

    Why: those files are public CA bundles, updated by the OS behind the policy's back; any
    certificate from any of their CAs yields SUCCESS (docs/nginx-facts.md §1, §8, over-trust trap 10).

    Example: `bundle "/etc/ssl/certs/ca-certificates.crt"`.

    Fix: keep the private CA's certificates next to the policy and name those.
    """
    for ca in ctx.policy.cas:
        for i, path in enumerate(ca.bundle):
            where = in_system_trust_dir(path)
            if where:
                span = ca.bundle_spans[i] if i < len(ca.bundle_spans or ()) else ca.span
                yield Finding(span, f"`{path}` is in the system trust store `{where}`: every public CA would be trusted "
                              "for client certificates", "name a file holding only your private CA, next to the policy",
                              label="system trust store")


def ca_can_mint_lookalike_issuer(ctx):
    """What it catches: on a server with several CAs, a CA certificate that could sign a sub-CA
    carrying the name of another CA's certificate, with the copy's clients still within the
    server's verify depth, and no pathLen or name constraint to stop it.

    Why: nginx shows a route only names, so a look-alike sub-CA would pass the issuer-DN binding
    with a byte-identical `i_dn` and `s_dn` (docs/nginx-facts.md §E2, over-trust trap 9). mtlsc therefore binds that CA's
    routes by key as well: the client certificate's signature must verify under a public key of
    the route's CA (njs, docs/language.md "Several CAs on one server"). The emitted config needs
    the njs module, and each request to those routes costs one signature check.

    Example: `ca a { bundle "a-root.pem" "a-issuing.pem" }` and `ca b { ... }` on one server,
    b-root without pathLen.

    Fix: nothing, if njs is loaded (Debian: libnginx-mod-http-js); to need neither njs nor the
    check, serve each CA on its own server name or port, or use CAs whose pathLen or name
    constraints rule the copy out.
    """
    for server, cas in servers_of(ctx):
        seen = set()
        for imp in impersonations([(ca, certs) for ca, certs, _ in cas]):
            if (imp.by.name, imp.of.name) in seen:
                continue
            seen.add((imp.by.name, imp.of.name))
            names = ", ".join(f"`{c.subject}`" for c in imp.copied)
            yield Finding(bundle_span(imp.by, imp.minter),
                          f"{describe(imp.minter)} of ca `{imp.by.name}` can sign a sub-CA named {names}: routes of "
                          f"ca `{imp.of.name}` on server `{server.names[0]}` are bound by key as well as by name (njs)",
                          f"load the njs module (libnginx-mod-http-js); or serve ca `{imp.by.name}` and ca "
                          f"`{imp.of.name}` on different server names or ports",
                          label="can mint a look-alike issuer",
                          related=(Related(imp.of.span, f"the routes of ca `{imp.of.name}` check the key"),))


def ca_key_not_bindable(ctx):
    """What it catches: a CA whose routes must be bound by key (another CA of the server could copy
    its name: MTLS232) holding a certificate whose key the njs check cannot verify with: Ed25519,
    Ed448, DSA, or an elliptic curve other than P-256, P-384 and P-521.

    Why: the key check would refuse every client that certificate issued (a lockout), and binding
    by name alone lets the other CA's look-alike sub-CA in (over-trust; docs/nginx-facts.md §E2).

    Example: `ca a { bundle "ed25519-root.pem" }` beside `ca b { ... }` on one server.

    Fix: serve the CA on its own server name or port, where no other CA shares its trust file.
    """
    for server in ctx.policy.servers:
        for name, keys in key_bound(server, ctx.pki).items():
            ca = next(c for c in server.cas if c.name == name)
            for cert in (k for k in keys if isinstance(k, CertInfo)):
                yield Finding(bundle_span(ca, cert),
                              f"{describe(cert)} of ca `{name}` has a key the njs check cannot verify with, and ca "
                              f"`{name}` shares server `{server.names[0]}` with a CA that could copy its name",
                              f"serve ca `{name}` on its own server name or port",
                              label="key not usable for binding")


def verify_depth_larger_than_needed(ctx):
    """What it catches: a `depth` larger than the chains the bundle builds.

    Why: nginx then accepts chains longer than the CA issues: a client holding any sub-CA of
    the CA's certificates (or one a client sends itself) is accepted (docs/nginx-facts.md §3). When
    several CAs share a server, nginx uses the largest depth for all of them.

    Example: `bundle "root.pem" "issuing.pem"  depth 3`.

    Fix: set `depth` to what the bundle needs (the help names it). If clients send their own
    intermediates on purpose, put those in the bundle instead.
    """
    for ca, certs, _ in ca_files(ctx):
        found = needed_depth(certs)
        if found and found[0] < ca.depth:
            yield Finding(ca.depth_span or ca.span or bundle_span(ca, found[1]),
                          f"ca `{ca.name}` has depth {ca.depth}, but its bundle needs only {found[0]}: nginx accepts "
                          "longer chains than the CA issues", f"write `depth {found[0]}` in ca `{ca.name}`")


def several_roots_in_one_ca(ctx):
    """What it catches: a CA whose bundle holds more than one self-signed root with different names.

    Why: every root in the file is a trust anchor for every route of the CA: an extra root (a
    copied bundle, a neighbour's CA) widens trust silently (docs/nginx-facts.md §1, over-trust trap 10).
    Roots of the same name (a renewal) are not reported.

    Example: `bundle "our-root.pem" "partner-root.pem"`.

    Fix: one CA block per root, each named by the routes it serves; or waive it for a planned migration.
    """
    for ca, certs, _ in ca_files(ctx):
        roots = {}
        for cert in certs:
            if cert.self_signed:
                roots.setdefault(cert.subject.lower(), cert)
        if len(roots) > 1:
            first, *rest = roots.values()
            for cert in rest:
                yield Finding(bundle_span(ca, cert),
                              f"ca `{ca.name}` has a second root {describe(cert)} besides `{first.subject}`: both "
                              "anchor every route of the CA", "split the roots into separate `ca` blocks",
                              related=(Related(bundle_span(ca, first), "the first root"),))
