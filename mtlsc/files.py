"""Reading the files a user names (policies, CA bundles, CRLs, test certificates): regular files
only, and at most `MAX_BYTES`. `bundle "/dev/zero"` once grew `mtlsc check` past 5 GB; a FIFO
would block it forever. Failures are OSErrors whose `strerror` says why, for located diagnostics.
"""

from __future__ import annotations

import errno
import os
import stat

# Far above any real bundle or CRL (the system trust store is ~200 KB; a 50 MB bundle is the
# hostile-input test), far below what would hurt the machine.
MAX_BYTES = 64 * 1024 * 1024

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def read_bytes(path: str | os.PathLike, limit: int = MAX_BYTES) -> bytes:
    """The contents of the regular file `path`, or OSError (not regular, too large, unreadable)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # O_NONBLOCK: opening a FIFO must not wait
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            raise OSError(errno.EINVAL, f"it is {kind}, not a regular file")
        if info.st_size > limit:
            raise OSError(errno.EFBIG, f"it is {info.st_size:,} bytes; mtlsc reads files up to {limit:,} bytes")
        chunks, size = [], 0
        while size <= limit:  # the file may grow while it is read
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise OSError(errno.EFBIG, f"it grew past {limit:,} bytes while being read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, limit: int = MAX_BYTES) -> str:
    """`read_bytes` decoded as UTF-8 (UnicodeDecodeError for the caller to report)."""
    return read_bytes(path, limit).decode("utf-8")
