"""The run directory: every file written atomically, one writer at a time, nothing of an earlier run lost.

- :func:`write_atomic` writes a temporary file beside the target, flushes it to disk and renames it over the
  target: a kill or a full disk at any moment leaves the previous version whole. Files get the mode a plain
  ``open`` would give (0666 less the umask), and a failed write is one :class:`GradnasError` line.
- :class:`RunDir` claims a directory for one run: it refuses a file or an unwritable place, holds an
  exclusive ``flock`` on the directory until :meth:`~RunDir.release` (a second writer gets one line), removes
  the temporary files a killed write left, and refuses a directory that already holds something unless the run
  is resumed or ``overwrite`` is asked for.
- Every file a run writes there is recorded in its manifest (:data:`MANIFEST`). ``overwrite`` replaces only
  what the manifest names, and only once the new run has proved itself: :meth:`~RunDir.set_aside` (called
  after every input of the new run has been read and checked) moves the recorded files into
  :data:`PREVIOUS`, :meth:`~RunDir.commit` (the new run's first checkpoint) deletes them, and a failure or a
  kill before then puts them back. A user's file, or a symlink, is never moved, replaced or deleted.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import yaml

from .errors import GradnasError

TMP_SUFFIX = ".gradnas-tmp"
#: The record of the files a run wrote into its directory (JSON: ``{"files": [names]}``).
MANIFEST = ".gradnas-run.json"
#: Where ``--overwrite`` keeps the previous run's files until the new run's first checkpoint.
PREVIOUS = ".gradnas-previous"
_DISCARDED = ".gradnas-discarded"  # PREVIOUS renamed once committed, then deleted: a kill in between keeps nothing
#: The files a search or training run writes under fixed names: ``--overwrite`` refuses a directory where one
#: of them is not recorded as a run's (a user's file of that name would be written over).
RUN_FILES = ("checkpoint.pt", "train_checkpoint.pt", "log.jsonl", "tensorboard", "model.pt", "eval.json",
             "genotype.json", "nb201.txt", "config.yaml", "env.json")
#: The names of the diagrams a run draws (gradnas.viz, the shrinking hook's plot), checked the same way.
DIAGRAMS = ("cell*.png", "cell*.svg", "importance.png")
CONFIG = "config.yaml"
_CLAIMED: dict[str, "RunDir"] = {}  # absolute path → the claim this process holds on it


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write into; on success it is flushed, given the usual mode and renamed
    over ``path``; on any failure removed, ``path`` untouched. Errors of the file system are one line."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _file_mode())  # mkstemp's 0600 would make checkpoints private to their writer
        os.replace(tmp, path)
        record(path)
    except OSError as err:
        raise GradnasError(f"cannot write {path}: {_reason(err)}; the previous version is intact") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | Path, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` (bytes, text, or a function writing to a binary file) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


def record(path: str | Path) -> None:
    """Note ``path`` in the manifest of the run directory it lies in, when this process runs there."""
    path = Path(path)
    claim = _CLAIMED.get(os.path.abspath(path.parent))
    if claim is not None and path.name != MANIFEST and path.name not in claim.files:
        claim.files.append(path.name)
        claim._write_manifest()


def read_manifest(directory: str | Path) -> list[str] | None:
    """The names a run recorded writing into ``directory``; None where no run recorded any."""
    path = Path(directory) / MANIFEST
    try:
        files = json.loads(path.read_text())["files"] if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError, KeyError, TypeError):
        raise GradnasError(f"{path} is not a gradnas run record; move it away or pass another --out") from None
    if files is not None and not (isinstance(files, list) and all(isinstance(f, str) and f == Path(f).name
                                                                  and f not in ("", ".", "..") for f in files)):
        raise GradnasError(f"{path} is not a gradnas run record; move it away or pass another --out")
    return files


def run_file(path: str | Path) -> bool:
    """Whether ``path`` is a file a run directory holds: recorded in its manifest, or one of :data:`RUN_FILES`
    beside a checkpoint (a run written before manifests)."""
    path = Path(path)
    if not path.exists() or path.is_dir():
        return False
    recorded = read_manifest(path.parent)
    if recorded is not None:
        return path.name in recorded
    return path.name in RUN_FILES and any((path.parent / n).is_file() for n in ("checkpoint.pt", "train_checkpoint.pt",
                                                                               "model.pt"))


class RunDir:
    """An exclusive claim on ``path`` for one run (see the module docstring). ``resume``: the directory holds
    the run to continue; ``overwrite``: replace the run it holds."""

    def __init__(self, path: str | Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        self.files: list[str] = []  # what this run recorded writing (the manifest's content)
        self._key = None
        self._aside: list[str] | None = None  # the previous run's files while they wait in PREVIOUS
        try:
            if self.path.exists() and not self.path.is_dir():
                raise GradnasError(f"run directory {self.path} is an existing file; pass another --out")
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as err:
            raise GradnasError(f"cannot create run directory {self.path}: {_reason(err)}") from None
        self._finalizer = weakref.finalize(self, os.close, self._fd)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._finalizer()
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise GradnasError(f"run directory {self.path} is in use by another gradnas run") from None
            raise GradnasError(f"cannot lock run directory {self.path}: {_reason(err)}") from None
        try:
            self._prepare(resume, overwrite)
        except BaseException:
            self._finalizer()
            raise
        self._key = os.path.abspath(self.path)
        _CLAIMED[self._key] = self

    def _prepare(self, resume: bool, overwrite: bool) -> None:
        if not os.access(self.path, os.W_OK):
            raise GradnasError(f"cannot write to run directory {self.path}: "
                               f"{os.strerror(errno.EROFS if _read_only(self.path) else errno.EACCES)}")
        try:
            for stale in self.path.glob(f".*{TMP_SUFFIX}"):  # left by a write that was killed: we hold the lock
                stale.unlink()
            _remove(self.path / _DISCARDED)
            if (self.path / PREVIOUS).is_dir():  # an overwrite killed before its first checkpoint: undo it
                self._aside = []
                self._restore()
            held = sorted(p.name for p in self.path.iterdir())
            recorded = read_manifest(self.path)
            if resume:
                self.files = list(recorded or [])
            elif held and not overwrite:
                raise GradnasError(f"{self.path} is not empty (it holds {', '.join(held[:4])}"
                                   f"{', ...' if len(held) > 4 else ''}); pass --resume to continue its run or "
                                   "--overwrite to replace it")
            elif held:
                self._check_overwrite(recorded or [])
        except OSError as err:
            raise GradnasError(f"cannot prepare run directory {self.path}: {_reason(err)}") from None

    def _check_overwrite(self, recorded: list[str]) -> None:
        """Refuse where the new run would write over a file that no run recorded (a user's, or a symlink)."""
        written = [p.name for p in self.path.iterdir()
                   if p.name in RUN_FILES or any(fnmatch.fnmatch(p.name, d) for d in DIAGRAMS)]
        foreign = sorted(n for n in written if n not in recorded or (self.path / n).is_symlink())
        if foreign:
            raise GradnasError(f"--overwrite replaces only the files a gradnas run recorded in {self.path / MANIFEST}; "
                               f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not among them: move "
                               f"{'it' if len(foreign) == 1 else 'them'} away or pass another --out")
        self._aside = [n for n in recorded if os.path.lexists(self.path / n) and not (self.path / n).is_symlink()]

    def set_aside(self) -> None:
        """Overwrite: move the previous run's recorded files (and its manifest) into :data:`PREVIOUS`, once the
        new run has read and checked all its inputs; no-op otherwise."""
        if not self._aside:
            return
        previous = self.path / PREVIOUS
        try:
            previous.mkdir()
            for name in [*self._aside, MANIFEST]:
                os.replace(self.path / name, previous / name)
        except OSError as err:
            if previous.is_dir():
                self._restore()
            raise GradnasError(f"cannot set the previous run in {self.path} aside: {_reason(err)}; it is intact") from None
        self.files = []

    def commit(self) -> None:
        """The new run has its first checkpoint: delete the previous run's files (no-op when none wait)."""
        if self._aside is None:
            return
        self._aside = None
        if (self.path / PREVIOUS).is_dir():
            os.replace(self.path / PREVIOUS, self.path / _DISCARDED)
            _remove(self.path / _DISCARDED)

    def _restore(self) -> None:
        """Put the previous run back: the new run's recorded files go, the set-aside ones return."""
        previous = self.path / PREVIOUS
        # Until the manifest itself is set aside, the one in place is still the previous run's.
        for name in (read_manifest(self.path) or []) if (previous / MANIFEST).exists() else []:
            if (self.path / name).exists() and not (self.path / name).is_symlink():
                _remove(self.path / name)
        for entry in previous.iterdir():
            os.replace(entry, self.path / entry.name)
        previous.rmdir()
        self._aside = None

    def _write_manifest(self) -> None:
        write_atomic(self.path / MANIFEST, json.dumps({"files": self.files}) + "\n")

    def release(self) -> None:
        """Give up the claim (also when the object is collected or the process ends); before :meth:`commit`,
        an overwritten run's files are put back first."""
        if _CLAIMED.get(self._key) is self:
            del _CLAIMED[self._key]
        try:
            if self._aside is not None and (self.path / PREVIOUS).is_dir():
                self._restore()
        except OSError as err:
            raise GradnasError(f"cannot put the previous run in {self.path} back: {_reason(err)}; its files "
                               f"are in {self.path / PREVIOUS}") from None
        finally:
            self._finalizer()


def _remove(path: Path) -> None:
    """Delete a file or a directory tree (never following a symlink); nothing when absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _read_only(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


class RunOwner:
    """What a run (search or training) does with its directory: claim it, set up, give it up on failure or at
    the end. ``run_dir`` is None where nothing is claimed (other data-parallel ranks, a dry run)."""

    run_dir: RunDir | None = None

    def claim_and_setup(self, run_dir: RunDir | None, setup: Callable[[], None]) -> None:
        """Claim, then ``setup`` (which reads and checks every input and writes nothing); only then is an
        overwritten run set aside."""
        self.run_dir = run_dir
        try:
            setup()
            if run_dir is not None:
                run_dir.set_aside()
        except BaseException:
            self.release()
            raise

    def save_checkpoint(self, state: dict, path: Path) -> None:
        """Write ``config.yaml`` (the configuration the checkpoint continues with: a difference later is an
        edit), then the checkpoint; the first one of an overwriting run lets the previous run go."""
        from .search.checkpoint import save_atomic
        write_atomic(path.parent / CONFIG, yaml.safe_dump(state["config"], sort_keys=False))
        save_atomic(state, path)
        if self.run_dir is not None:
            self.run_dir.commit()

    def release(self) -> None:
        """Give up the run directory (the end of ``run`` does)."""
        if self.run_dir is not None:
            self.run_dir.release()
