"""Atomic file output: a reader never sees a half-written file, and a crash never
corrupts what was already on disk."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    Works for files and directories. On an exception the temporary is removed and the
    old ``path`` (if any) is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        yield tmp
        failpoint("atomic.written")
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~_umask())
        if path.is_dir() and tmp.is_dir():
            # Directories cannot be renamed over a non-empty directory: swap them (a crash
            # between the two renames is undone by recover_atomic).
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            failpoint("atomic.swapping")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        failpoint("atomic.renamed")
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


# -- output paths checked before any work ------------------------------------------------------


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_parent(path: Path, what: str) -> None:
    """The nearest existing ancestor of ``path`` must be a directory this process can write."""
    from lanistr.errors import LanistrError

    base = _first_existing(path.parent)
    if not base.is_dir():
        raise LanistrError(f"{what} {path}: {base} is a file, not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise LanistrError(f"{what} {path}: cannot write in {base} (permission denied)")


def check_output_file(path: str | os.PathLike, overwrite: bool = True, *,
                      what: str = "--output") -> Path:
    """Refuse, before any work, an output file that cannot be written: a directory at
    ``path``, a file where a parent directory should be, no permission to write, or an
    existing file when ``overwrite`` is False. Returns ``path`` as a Path."""
    from lanistr.errors import LanistrError

    path = Path(path)
    if path.is_dir():
        raise LanistrError(f"{what} {path}: is a directory; give a file name, e.g. "
                           f"{path / 'output.json'}")
    if path.exists() and not overwrite:
        raise LanistrError(f"{what} {path}: the file exists; add --overwrite to replace it, "
                           "or choose another name")
    _check_writable_parent(path, what)
    return path


def check_output_dir(path: str | os.PathLike, overwrite: bool = True, *, what: str = "--output",
                     owned: tuple[str, ...] = ()) -> Path:
    """Refuse, before any work, an output directory that cannot be written: a file at
    ``path`` or above it, or no permission to write. ``owned`` names the files this command
    writes: if any of them is already there and ``overwrite`` is False, refuse too (an earlier
    result would be replaced). Returns ``path`` as a Path."""
    from lanistr.errors import LanistrError

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LanistrError(f"{what} {path}: is a file, not a directory; give a directory")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise LanistrError(f"{what} {path}: cannot write in it (permission denied)")
        found = [name for name in owned if (path / name).exists()]
        if found and not overwrite:
            raise LanistrError(f"{what} {path}: already holds {', '.join(found)}; add "
                               "--overwrite to replace it, or choose another directory")
    else:
        _check_writable_parent(path, what)
    return path


def recover_atomic(directory: str | os.PathLike) -> list[str]:
    """Undo what a process killed inside :func:`atomic_path` left in ``directory``: a
    ``.NAME.old`` whose NAME is missing goes back to NAME (the swap did not finish), and
    ``.NAME.*.tmp`` / ``.NAME.old`` leftovers are removed. Returns the names removed or
    restored."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    done = []
    for entry in sorted(directory.iterdir()):
        name = entry.name
        if name.startswith(".") and name.endswith(".old"):
            target = directory / name[1:-len(".old")]
            if not target.exists():
                os.replace(entry, target)
            elif entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            done.append(name)
        elif name.startswith(".") and (name.endswith(".tmp") or name.endswith(".deleting")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            done.append(name)
    return done


# -- fault injection for the crash tests ------------------------------------------------------

_FAILPOINT_HITS: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Where ``LANISTR_FAILPOINT=name:N`` is set, kill this process (SIGKILL, as a power cut
    or the OOM killer would) on the N-th time it passes ``name``. A no-op otherwise; the
    crash tests use it to stop a save at a chosen point."""
    spec = os.environ.get("LANISTR_FAILPOINT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _FAILPOINT_HITS[name] = _FAILPOINT_HITS.get(name, 0) + 1
    if _FAILPOINT_HITS[name] == int(count or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
