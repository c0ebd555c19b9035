"""Source text and positions: what every diagnostic points into."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from mtlsc import files


@dataclass(frozen=True, slots=True)
class Source:
    """One input file, read once; diagnostics quote from it."""

    path: str
    text: str

    def line_text(self, line: int) -> str:
        lines = _lines(self.text)
        return lines[line - 1] if 0 < line <= len(lines) else ""


@functools.lru_cache(maxsize=4)
def _lines(text: str) -> list[str]:
    """The lines of `text` as the parser counts them: only `\n` ends a line (`str.splitlines` also
    splits at `\f`, `\x85`, U+2028 ..., which would quote the wrong line). Cached: rendering a
    diagnostic per line of a large file must not split the whole text each time."""
    return [line.removesuffix("\r") for line in text.split("\n")]


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file. 1-based lines and columns; `end_col` is exclusive."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


def span_field():
    """Spans never take part in equality: two trees equal but for positions compare equal."""
    return field(default=None, compare=False, repr=False, hash=False)


def read_source(path: str | Path) -> Source:
    """Read a policy file as UTF-8. Raises OSError / UnicodeDecodeError for the caller to report."""
    return Source(str(path), files.read_text(path))  # the same limits as for the files a policy names


def point(path: str, line: int = 1, col: int = 1) -> Span:
    """A zero-width span, for findings about a whole file."""
    return Span(path, line, col, line, col)
