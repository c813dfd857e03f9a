"""Reading .npz / .npy files from users without ever running code from them.

``np.load`` with pickles allowed unpickles object arrays, and unpickling can call any importable function:
a data file downloaded from anywhere could run code on load. The VideoPose3D format stores its dicts exactly
that way (``positions_3d``: a 0-d object array holding subject -> action -> array), so this module reads such
files with a restricted unpickler instead. Its ``find_class`` resolves only the numpy globals that rebuild
arrays, dtypes and scalars (under their numpy 1.x and 2.x module names) and a few builtin containers; dicts,
lists, tuples, strings and numbers need no globals at all. Anything else — a function to call through REDUCE, a
foreign class, a persistent id — is refused with an error naming the file, the array and the foreign global,
before it is called. Plain (non-object) arrays are read with ``allow_pickle=False``.

    >>> arrays = read_npz("data_3d_h36m.npz")        # {"positions_3d": array(<dict>, dtype=object)}
    >>> arrays["positions_3d"].item()["S1"]["Walking"].shape
    (1383, 32, 3)

Sizes are checked before memory is allocated: an array whose header declares more than
``fastmixste.io.files.MAX_INPUT_BYTES`` (8 GiB; FASTMIXSTE_MAX_INPUT_BYTES) or more bytes than the file holds, and an
npz member that inflates more than ``MAX_ZIP_RATIO`` times (a zip bomb), are refused; only regular files are read.

Errors are ``DataFileError`` (a ``ValueError``): ``UnsafeFileError`` for foreign pickled objects,
``CorruptFileError`` for truncated or damaged files; each message names the file.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from .files import MAX_RATIO_FLOOR, MAX_ZIP_RATIO, check_regular_file, human_bytes, max_input_bytes

__all__ = [
    "CorruptFileError", "DataFileError", "MissingKeyError", "UnsafeFileError", "describe_file_start", "read_npy",
    "read_npz", "read_npz_keys",
]

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_NPY_MAGIC = b"\x93NUMPY"


class DataFileError(ValueError):
    """A data file that cannot be used: not the expected format, damaged, or holding foreign pickled objects."""


class UnsafeFileError(DataFileError):
    """A data file that holds pickled objects other than arrays, containers, strings and numbers."""


class CorruptFileError(DataFileError):
    """A data file that is truncated or damaged (bad zip structure, CRC mismatch, cut-off array data)."""


class MissingKeyError(KeyError, ValueError):
    """A file that lacks an entry it must have. A KeyError (for callers that catch those) that prints plainly."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # numpy 1.x pickles name numpy.core.multiarray, numpy 2.x numpy._core.multiarray; both load on either.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct  # (subtype, shape, dtype) -> empty ndarray
        allowed[(module, "scalar")] = multiarray.scalar  # (dtype, bytes) -> numpy scalar
    return allowed


# Builtins that plain data needs a global for: sets (protocols < 4 rebuild them by calling set), complex numbers,
# bytes written by protocol 2 under Python 3 (_codecs.encode(str, "latin1")), ordered dicts.
_BUILTIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): codecs.encode,
    ("collections", "OrderedDict"): OrderedDict,
}
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}
_ALLOWED: dict[tuple[str, str], Any] = {}


def allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object: every global the restricted unpickler resolves; nothing else is reachable."""
    if not _ALLOWED:
        _ALLOWED.update(_numpy_globals())
        _ALLOWED.update(_BUILTIN_GLOBALS)
    return _ALLOWED


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose only reachable globals are allowed_globals(); `where` names the file/array in errors."""

    def __init__(self, file: io.BytesIO, where: str) -> None:
        # latin1 lets Python 2 pickles of arrays load (their raw data arrives as str); fix_imports maps py2 names.
        super().__init__(file, encoding="latin1", fix_imports=True)
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        module = _PY2_MODULES.get(module, module)
        obj = allowed_globals().get((module, name))
        if obj is None:
            raise UnsafeFileError(
                f"{self.where}: refusing to unpickle {module}.{name}: data files may only hold arrays, dicts, "
                f"lists, strings and numbers, and nothing else is ever unpickled (it could run code). This is "
                f"not a plain VideoPose3D-format file; check where it came from"
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"{self.where}: refusing to unpickle a persistent object reference ({pid!r:.60})")


def describe_file_start(head: bytes) -> str:
    """The first bytes of a file -> what they look like, for error messages ("it is a raw Python pickle; ...")."""
    if not head:
        return "it is empty (0 bytes)"
    if head[:1] == b"\x80":
        return ("it is a raw Python pickle; pickles are never loaded from data files (unpickling can run "
                "arbitrary code)")  # fmt: skip
    if head.startswith(_NPY_MAGIC):
        return "it is a single .npy array"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it looks like JSON text"
    return f"it starts with {head[:16]!r}"


def _unpickle_object_array(f: io.BytesIO, where: str) -> np.ndarray:
    try:
        obj = _RestrictedUnpickler(f, where).load()
    except DataFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            struct.error, UnicodeDecodeError, OverflowError, MemoryError, RecursionError) as exc:  # fmt: skip
        raise CorruptFileError(f"{where} is corrupt: its object array data cannot be read "
                               f"({type(exc).__name__}: {exc})") from exc  # fmt: skip
    if not isinstance(obj, np.ndarray):
        raise CorruptFileError(f"{where} is corrupt: an object array entry holds a pickled {type(obj).__name__}, "
                               f"not an array")  # fmt: skip
    return obj


