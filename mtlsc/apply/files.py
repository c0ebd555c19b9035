"""Live files: stage the new ones beside their targets, swap them in by rename, put a snapshot back;
and the dry run, `nginx -t` on a mirror of the conf tree with the new files in place."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from mtlsc.apply.history import fsync_dir, write_file_atomic
from mtlsc.apply.nginx import NginxControl
from mtlsc.apply.result import Progress


# ----- live files --------------------------------------------------------------------------------------

def _stage(files: dict[str, bytes]) -> dict[str, Path]:
    """Write every new file beside its target (hidden name, fsynced); nothing live changes yet."""
    staged: dict[str, Path] = {}
    try:
        for dest, data in sorted(files.items()):
            target = Path(dest)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.mtlsc-new"
            mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            staged[dest] = tmp
    except BaseException:
        _discard(staged)
        raise
    return staged


def _discard(staged: dict[str, Path]) -> None:
    for tmp in staged.values():
        with contextlib.suppress(OSError):
            tmp.unlink()


def _swap(staged: dict[str, Path], remove: list[str]) -> None:
    """Rename each staged file over its target (atomic per file), then drop files no longer wanted."""
    for dest, tmp in sorted(staged.items()):
        os.replace(tmp, dest)
    for path in remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    for d in {Path(p).parent for p in [*staged, *remove]}:
        fsync_dir(d)


def _restore(snapshot: dict[str, tuple[bytes, int] | None]) -> None:
    """Put every snapshotted path back as it was: content and mode, or absent."""
    for path, saved in sorted(snapshot.items()):
        if saved is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            fsync_dir(Path(path).parent)
        else:
            write_file_atomic(Path(path), saved[0], saved[1])


# ----- dry run: nginx -t on a mirror of the conf tree ---------------------------------------------------

def _mirror(src: Path, dst: Path, keep_real: set[Path]) -> None:
    """Make `dst` look like `src`: symlinks to every entry, except directories on the way to a
    path in `keep_real`, which become real directories (mirrored the same way)."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        entries = list(src.iterdir())
    except OSError:
        return
    for entry in entries:
        if any(entry == k or k.is_relative_to(entry) for k in keep_real) and entry.is_dir() and not entry.is_symlink():
            _mirror(entry, dst / entry.name, keep_real)
        elif entry not in keep_real:
            (dst / entry.name).symlink_to(entry)


def _dry_run(ctl: NginxControl, files: dict[str, bytes], remove: list[str], log: Progress) -> tuple[bool, str]:
    """Run `nginx -t` on a temporary copy of the configuration with the new files in place: the
    main config's directory is mirrored by symlinks, the directories that change (the conf dir, the
    install dirs) are real copies, and the main config and new files point into the mirror."""
    main = ctl.main_conf()
    conf_dir = main.parent
    with tempfile.TemporaryDirectory(prefix="mtlsc-dry-run-") as tmp:
        root = Path(tmp)
        changed_dirs = {Path(p).parent for p in [*files, *remove]}
        inside = {d for d in changed_dirs if d.is_relative_to(conf_dir)}
        outside = sorted(changed_dirs - inside)
        mapping = {conf_dir: root / "conf"}
        _mirror(conf_dir, root / "conf", inside | {main})
        for i, d in enumerate(outside):
            mapping[d] = root / "ext" / str(i)
            _mirror(d, mapping[d], set())
        for d in inside:  # the directories that change: copies of the files, not links
            for entry in d.iterdir() if d.is_dir() else []:
                link = root / "conf" / entry.relative_to(conf_dir)
                if link.is_symlink() and entry.is_file():
                    link.unlink()
                    link.write_bytes(entry.read_bytes())

        def where(path: str) -> Path:
            p = Path(path)
            for base in sorted(mapping, key=lambda b: len(str(b)), reverse=True):
                if p.is_relative_to(base):
                    return mapping[base] / p.relative_to(base)
            return p

        pattern = re.compile("|".join(re.escape(str(b).rstrip("/") + "/")
                                      for b in sorted(mapping, key=lambda b: len(str(b)), reverse=True)))

        def rewrite(text: str) -> str:
            return pattern.sub(lambda m: str(where(m.group(0))) + "/", text)

        for path in remove:
            with contextlib.suppress(FileNotFoundError):
                where(path).unlink()
        for path, data in files.items():
            target = where(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            target.write_bytes(rewrite(data.decode("utf-8")).encode("utf-8") if path.endswith(".conf") else data)
        mirror_main = where(str(main))
        mirror_main.write_text(rewrite(main.read_text(errors="replace")))
        log(f"dry run: nginx -t on a copy of {conf_dir} in {root}")
        return ctl.test(mirror_main)
