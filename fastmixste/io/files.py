"""Atomic file writes: a reader never sees a half-written file, and an interrupted write leaves the old one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", *, fsync: bool = False, **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success rename it over ``path``, on error remove it.

    ``fsync=True`` flushes the data to disk before the rename (checkpoints: survive a power cut, not just a crash).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; keep the usual permissions of a written file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_write` for writers that need a file name (matplotlib animations, FFmpeg): yields a
    temporary path beside ``path`` with the same suffix; renamed over ``path`` on success, removed on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------- input budgets
#: The largest array (or zip member) read from an input file, decompressed: larger ones are refused before any
#: memory is allocated for them. FASTMIXSTE_MAX_INPUT_BYTES overrides it.
MAX_INPUT_BYTES = 8 * 2**30
#: A zip member (npz array) larger than MAX_RATIO_FLOOR that inflates more than this is refused as a zip bomb.
MAX_ZIP_RATIO = 200
MAX_RATIO_FLOOR = 64 * 2**20
#: The deepest nesting of JSON arrays/objects (and YAML collections) read from an input file.
MAX_NESTING = 64


def max_input_bytes() -> int:
    """The stated limit on one array read from an input (MAX_INPUT_BYTES, or FASTMIXSTE_MAX_INPUT_BYTES)."""
    try:
        return int(os.environ.get("FASTMIXSTE_MAX_INPUT_BYTES", MAX_INPUT_BYTES))
    except ValueError:
        return MAX_INPUT_BYTES


def human_bytes(n: float) -> str:
    """12345678 -> '11.8 MiB'."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_writable_folder(folder: str | os.PathLike) -> Path:
    """Make ``folder`` (and its parents) and create and remove a temporary file in it: a command calls this before
    its work starts, so that missing permissions or a file in the way fail at once, not after the work.

    Raises the OSError the system gives (its ``strerror`` says why); callers wrap it in their own message.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=folder):
        pass
    return folder


def check_regular_file(path: str | os.PathLike, what: str) -> Path:
    """Refuse (ValueError, FileNotFoundError) anything but a regular file: a FIFO, a device such as /dev/zero or a
    socket would block or never end. Never opens the file."""
    import stat

    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path}: no such file") from None
    if stat.S_ISDIR(mode):
        raise ValueError(f"{what} {path}: is a folder; expected a file")
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or
                stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
        raise ValueError(f"{what} {path}: is {kind}; expected a regular file (pipes and devices are not read)")
    return path


def check_nesting(text: str | bytes, where: str, limit: int = MAX_NESTING) -> None:
    """Refuse JSON text nested deeper than ``limit`` arrays/objects (ValueError naming ``where``) before parsing it:
    Python's parser would recurse once per level."""
    import numpy as np

    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    b = np.frombuffer(raw, dtype=np.uint8)
    if b.size == 0:
        return
    # Brackets inside strings do not count: mask out string contents (quotes not preceded by a backslash escape).
    quote = b == ord('"')
    if quote.any():
        backslash = b == ord("\\")
        # A quote is escaped when an odd run of backslashes precedes it.
        idx = np.flatnonzero(quote)
        escaped = np.zeros(idx.size, dtype=bool)
        for k in np.flatnonzero(backslash[np.maximum(idx - 1, 0)] & (idx > 0)):  # few: only quotes after a \
            i = j = int(idx[k])
            while j > 0 and backslash[j - 1]:
                j -= 1
            escaped[k] = (i - j) % 2 == 1
        real = np.zeros_like(quote)
        real[idx[~escaped]] = True
        inside = (np.cumsum(real) % 2).astype(bool) & ~real
    else:
        inside = np.zeros(b.size, dtype=bool)
    step = np.zeros(b.size, dtype=np.int64)
    step[(b == ord("[")) | (b == ord("{"))] = 1
    step[(b == ord("]")) | (b == ord("}"))] = -1
    step[inside] = 0
    depth = int(np.cumsum(step).max())
    if depth > limit:
        raise ValueError(f"{where}: JSON nested {depth} levels deep; at most {limit} levels are read")


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file (links and relative paths included); False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def check_output(path: str | os.PathLike, what: str, *, inputs: dict[str, str | os.PathLike | None] | None = None,
                 ours: Callable[[Path], bool] | None = None, overwrite: bool = False) -> None:
    """Refuse (ValueError) an output path that is one of the command's inputs (``inputs``: flag -> path), or that
    holds an existing file this kind of command did not write (``ours(path)`` says whether it did) unless
    ``overwrite``. A command never writes over its own input, even with ``overwrite``."""
    path = Path(path)
    for flag, source in (inputs or {}).items():
        if source is not None and same_file(path, source):
            raise ValueError(f"{what} {path} is the command's input ({flag} {source}): a command never writes over "
                             f"its own input; choose another output path")
    if path.is_file() and not overwrite and not (ours is not None and ours(path)):
        raise ValueError(f"{what} {path} already exists and is not an output of this command: refusing to replace "
                         f"it; choose another path, or pass --overwrite to replace it")