def _read_npy_bytes(data: bytes, where: str) -> np.ndarray:
    """The bytes of one .npy file -> array; object arrays through the restricted unpickler."""
    f = io.BytesIO(data)
    if not data.startswith(_NPY_MAGIC):
        raise DataFileError(f"{where}: not a .npy array: {describe_file_start(data[:16])}")
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # 3.0: utf8 field names; only a private reader exists
            shape, _, dtype = np.lib.format._read_array_header(f, version)  # type: ignore[attr-defined]
    except (ValueError, EOFError, struct.error, SyntaxError, TypeError) as exc:
        raise CorruptFileError(f"{where} is corrupt: bad .npy header ({exc})") from exc
    _check_declared_size(tuple(shape), dtype, len(data) - f.tell(), where)
    if dtype.hasobject:
        array = _unpickle_object_array(f, where)
        if array.shape != tuple(shape):
            raise CorruptFileError(f"{where} is corrupt: header says shape {tuple(shape)}, the data holds "
                                   f"{array.shape}")  # fmt: skip
        return array
    f.seek(0)
    try:
        return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:  # numpy reports short data as ValueError
        raise CorruptFileError(f"{where} is corrupt or truncated: {exc}") from exc


def _check_declared_size(shape: tuple[int, ...], dtype: np.dtype, available: int, where: str) -> None:
    """Refuse a .npy header whose shape x itemsize exceeds the stated limit or (plain dtypes) the bytes present."""
    count = 1
    for n in shape:
        count *= int(n)  # Python ints: no overflow however large the header's numbers
    declared = count * (8 if dtype.hasobject else dtype.itemsize)
    limit = max_input_bytes()
    if declared > limit:
        raise DataFileError(f"{where}: its header declares an array of shape {shape} and dtype {dtype} "
                            f"({human_bytes(declared)}), above the {human_bytes(limit)} limit on one input array "
                            f"(FASTMIXSTE_MAX_INPUT_BYTES); refusing to allocate it")
    if not dtype.hasobject and declared > available:
        raise CorruptFileError(f"{where} is corrupt or truncated: its header declares shape {shape} and dtype {dtype} "
                               f"({human_bytes(declared)}), but only {human_bytes(available)} of data follow")


def _check_member(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse an npz member whose declared size exceeds the limit, or that inflates like a zip bomb."""
    limit = max_input_bytes()
    if info.file_size > limit:
        raise DataFileError(f"{where}: the archive declares {human_bytes(info.file_size)} for this array, above the "
                            f"{human_bytes(limit)} limit on one input array (FASTMIXSTE_MAX_INPUT_BYTES)")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > MAX_RATIO_FLOOR and ratio > MAX_ZIP_RATIO:
        raise DataFileError(f"{where}: {human_bytes(info.compress_size)} of compressed data inflate to "
                            f"{human_bytes(info.file_size)} ({ratio:.0f}x, more than the {MAX_ZIP_RATIO}x real data "
                            f"reaches): refusing a zip bomb")


def _check_file(path: Path) -> None:
    try:
        check_regular_file(path, "data file")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except ValueError as exc:
        raise DataFileError(str(exc)) from None


def read_npz(path: str | os.PathLike, keys: list[str] | None = None) -> dict[str, np.ndarray]:
    """An .npz archive -> {name: array}, never running code from the file.

    keys: read only these entries (the others are not decompressed); missing ones are simply absent.
    Object arrays (pickled dicts/lists, as VideoPose3D writes) are rebuilt by the restricted unpickler.
    Raises FileNotFoundError, or DataFileError naming the file: not an npz (raw pickle, text, .npy),
    CorruptFileError (truncated, bad CRC, damaged array), UnsafeFileError (a foreign pickled object).
    """
    path = Path(path)
    _check_file(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        raise DataFileError(f"{path}: not a readable npz file (a zip archive of .npy arrays): "
                            f"{describe_file_start(head)}")
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if keys is not None and key not in keys:
                    continue
                _check_member(info, f"{path}[{key!r}]")
                out[key] = _read_npy_bytes(zf.read(info), f"{path}[{key!r}]")
    except (zipfile.BadZipFile, zlib.error, EOFError, struct.error, NotImplementedError) as exc:
        detail = f"compressed data is damaged: {exc}" if isinstance(exc, zlib.error) else f"{type(exc).__name__}: {exc}"
        raise CorruptFileError(f"file {path} is corrupt or truncated ({detail}); replace it with a fresh copy") from exc
    return out


def read_npz_keys(path: str | os.PathLike) -> list[str]:
    """The entry names of an .npz archive (nothing is decompressed or unpickled)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            return [n[:-4] if n.endswith(".npy") else n for n in zf.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, EOFError, struct.error) as exc:
        raise CorruptFileError(f"file {path} is corrupt or truncated ({type(exc).__name__}: {exc}); replace it "
                               f"with a fresh copy") from exc


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """A .npy file -> array, never running code from the file (object arrays via the restricted unpickler)."""
    path = Path(path)
    _check_file(path)
    size, limit = path.stat().st_size, max_input_bytes()
    if size > limit:
        raise DataFileError(f"{path}: {human_bytes(size)}, above the {human_bytes(limit)} limit on one input array "
                            f"(FASTMIXSTE_MAX_INPUT_BYTES)")
    return _read_npy_bytes(path.read_bytes(), str(path))
