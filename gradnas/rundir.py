"""The run directory: every file written atomically, one writer at a time, nothing of an earlier run lost.

- :func:`write_atomic` writes a temporary file beside the target, flushes it to disk and renames it over the
  target: a kill or a full disk at any moment leaves the previous version whole. Files get the mode a plain
  ``open`` would give (0666 less the umask), and a failed write is one :class:`GradnasError` line.
- :class:`RunDir` claims a directory for one run: it refuses a file or an unwritable place, holds an
  exclusive ``flock`` on the directory until :meth:`release` (a second writer gets one line), removes the
  temporary files a killed write left, and refuses a directory that already holds a run unless the run is
  resumed or ``overwrite`` is asked for (then the previous run's checkpoints, log and model are removed
  first, so that neither a resume nor TensorBoard can mix the two runs).
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import GradnasError

TMP_SUFFIX = ".gradnas-tmp"
#: What a search or training run leaves that a new run must not mix with (``--overwrite`` removes them).
RUN_FILES = ("checkpoint.pt", "train_checkpoint.pt", "log.jsonl", "tensorboard", "model.pt", "eval.json",
             "genotype.json", "nb201.txt")


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` (bytes, text, or a function writing to a binary file) to ``path`` atomically."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _file_mode())  # mkstemp's 0600 would make checkpoints private to their writer
        os.replace(tmp, path)
    except OSError as err:
        raise GradnasError(f"cannot write {path}: {_reason(err)}; the previous version is intact") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


class RunDir:
    """An exclusive claim on ``path`` for one run (see the module docstring). ``resume``: the directory holds
    the run to continue; ``overwrite``: replace the run it holds."""

    def __init__(self, path: str | Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise GradnasError(f"run directory {self.path} is an existing file; pass another --out")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise GradnasError(f"cannot create run directory {self.path}: {_reason(err)}") from None
        self._finalizer = weakref.finalize(self, os.close, self._fd)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self.release()
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise GradnasError(f"run directory {self.path} is in use by another gradnas run") from None
            raise GradnasError(f"cannot lock run directory {self.path}: {_reason(err)}") from None
        try:
            self._prepare(resume, overwrite)
        except BaseException:
            self.release()
            raise

    def _prepare(self, resume: bool, overwrite: bool) -> None:
        if not os.access(self.path, os.W_OK):
            raise GradnasError(f"cannot write to run directory {self.path}: "
                               f"{os.strerror(errno.EROFS if _read_only(self.path) else errno.EACCES)}")
        try:
            for stale in self.path.glob(f".*{TMP_SUFFIX}"):  # left by a write that was killed: we hold the lock
                stale.unlink()
            held = sorted(p.name for p in self.path.iterdir())
            if held and not resume:
                if not overwrite:
                    raise GradnasError(f"{self.path} is not empty (it holds {', '.join(held[:4])}"
                                       f"{', ...' if len(held) > 4 else ''}); pass --resume to continue its run or "
                                       "--overwrite to replace it")
                for name in RUN_FILES:
                    p = self.path / name
                    shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        except OSError as err:
            raise GradnasError(f"cannot prepare run directory {self.path}: {_reason(err)}") from None

    def release(self) -> None:
        """Give up the claim (also when the object is collected or the process ends)."""
        self._finalizer()


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


class RunOwner:
    """What a run (search or training) does with its directory: claim it, set up, give it up on failure or at
    the end. ``run_dir`` is None where nothing is claimed (other data-parallel ranks, a dry run)."""

    run_dir: RunDir | None = None

    def claim_and_setup(self, run_dir: RunDir | None, setup: Callable[[], None]) -> None:
        self.run_dir = run_dir
        try:
            setup()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give up the run directory (the end of ``run`` does)."""
        if self.run_dir is not None:
            self.run_dir.release()
