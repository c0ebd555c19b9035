"""The http-context file every server shares (HTTP_CONF, `nginx/00-mtlsc.conf`): the default
servers that refuse unknown SNI, and the map and variables hash sizes mtlsc's maps need. `mtlsc
apply` renders it for all servers installed in one nginx; mtlsc.coexist holds the user's own
settings against these sizes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mtlsc import ir
from mtlsc.emit import quote
from mtlsc.emit.quote import Safe
from mtlsc.emit.templates import render
from mtlsc.emit.tls import DefaultServer, default_tls
from mtlsc.nginx_conf import listen_text_key

HTTP_CONF = "nginx/00-mtlsc.conf"


def http_conf(sources: Iterable[str], listens: Iterable[str], hash_sizes: tuple[int, int],
              host: ir.HostNginx | None = None, profiles: dict[str, str] | None = None) -> str:
    """HTTP_CONF for servers from `sources` listening on `listens` (one entry per server and listen
    address): `mtlsc apply` renders it for every server installed in one nginx, whichever policy each
    came from. `host`: the user's own nginx config (mtlsc.coexist), whose default servers and hash
    settings are left to it. `profiles`: the TLS profile of the servers of each listen address
    (default `intermediate`), whose protocols, TLS 1.3 suites and groups its default server carries
    for them (docs/nginx-facts.md §14)."""
    listens = list(listens)
    taken = host.default_servers if host else frozenset()
    keyed = {t: listen_text_key(t) for t in set(listens)}
    settings = http_settings(hash_sizes, len(listens), host)
    theirs = [quote.bare(t) for t in sorted(keyed) if keyed[t] in taken]
    # Named only when something is left to it: otherwise the file is the one a blind compile makes.
    adapted = host is not None and (theirs or any(h.theirs for h in settings))
    profiles = profiles or {}
    return render("nginx_http.conf.j2", sources=[quote.comment(p) for p in sorted(set(sources))],
                  defaults=[DefaultServer(quote.bare(t), default_tls(profiles.get(t, "intermediate")))
                            for t in sorted(keyed) if keyed[t] not in taken], theirs=theirs,
                  settings=settings, origin=quote.comment(host.origin) if adapted else None)


@dataclass
class HttpSetting:
    name: Safe
    value: int
    theirs: bool  # the user's nginx config sets it: mtlsc leaves it out (nginx refuses a duplicate)


def http_settings(hash_sizes: tuple[int, int], servers: int, host: ir.HostNginx | None) -> list[HttpSetting]:
    """The hash sizes mtlsc needs for `servers` servers (listen addresses counted each), each left to
    the user's config when it sets it (mtlsc.coexist checks that the user's value is big enough)."""
    var_bucket, var_max = variables_hash_sizes(servers)
    taken = host.http_settings if host else frozenset()
    return [HttpSetting(Safe(name), value, name in taken) for name, value in (
        ("map_hash_bucket_size", hash_sizes[0]), ("map_hash_max_size", hash_sizes[1]),
        ("variables_hash_bucket_size", var_bucket), ("variables_hash_max_size", var_max))]


def hash_element(name_length: int) -> int:
    """Bytes one name takes in an nginx hash bucket (ngx_hash.h NGX_HASH_ELT_SIZE, 64-bit)."""
    return 8 + ((name_length + 2 + 7) // 8) * 8


# Variables mtlsc's maps declare per server, generously (a few, plus 2-4 per distinct allow list).
VARIABLES_PER_SERVER = 32


def variables_hash_sizes(servers: int) -> tuple[int, int]:
    """variables_hash sizes for the variables mtlsc's servers declare, beside nginx's own (about 150
    in a stock build), its modules' and the user's: with nginx's defaults (64, 1024) some ten
    servers' maps already made every `nginx -t` warn `could not build optimal variables_hash`.
    A function of the number of servers only, so that `compile` and `apply` (which renders this for
    servers of several compiles) agree. Names stay under 46 characters (variable_prefixes): one
    takes at most 64 bytes of a bucket, and a 128-byte bucket holds two to five."""
    max_size = 2048
    while max_size < 4 * (VARIABLES_PER_SERVER * servers + 512):  # 512: room for everyone else's variables
        max_size *= 2
    return 128, max_size


def _sources(policy: ir.Policy) -> list[str]:
    return [s.span.path for s in policy.servers if s.span]


def _listen_text(listen: ir.Listen) -> str:
    return f"{listen.address}:{listen.port}" if listen.address else str(listen.port)


def _default_listens(policy: ir.Policy) -> list[str]:
    """Every address mtlsc listens on gets a default server mtlsc owns (docs/nginx-facts.md §5)."""
    return [_listen_text(l) for s in policy.servers for l in s.listens]


def _hash_sizes(views) -> tuple[int, int]:
    """map_hash sizes that fit the longest key and the largest map (nginx refuses to start otherwise)."""
    # Regex keys are compiled, not hashed: only exact keys need room in a bucket.
    keys = [e.key for v in views for m in v.maps for e in m.entries if not e.key.startswith('"~')]
    longest = max((len(k) for k in keys), default=0)
    need = hash_element(longest) + 8  # plus the bucket's terminating pointer
    bucket = 64
    while bucket < need:
        bucket *= 2
    largest = max((len(m.entries) for v in views for m in v.maps), default=0)
    max_size = 2048
    while max_size < 2 * largest:
        max_size *= 2
    return bucket, max_size
