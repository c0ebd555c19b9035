"""Emitters: IR (+ PKI facts) -> output files. One module per output, its template beside it.

Every emitter is a pure function `emit(policy, pki) -> dict[relative path, text]`. The Jinja
environment refuses to render any plain `str`: user text must come through `emit.quote`, which
returns `Safe`. Numbers and booleans render as they are.
"""

from __future__ import annotations

import functools

from mtlsc.emit.templates import UnquotedString, environment, render  # noqa: F401 (re-exported)


def emit_all(policy, pki, taken_prefixes: frozenset[str] = frozenset()) -> dict[str, str]:
    """Run every emitter; two emitters claiming one path is a bug, not a silent overwrite.
    `taken_prefixes`: nginx variable prefixes other servers of the same nginx use (`mtlsc apply`)."""
    from mtlsc.emit import nginx, testscript, variables

    out: dict[str, str] = {}
    for emit in (functools.partial(nginx.emit, taken_prefixes=taken_prefixes), variables.emit, testscript.emit):
        for path, text in emit(policy, pki).items():
            if path in out:
                raise RuntimeError(f"two emitters write {path}")
            out[path] = text
    return dict(sorted(out.items()))
