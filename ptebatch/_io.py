"""Files: writing them so that a crash never leaves a half-written one, and reading ``.npz``
members in place (memory-mapped) or in bounded pieces."""

from __future__ import annotations

import math
import mmap as _mmap
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np

__all__ = ["atomic_write", "NpzReader", "READ_ERRORS"]

# What a truncated, corrupt or foreign file can raise while it is read as an .npz: zipfile's
# own errors, a short read, a bad .npy header, a broken deflate stream, an encrypted or
# unsupported member (RuntimeError, NotImplementedError).
READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    zlib.error,
    RuntimeError,
)

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # 30 bytes; the last two are name and extra lengths
_LOCAL_MAGIC = b"PK\x03\x04"
_UTF8_NAME = 0x800
_ENCRYPTED = 0x1
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def atomic_write(path, write: Callable) -> None:
    """Call ``write(binary_file)`` on a temporary file, then rename it over ``path``.

    A crash leaves the old file or the new one, never a partial one.  The new
    file gets the usual permissions (0666 less the umask), not mkstemp's 0600.
    Renaming over a file that is memory-mapped is safe: the old mapping keeps
    the old file's data until it is closed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class Layout(NamedTuple):
    """An ``.npy`` member's array: what its header says."""

    shape: tuple
    fortran: bool
    dtype: np.dtype

    @property
    def c_contiguous(self) -> bool:
        """Whether NumPy would flag the loaded array C-contiguous."""
        return not self.fortran or 0 in self.shape or sum(d > 1 for d in self.shape) <= 1


def _npy_header(fh) -> Layout | None:
    """The ``.npy`` header at ``fh``'s position, leaving ``fh`` at the data; None for versions
    other than 1.0 and 2.0 (read those with NumPy's own reader)."""
    reader = _HEADER_READERS.get(np.lib.format.read_magic(fh))
    if reader is None:
        return None
    shape, fortran, dtype = reader(fh)
    return Layout(tuple(shape), bool(fortran), dtype)


def _read_full(f, buf: memoryview) -> int:
    """``readinto`` until ``buf`` is full or the stream ends; the bytes read."""
    done = 0
    while done < len(buf):
        n = f.readinto(buf[done:])
        if not n:
            break
        done += n
    return done


class _Stored:
    """A stored member's bytes read straight from the file (no copy through zipfile's
    buffers), its CRC-32 checked when the last byte is read.  It keeps its own position,
    so that several can be read in turns from one file object."""

    def __init__(self, fh, info: zipfile.ZipInfo, start: int):
        self._fh, self._info = fh, info
        self._pos, self._left = start, info.compress_size
        self._crc = 0

    def read(self, n: int = -1) -> bytes:
        want = self._left if n < 0 else min(n, self._left)
        self._fh.seek(self._pos)
        data = self._fh.read(want)
        self._account(want, data)
        return data

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")[: self._left]
        self._fh.seek(self._pos)
        n = self._fh.readinto(view) or 0
        self._account(len(view), view[:n])
        return n

    def _account(self, want: int, data) -> None:
        if want and not len(data):
            raise EOFError(f"{self._info.filename}: the member runs past the end of the file")
        self._crc = zlib.crc32(data, self._crc)
        self._pos += len(data)
        self._left -= len(data)
        if not self._left and self._crc != self._info.CRC:
            raise zipfile.BadZipFile(f"Bad CRC-32 for file {self._info.filename!r}")


