"""The Jinja environment every emitter renders with: it refuses to render any plain `str`, so user
text reaches a template only through `emit.quote` (`Safe`); numbers and booleans render as they are.
"""

from __future__ import annotations

import functools
import os

from mtlsc import __version__
from mtlsc.emit.quote import Safe


class UnquotedString(TypeError):
    pass


def _finalize(value):
    if isinstance(value, Safe) or isinstance(value, (int, float)) or value is None:
        return "" if value is None else value
    if isinstance(value, str):
        raise UnquotedString(f"template tried to render an unquoted string: {value!r}")
    raise UnquotedString(f"template tried to render a {type(value).__name__}")


@functools.cache
def environment() -> "jinja2.Environment":
    import jinja2  # imported when something is emitted: `mtlsc check` never needs it (benchmarks/)

    from mtlsc import cache

    class QuietBytecodeCache(jinja2.FileSystemBytecodeCache):
        """Compiled templates kept in the user's cache (compiling them took 15 ms of every
        `mtlsc compile`); a cache that cannot be read or written is only slower."""

        def load_bytecode(self, bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:
                bucket.reset()

        def dump_bytecode(self, bucket) -> None:
            try:
                os.makedirs(self.directory, exist_ok=True)
                super().dump_bytecode(bucket)
            except OSError:
                pass

    return jinja2.Environment(
        loader=jinja2.PackageLoader("mtlsc", "emit"),
        bytecode_cache=QuietBytecodeCache(str(cache.cache_dir() / "templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        finalize=_finalize,
    )


def render(template: str, **context) -> str:
    return environment().get_template(template).render(version=Safe(__version__), **context)
