"""Which nginx locations a server's routes become, and which paths each one covers.

One place for the route -> location rule, read by the emitter (the `location` blocks and the
case-variant gate) and by the model (`mtlsc.model.evaluate`), so the two cannot drift apart:

- `route = /p`  -> `location = /p`: exactly `/p`;
- `route /p/`   -> `location ^~ /p/`: every path starting with `/p/` (nginx answers `/p` with 301);
- `route /p`    -> `location = /p` and `location ^~ /p/`: the path *segment* `/p` and everything
  below it, never `/p-admin` or `/pX` (docs/language.md "route [=] PATH"). A string prefix would let
  `route /static { public }` make `/static-admin/export` public (docs/nginx-facts.md §F5).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlsc import ir
from mtlsc.dn.regex import pcre_literal

# mtlsc's own internal locations (the key check of several CAs on one server) live under this
# prefix; routes may not use it (MTLS036).
INTERNAL_PREFIX = "/.mtlsc/"


@dataclass(frozen=True, slots=True)
class Location:
    exact: bool
    name: str  # the location's path, which is also the URI part of its proxy_pass
    route: ir.Route

    @property
    def text(self) -> str:
        return ("= " if self.exact else "^~ ") + self.name

    def covers(self, path: str) -> bool:
        return path == self.name if self.exact else path.startswith(self.name)


def is_segment(route: ir.Route) -> bool:
    """A prefix route written without a trailing slash: it covers a path segment."""
    return route.match is ir.PathMatch.PREFIX and not route.path.endswith("/")


def _names(route: ir.Route) -> tuple[tuple[bool, str], ...]:
    if route.match is ir.PathMatch.EXACT:
        return ((True, route.path),)
    if is_segment(route):
        return ((True, route.path), (False, route.path + "/"))
    return ((False, route.path),)


def locations(server: ir.Server) -> tuple[Location, ...]:
    """The server's locations in route order. An explicit `route = /p` takes `/p` from a segment
    route `/p`, as nginx's exact match would; the first route naming a location keeps it (the
    checks report the others)."""
    explicit_exact = {r.path for r in server.routes if r.match is ir.PathMatch.EXACT}
    out, seen = [], set()
    for route in server.routes:
        for exact, name in _names(route):
            if exact and name in explicit_exact and route.match is not ir.PathMatch.EXACT:
                continue
            if (exact, name) in seen:
                continue
            seen.add((exact, name))
            out.append(Location(exact, name, route))
    return tuple(out)


def covers_text(route: ir.Route) -> str:
    """The paths a route covers, in words, for `mtlsc explain` and reviewers."""
    if route.match is ir.PathMatch.EXACT:
        return f"{route.path} only"
    if route.path == "/":
        return "every path"
    if is_segment(route):
        return f"{route.path} and {route.path}/..."
    return f"{route.path}... ({route.path[:-1]} is redirected)"


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(s: str) -> str:
    """nginx's PCRE folds ASCII letters only (byte mode, no UTF), and so does this model."""
    return s.translate(_ASCII_LOWER)


def _fold(s: str, case_sensitive: bool) -> str:
    return s if case_sensitive else ascii_lower(s)


def _slash_twin(name: str) -> str:
    """`/p` for `/p/`, `/p/` for `/p`: one path to a backend with non-strict routing."""
    return name[:-1] if name.endswith("/") else name + "/"


def _slash_alias_allowed(location: Location, names: frozenset[str], strict_slashes: bool = False) -> bool:
    """An exact location `/p` whose `/p/` no location claims, or `/p/` whose `/p`: Express's
    default (non-strict) routing serves the twin with the handler of the location's path, while
    nginx routes it elsewhere."""
    return (not strict_slashes and location.exact and location.name != "/"
            and _slash_twin(location.name) not in names)


def is_alias(location: Location, path: str, names: frozenset[str], case_sensitive: bool,
             strict_slashes: bool = False) -> bool:
    """`path` is one a backend may serve as `location`'s path while nginx routed it elsewhere:
    it differs only in ASCII letter case from a path `location` covers (unless the backend is
    case-sensitive), or it is an exact location's path with a trailing `/` added or removed."""
    if location.covers(path):
        return False
    lower, name = _fold(path, case_sensitive), _fold(location.name, case_sensitive)
    if location.exact:
        if lower == name:
            return True
        return _slash_alias_allowed(location, names, strict_slashes) and lower == _slash_twin(name)
    return lower.startswith(name)


def alias_gated(server: ir.Server) -> tuple[tuple[Location, ...], frozenset[str]]:
    """The locations with aliases to refuse, and every location name (for `is_alias`)."""
    locs = locations(server)
    names = frozenset(loc.name for loc in locs)
    case = not server.backend_case_sensitive
    slashes = server.backend_strict_slashes
    return tuple(loc for loc in locs if (case and _has_letter(loc.name))
                 or _slash_alias_allowed(loc, names, slashes)), names


def alias_regex(location: Location, names: frozenset[str], case_sensitive: bool, strict_slashes: bool = False) -> str:
    """A PCRE over `$uri` matching exactly the paths `is_alias` holds for `location`."""
    name = pcre_literal(location.name)
    folded = name if case_sensitive else f"(?i:{name})"
    if location.exact and _slash_alias_allowed(location, names, strict_slashes):
        stem = pcre_literal(location.name.rstrip("/"))
        stem = stem if case_sensitive else f"(?i:{stem})"
        return f"(?!{name}$){stem}/?$"
    if location.exact:
        return f"(?!{name}$){folded}$"
    return f"(?!{name}){folded}"


def slash_twins(server: ir.Server) -> list[tuple[Location, Location]]:
    """Pairs of locations of different routes named `/p` and `/p/`: one path to a backend with
    non-strict routing (Express's default), two to nginx."""
    by_name = {}
    for loc in locations(server):
        by_name.setdefault(loc.name, loc)
    return [(loc, by_name[loc.name + "/"]) for loc in by_name.values()
            if loc.name + "/" in by_name and by_name[loc.name + "/"].route is not loc.route]


def _has_letter(s: str) -> bool:
    return any("a" <= c <= "z" for c in ascii_lower(s))