class NpzReader:
    """The ``.npy`` members of an ``.npz`` file, by name without the ``.npy`` suffix.

    ``array`` memory-maps a member stored uncompressed (``ZIP_STORED``, what ``np.savez``
    writes) and reads any other member whole; ``layout`` reads only a member's header;
    ``chunks`` streams a member's elements through one bounded buffer.  Members read
    through :mod:`zipfile` have their CRC-32 checked; a memory-mapped member only when
    ``verify`` asks for it (which reads the member once, through a bounded buffer).
    Errors are those of :data:`READ_ERRORS`.  Use as a context manager; mapped arrays
    stay valid after it closes.
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fh = open(self.path, "rb")  # closed by close()
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            self._zip = zipfile.ZipFile(self._fh)
        except BaseException:
            self._fh.close()
            raise
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            if info.filename.endswith(".npy"):
                self.members[info.filename[: -len(".npy")]] = info
        self._map: _mmap.mmap | None = None

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()
        self._fh.close()
        self._map = None  # arrays made from it keep it alive

    # -- one member ----------------------------------------------------------------------
    def _open(self, name: str):
        """A reader of the member's bytes (``read``/``readinto``) whose last read checks the
        CRC-32: stored members straight from the file, others through :mod:`zipfile`."""
        info = self.members[name]
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & _ENCRYPTED:
            return nullcontext(_Stored(self._fh, info, self._data_start(info)))
        return self._zip.open(info)

    def layout(self, name: str) -> Layout:
        """Shape, order and dtype from the member's ``.npy`` header; reads nothing else."""
        with self._open(name) as f:
            layout = _npy_header(f)
            if layout is None:  # pragma: no cover - a header version only NumPy's reader knows
                a = np.lib.format.read_array(f, allow_pickle=False)
                return Layout(a.shape, not a.flags.c_contiguous, a.dtype)
            return layout

    def array(self, name: str, *, mmap: bool = True, verify: bool = True) -> np.ndarray:
        """The member's array: a read-only view of the file where it is stored uncompressed
        and has at least one dimension (``mmap``), else read whole into memory."""
        info = self.members[name]
        if mmap:
            a = self._mapped(info)
            if a is not None:
                if verify:
                    self.verify(name)
                return a
        with self._zip.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)

    def verify(self, name: str, chunk_bytes: int = 16 << 20) -> None:
        """Read the member once through one bounded buffer, checking its CRC-32."""
        buf = memoryview(bytearray(min(chunk_bytes, max(self.members[name].file_size, 1))))
        with self._open(name) as f:
            while _read_full(f, buf) == len(buf):
                pass

    def chunks(self, name: str, elems: int = 1 << 20) -> Iterator[np.ndarray]:
        """The member's elements in storage order, ``elems`` at a time, in one reused buffer
        (a consumer must not keep a chunk).  The CRC-32 is checked once all are read."""
        with self._open(name) as f:
            layout = _npy_header(f)
            if layout is None:  # pragma: no cover - versions np.savez never writes here
                a = np.lib.format.read_array(f, allow_pickle=False).reshape(-1, order="A")
                for lo in range(0, a.size, elems):
                    yield a[lo : lo + elems]
                return
            count = math.prod(layout.shape)
            if layout.dtype.hasobject or count == 0:
                return
            buf = np.empty(min(elems, count), dtype=layout.dtype)
            raw = memoryview(buf.view(np.uint8))
            for lo in range(0, count, elems):
                k = min(elems, count - lo)
                want = k * layout.dtype.itemsize
                if _read_full(f, raw[:want]) != want:
                    raise EOFError(f"{self.members[name].filename}: the array's data is cut short")
                yield buf[:k]
            f.read(1)  # past the data: a member read through zipfile checks its CRC-32 here

    # -- memory mapping --------------------------------------------------------------------
    def _data_start(self, info: zipfile.ZipInfo) -> int:
        """File offset of the member's first byte: past its local file header (30 bytes, the
        name and the extra field, whose lengths may differ from the central directory's)."""
        self._fh.seek(info.header_offset)
        head = self._fh.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise zipfile.BadZipFile("Truncated file header")
        fields = _LOCAL_HEADER.unpack(head)
        if fields[0] != _LOCAL_MAGIC:
            raise zipfile.BadZipFile("Bad magic number for file header")
        name_len, extra_len = fields[-2], fields[-1]
        name = self._fh.read(name_len)
        encoded = info.orig_filename.encode("utf-8" if fields[2] & _UTF8_NAME else "cp437")
        if name != encoded:
            raise zipfile.BadZipFile(
                f"File name in directory {info.orig_filename!r} and header {name!r} differ."
            )
        return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len

    def _mapped(self, info: zipfile.ZipInfo) -> np.ndarray | None:
        """A read-only array over the file for a stored, plain ``.npy`` member; None when the
        member must be read through :mod:`zipfile` (compressed, encrypted, 0-d, objects)."""
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & _ENCRYPTED:
            return None
        start = self._data_start(info)
        self._fh.seek(start)
        layout = _npy_header(self._fh)
        if layout is None or layout.dtype.hasobject or not layout.shape:
            return None
        data = self._fh.tell()
        nbytes = math.prod(layout.shape) * layout.dtype.itemsize
        if data - start + nbytes != info.file_size or info.compress_size != info.file_size:
            raise ValueError(
                f"{info.filename}: the .npy header promises {nbytes} data bytes, "
                f"the zip member holds {info.file_size - (data - start)}"
            )
        if start + info.compress_size > self.size:
            raise EOFError(f"{info.filename}: the member runs past the end of the file")
        if self._map is None:
            if self.size == 0:  # pragma: no cover - zipfile refuses an empty file first
                return None
            self._map = _mmap.mmap(self._fh.fileno(), 0, access=_mmap.ACCESS_READ)
        return np.ndarray(
            layout.shape,
            dtype=layout.dtype,
            buffer=self._map,
            offset=data,
            order="F" if layout.fortran else "C",
        )
