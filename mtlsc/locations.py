"""Which nginx locations a server's routes become, and which paths each one covers.

One place for the route -> location rule, read by the emitter (the `location` blocks and the
case-variant gate) and by the model (`mtlsc.evaluate`), so the two cannot drift apart:

- `route = /p`  -> `location = /p`: exactly `/p`;
- `route /p/`   -> `location ^~ /p/`: every path starting with `/p/` (nginx answers `/p` with 301);
- `route /p`    -> `location = /p` and `location ^~ /p/`: the path *segment* `/p` and everything
  below it, never `/p-admin` or `/pX` (docs/language.md "Routes"). A string prefix would let
  `route /static { public }` make `/static-admin/export` public (docs/nginx-facts.md §F5).
"""

from __future__ import annotations

from dataclasses import dataclass

from mtlsc import ir


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


def route_covers(route: ir.Route, path: str) -> bool:
    """Whether `route`'s own locations cover `path` (ignoring other routes)."""
    return any(path == name if exact else path.startswith(name) for exact, name in _names(route))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def ascii_lower(s: str) -> str:
    """nginx's PCRE folds ASCII letters only (byte mode, no UTF), and so does this model."""
    return s.translate(_ASCII_LOWER)


def is_case_variant(location: Location, path: str) -> bool:
    """`path` is covered by `location` when letter case is ignored, and not when it is not: a
    case-insensitive backend (Express's default, IIS, ...) would serve it as that location's path
    while nginx routed it elsewhere."""
    if location.covers(path):
        return False
    lower, name = ascii_lower(path), ascii_lower(location.name)
    return lower == name if location.exact else lower.startswith(name)


def case_gated(server: ir.Server) -> tuple[Location, ...]:
    """Locations whose case variants are refused: all with a letter in their name, unless the
    server's backend says it routes case-sensitively (`backend_paths case_sensitive`)."""
    if server.backend_case_sensitive:
        return ()
    return tuple(loc for loc in locations(server) if _has_letter(loc.name))


def _has_letter(s: str) -> bool:
    return any("a" <= c <= "z" for c in ascii_lower(s))
