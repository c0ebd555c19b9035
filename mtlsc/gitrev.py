"""Loading a policy for `mtlsc diff`: from files, or from a git revision (`--git REF`).

A policy is not one file: its CA bundles and CRLs are part of it (paths relative to the policy),
so a revision is rebuilt in a temporary directory with the policy AND every CA/CRL file it names
at that revision, each read with `git show REF:path`. Diagnostics then name `REF:path`, not the
temporary directory. The facts (`Pki`) are read before the directory goes, so the returned
policy's file paths point nowhere: compare CA files through the `Pki`, never by path.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from mtlsc import ir
from mtlsc.diagnostics import Diagnostic, error
from mtlsc.pipeline import read_and_lower
from mtlsc.pki import Pki, load_pki
from mtlsc.source import point

Loaded = tuple[ir.Policy | None, Pki | None, list[Diagnostic]]


def load_from_files(paths: list[str]) -> Loaded:
    """(policy, pki, diagnostics) of policy files compiled together; the checks are not run.

    policy is None when the files cannot be read, parsed or lowered."""
    result = read_and_lower(paths)
    if result.policy is None:
        return None, None, result.diagnostics
    pki, diags = load_pki(result.policy)
    return result.policy, pki, result.diagnostics + diags


class GitError(Exception):
    pass


def _git(cwd: Path, *args: str) -> bytes:
    try:
        run = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, check=False)
    except OSError as exc:
        raise GitError(f"cannot run git: {exc.strerror or exc}") from None
    if run.returncode != 0:
        raise GitError(run.stderr.decode(errors="replace").strip() or f"git {args[0]} failed")
    return run.stdout


def _relabel(diags: list[Diagnostic], tmp: Path, label: str) -> list[Diagnostic]:
    """Point diagnostics at `REF:path` instead of the temporary copy."""
    prefix = str(tmp) + "/"

    def fix(text: str) -> str:
        return text.replace(prefix, label)

    return [replace(d, message=fix(d.message), span=replace(d.span, path=fix(d.span.path)),
                    related=tuple(replace(r, span=replace(r.span, path=fix(r.span.path)), message=fix(r.message))
                                  for r in d.related)) for d in diags]


def _fail(path: str, ref: str, reason: str) -> Loaded:
    return None, None, [error("MTLS900", point(f"{ref}:{path}"), f"cannot read the policy file at `{ref}`: {reason}",
                              "check the revision and that the policy file is committed there")]


def load_from_git(path: str, ref: str) -> Loaded:
    """(policy, pki, diagnostics) of the policy file `path` as it was at git revision `ref`.

    `path` is a file in a git work tree (it need not exist there any more). The CA and CRL files
    the policy names are taken from the same revision; one missing there is reported (MTLS901)
    like a missing file on disk."""
    where = Path(path).absolute()
    try:
        top = Path(_git(where.parent, "rev-parse", "--show-toplevel").decode().strip()).resolve()
        rel = where.parent.resolve().relative_to(top) / where.name
    except GitError as exc:
        return _fail(path, ref, str(exc))
    except ValueError:
        return _fail(path, ref, "the file is outside the git work tree")
    with tempfile.TemporaryDirectory(prefix="mtlsc-git-") as tmp_name:
        tmp = Path(tmp_name).resolve()
        try:
            text = _git(top, "show", f"{ref}:{rel.as_posix()}")
        except GitError as exc:
            return _fail(rel.as_posix(), ref, str(exc))
        target = tmp / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text)
        front = read_and_lower([str(target)])
        label = f"{ref}:"
        if front.policy is None:
            return None, None, _relabel(front.diagnostics, tmp, label)
        for name in sorted({f for ca in front.policy.cas for f in (*ca.bundle, *ca.crls)}):
            _fetch(top, ref, tmp, Path(name))
        pki, diags = load_pki(front.policy)
        return front.policy, pki, _relabel(front.diagnostics + diags, tmp, label)


def _fetch(top: Path, ref: str, tmp: Path, file: Path) -> None:
    """Copy one CA/CRL file from the revision into the temporary tree; a file outside the
    repository or absent at `ref` is left missing, for `load_pki` to report."""
    try:
        rel = file.resolve().relative_to(tmp)
        data = _git(top, "show", f"{ref}:{rel.as_posix()}")
    except (ValueError, GitError):
        return
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(data)
