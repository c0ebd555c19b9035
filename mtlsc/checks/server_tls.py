"""The server's own TLS profile (MTLS240-242): `tls old`, profiles that nginx cannot keep apart on one
address, and addresses where your own default server decides (docs/nginx-facts.md §14). The server's
certificate and key files are checked in `server_cert.py`.
"""

from __future__ import annotations

from mtlsc import ir
from mtlsc.diagnostics import Finding, Related
from mtlsc.tls_profiles import PROFILES


# ----- the profile -----------------------------------------------------------------------------------

def old_tls_profile(ctx):
    """What it catches: a server with `tls old`.

    Why: Mozilla's `old` profile accepts TLS 1.0 and 1.1, CBC suites, 3DES and RSA key exchange (no
    forward secrecy) for clients from before 2014; mtlsc also has to lower OpenSSL 3.0's security level
    to 0 for them (docs/nginx-facts.md §14). Every client of the server, not only the old ones, can then be
    downgraded to what the attacker breaks best.

    Example: `server legacy.example.com { tls old ... }`.

    Fix: `tls intermediate` (the default) once the old clients are gone; serve them meanwhile on a
    name or port of their own, so the other servers keep `intermediate`.
    """
    for server in ctx.policy.servers:
        if server.tls.profile == "old":
            yield Finding(server.tls.profile_span or server.span,
                          f"server `{server.names[0]}` accepts TLS 1.0 and 1.1, CBC and 3DES suites and RSA key exchange "
                          "(Mozilla's `old` profile)",
                          "use `tls intermediate` (the default) unless clients older than 2014 must connect; give those a "
                          "server name or port of their own", label="old profile")


def _addresses(ctx) -> dict[tuple[str, int], list[ir.Server]]:
    from mtlsc.coexist import listen_key

    out: dict[tuple[str, int], list[ir.Server]] = {}
    for server in ctx.policy.servers:
        for listen in server.listens:
            out.setdefault(listen_key(listen.address, listen.port), []).append(server)
    return out


def tls_profiles_differ_on_address(ctx):
    """What it catches: servers on one listen address with different `tls` profiles.

    Why: nginx takes the protocol versions, the TLS 1.3 suites and the TLS 1.3 key-exchange groups from
    the address's default server, before it reads the SNI name (docs/nginx-facts.md §14): a `modern`
    server beside an `intermediate` one still accepts TLS 1.2, and an `old` one gets no TLS 1.0.

    Example: `server a.example.com { tls modern ... }` and `server b.example.com { ... }`, both on 443.

    Fix: give both servers one profile, or give one of them its own port or address.
    """
    for (address, port), servers in sorted(_addresses(ctx).items()):
        profiles = {s.tls.profile for s in servers}
        if len(profiles) > 1:
            first, *rest = sorted(servers, key=lambda s: PROFILES[s.tls.profile].rank)
            for other in rest:
                if other.tls.profile != first.tls.profile:
                    where = f"{address}:{port}" if address != "*" else str(port)
                    yield Finding(other.tls.profile_span or other.span,
                                  f"servers on {where} use different TLS profiles: `{first.names[0]}` {first.tls.profile}, "
                                  f"`{other.names[0]}` {other.tls.profile}; nginx gives every server of an address the "
                                  "protocols of its default server",
                                  "give them one `tls` profile, or move one to its own port or address",
                                  related=[Related(first.tls.profile_span or first.span, f"`{first.names[0]}` is {first.tls.profile}")])


def default_server_decides_tls(ctx):
    """What it catches (a note): a listen address where your own nginx config has the default server
    (`compile --nginx-conf`, `apply`), so mtlsc writes none there.

    Why: nginx takes the protocol versions, TLS 1.3 suites and TLS 1.3 groups of every server on the
    address from its default server (docs/nginx-facts.md §14): yours decides them, whatever the `tls`
    profile of mtlsc's servers says.

    Example: `server { listen 443 ssl default_server; ssl_reject_handshake on; }` in your nginx.conf.

    Fix: give your default server the profile's lines: `ssl_protocols`, `ssl_conf_command Ciphersuites`
    and `ssl_ecdh_curve` as mtlsc writes them in its own default server (docs/language.md "Server TLS").
    """
    host = ctx.policy.host
    if host is None or not host.default_servers:
        return
    for key, servers in sorted(_addresses(ctx).items()):
        if key in host.default_servers:
            s = servers[0]
            p = PROFILES[s.tls.profile]
            yield Finding(s.span, f"your nginx config's default server on {key[0]}:{key[1]} decides the TLS protocols "
                          f"and TLS 1.3 groups of `{s.names[0]}`, not its `{p.name}` profile",
                          f"give that default server `ssl_protocols {' '.join(p.protocols)};`, `ssl_conf_command Ciphersuites "
                          "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;` and "
                          "`ssl_ecdh_curve X25519:prime256v1:secp384r1;`", label="TLS settings from your default server")
