"""One writer per run directory, and a refused run that leaves its directory as it was.

A training run holds an exclusive lock on its output directory (``.lanistr.lock``: an
``flock`` on a file that names the holder's pid, host, command and start time) from before
its first write to its end. A second run into the directory, or ``--overwrite`` while a run
holds it, is refused with the holder named. The kernel drops the ``flock`` of a process that
dies (even by ``kill -9``), so a lock left behind is taken over with a notice.

:func:`claim` is what the CLI wraps around a training command: the path checks, ``--resume``
without a checkpoint, another run's directory without ``--overwrite``, the lock, and, when the
command fails before it trained a step, the directory put back as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lanistr.errors import CheckpointError, ConfigError, LanistrError

LOCK_NAME = ".lanistr.lock"
#: what a training run leaves in its directory (a fresh run there needs --overwrite)
RUN_FILES = ("metrics.csv", "checkpoints", "best", "tensorboard")


class RunDirectoryBusy(LanistrError):
    """Another live process holds the run directory's lock."""


@dataclass
class RunLock:
    directory: Path
    key: Path
    fd: int
    depth: int = 1


_HELD: dict[Path, RunLock] = {}


def _holder(info: dict) -> str:
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started "
            f"{info.get('started', '?')}" + (f", `{info['command']}`" if info.get("command") else ""))


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 65536, 0)
        info = json.loads(data.decode("utf-8")) if data.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def acquire(directory: str | os.PathLike, command: str = "") -> RunLock:
    """Take the lock of ``directory`` (created if missing) for this process; re-entrant.
    Raises :class:`RunDirectoryBusy` naming the holder when another live process has it."""
    directory = Path(directory)
    key = directory.resolve()
    if key in _HELD:
        _HELD[key].depth += 1
        return _HELD[key]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # no flock (Windows): a pid check instead
        fcntl = None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        info = _read(fd)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirectoryBusy(
                    f"{directory} is in use by another run ({_holder(info)}); wait for it to "
                    "finish or stop it, or choose another --output") from None
        elif info.get("pid") not in (None, os.getpid()) and _pid_alive(info.get("pid")):
            os.close(fd)
            raise RunDirectoryBusy(f"{directory} is in use by another run ({_holder(info)}); "
                                   "wait for it to finish, or choose another --output")
        # The previous holder may have removed the file between our open and our lock.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    if info.get("pid") and info.get("pid") != os.getpid():
        print(f"lanistr: note: {directory}: taking over the lock left by a run that is no "
              f"longer running ({_holder(info)})", file=sys.stderr)
    mine = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(mine) + "\n").encode("utf-8"), 0)
    lock = RunLock(directory, key, fd)
    _HELD[key] = lock
    return lock


def release(lock: RunLock, *, all_levels: bool = False) -> None:
    """Give the lock back (the last release of a re-entrant holder removes the lock file)."""
    lock.depth = 0 if all_levels else lock.depth - 1
    if lock.depth > 0 or _HELD.get(lock.key) is not lock:
        return
    del _HELD[lock.key]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(lock.directory / LOCK_NAME)
    os.close(lock.fd)


def is_locked_by_me(directory: str | os.PathLike) -> bool:
    return Path(directory).resolve() in _HELD


# -- what a run directory holds ----------------------------------------------------------------


def checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints of the run in ``directory``, oldest first."""
    root = Path(directory) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / "trainer_state.json").is_file())


def previous_run(directory: str | os.PathLike) -> list[str]:
    """Names of the files of another training run in ``directory`` (empty: none)."""
    return [name for name in RUN_FILES if (Path(directory) / name).exists()]


def existing_run_error(directory: str | os.PathLike, names: list[str]) -> ConfigError:
    return ConfigError(f"{directory} already holds a training run ({', '.join(names)}): "
                       "continue it with --resume, choose another --output, or replace it "
                       "with --overwrite")


# -- putting a directory back as it was --------------------------------------------------------


class Snapshot:
    """The files under a directory (sizes only): enough to undo what a refused run added
    (new files and directories, lines appended to a log)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.top = self.root
        while not self.top.parent.exists() and self.top.parent != self.top:
            self.top = self.top.parent  # the highest directory this run would create
        self.existed = self.root.exists()
        self.sizes: dict[Path, int | None] = {}
        if self.existed:
            for dirpath, _dirnames, filenames in os.walk(self.root):
                base = Path(dirpath)
                self.sizes[base] = None
                for name in filenames:
                    with contextlib.suppress(OSError):
                        self.sizes[base / name] = (base / name).stat().st_size

    def trained(self) -> bool:
        """Whether the run logged or saved anything (then nothing is undone)."""
        metrics = self.root / "metrics.csv"
        size = metrics.stat().st_size if metrics.is_file() else None
        if size != self.sizes.get(metrics):
            return True
        for name in ("checkpoints", "model", "best"):
            path = self.root / name
            if path.exists() and path not in self.sizes:
                return True
        return any(p not in self.sizes for p in (self.root / "checkpoints").glob("step-*"))

    def restore(self) -> None:
        """Remove what was added since the snapshot; cut appended files back to their size."""
        if not self.existed:
            shutil.rmtree(self.top, ignore_errors=True)
            return
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=True):
            base = Path(dirpath)
            for name in list(dirnames):
                if base / name not in self.sizes:
                    shutil.rmtree(base / name, ignore_errors=True)
                    dirnames.remove(name)
            for name in filenames:
                path = base / name
                old = self.sizes.get(path, -1)
                with contextlib.suppress(OSError):
                    if old == -1 or old is None:
                        path.unlink()
                    elif path.stat().st_size > old:
                        os.truncate(path, old)


# -- the CLI's claim on a training run's directory ---------------------------------------------


@contextlib.contextmanager
def claim(directory: str | os.PathLike, *, resume: bool, overwrite: bool,
          command: str = "") -> Iterator[Path]:
    """Everything a training command checks about ``--output`` before it writes: a directory
    (not a file) it may write, a checkpoint to continue with ``--resume``, no other run's
    files without ``--overwrite``, and no other live run (the lock, held until the end). A
    command that fails before it logged a step leaves the directory as it found it."""
    from lanistr.io import check_output_dir

    directory = check_output_dir(directory)
    if resume:
        if not directory.is_dir():
            raise CheckpointError(f"--resume: {directory} does not exist; nothing to continue "
                                  "(start a new run without --resume)")
        if not checkpoints(directory):
            raise CheckpointError(f"--resume: {directory} holds no checkpoint "
                                  f"({directory / 'checkpoints'}/step-*/trainer_state.json); "
                                  "nothing to continue (start a new run without --resume)")
    snapshot = Snapshot(directory)
    try:
        lock = acquire(directory, command)
    except BaseException:
        if not snapshot.existed:
            snapshot.restore()
        raise
    try:
        if not resume and not overwrite:
            names = previous_run(directory)
            if names:
                raise existing_run_error(directory, names)
        yield directory
    except BaseException as exc:
        release(lock, all_levels=True)
        if isinstance(exc, (LanistrError, OSError)) and not snapshot.trained():
            snapshot.restore()
        raise
    else:
        release(lock, all_levels=True)
