"""Files: writing them safely (atomically, never over a special file, nothing left behind), and
reading ``.npz`` members in place (memory-mapped) or in bounded pieces, checking every size a
hostile file declares before it is believed."""

from __future__ import annotations

import errno
import math
import mmap as _mmap
import os
import signal
import stat
import struct
import tempfile
import threading
import tokenize
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, NamedTuple

import numpy as np

__all__ = ["atomic_write", "NpzReader", "SnapshotError", "READ_ERRORS", "TEMP_SUFFIX"]


class SnapshotError(ValueError):
    """A file that is not a readable ptebatch snapshot.

    Not a regular file, not a zip archive, truncated or corrupt, or breaking a rule of the
    schema.  The message is one line: the file, then the member or field, then the rule.
    A ``ValueError``, so callers that catch ``ValueError`` keep working.
    """


# What a truncated, corrupt or hostile archive can raise inside zipfile and NumPy's .npy
# header parser; the reader turns each into a SnapshotError naming the member.  (OSError only
# with errno EINVAL or none: a seek to an offset the file cannot have.  Other OSErrors are
# real I/O errors and pass through.)
READ_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,
    struct.error,
    zlib.error,
    RuntimeError,
    NotImplementedError,
    SyntaxError,  # NumPy parses a version 1.0 header with tokenize and ast
    tokenize.TokenError,
)

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # 30 bytes; the last two are name and extra lengths
_LOCAL_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"  # an archive with no member starts with its end record
_NPY_MAGIC = b"\x93NUMPY"
_UTF8_NAME = 0x800
# General-purpose flag bits we refuse: encrypted (0), compressed patched data (5), strong
# encryption (6), masked central directory (13).  np.savez never sets them.
_REFUSED_FLAGS = {
    0x1: "encrypted",
    0x20: "patched data",
    0x40: "strongly encrypted",
    0x2000: "a masked central directory",
}
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
_OTHER_METHODS = {12: "bzip2", 14: "lzma", 93: "zstandard", 99: "AES-encrypted"}
# Deflate codes a 258-byte match in no fewer than 2 bits: a stream expands at most 1032 times
# (zlib's technical notes); the slack covers a tiny stream's block header.
DEFLATE_MAX_RATIO = 1032
_DEFLATE_SLACK = 1024
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
# The most elements an .npy header may declare (far more than any file can hold).
_MAX_COUNT = 1 << 62


TEMP_SUFFIX = ".ptebatch-tmp"
# A temp file's name: "." + the target's name (cut to this many characters, so that the whole
# stays within NAME_MAX) + "." + 8 random characters + TEMP_SUFFIX.
_TEMP_NAME_MAX = 200
# Signals whose default action ends the process: a save removes its temp file first.
_CLEANUP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)
_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"  # pragma: no cover - every file type is listed above


def _existing_target(path: str) -> os.stat_result | None:
    """``lstat`` of an existing target, refusing anything but a regular file; None if absent."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise FileExistsError(
            f"{path}: exists and is {_kind(st.st_mode)}, not a regular file; a save replaces "
            f"only regular files (remove it or choose another name)"
        )
    return st


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _about_target(exc: OSError, path: str, prefix: str) -> OSError:
    """``exc`` naming the target where it names the temp file (an implementation detail) or no
    file at all (a full disk); an error about another file is left as it is."""
    named = exc.filename is not None and not (
        os.path.basename(os.fspath(exc.filename)).startswith(prefix)
        and os.fspath(exc.filename).endswith(TEMP_SUFFIX)
    )
    if exc.errno is None or named:
        return exc
    return type(exc)(exc.errno, exc.strerror, path)


class _RemoveOnSignal:
    """While active, a signal that would end the process (SIGTERM, SIGINT, SIGHUP with their
    default actions) first removes the temp file.  Handlers can only be installed from the
    main thread: elsewhere this does nothing (an exception still removes the file)."""

    def __init__(self):
        self.tmp: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _RemoveOnSignal:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in _CLEANUP_SIGNALS:
            prev = signal.getsignal(sig)
            if prev is None or prev == signal.SIG_IGN:
                continue  # installed outside Python (cannot be restored), or ignored anyway
            try:
                signal.signal(sig, self._handle)
            except ValueError:  # pragma: no cover - not the main interpreter
                continue
            self._previous[sig] = prev
        return self

    def __exit__(self, *exc) -> None:
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        prev = self._previous.get(signum, signal.SIG_DFL)
        if callable(prev):  # Python's SIGINT handler raises KeyboardInterrupt: the
            prev(signum, frame)  # exception path removes the file; others decide for themselves
            return
        # the default action: the process ends here, so remove the temp file, then die of the
        # same signal (the exit status a parent expects)
        if self.tmp is not None:
            _unlink_quietly(self.tmp)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def atomic_write(path, write: Callable, *, mode: int | None = None) -> None:
    """Call ``write(binary_file)`` on a temporary file, then rename it over ``path``.

    The temporary file is created in ``path``'s directory (named ``.NAME.XXXXXXXX`` plus
    :data:`TEMP_SUFFIX`), flushed to disk (``fsync``) and renamed over ``path``: a crash leaves
    the old file or the new one, never a partial one.  Renaming over a file that is
    memory-mapped is safe: the old mapping keeps the old file's data until it is closed.

    Parameters
    ----------
    path : str or os.PathLike
        The target.  If it exists it must be a regular file: a symbolic link, directory, FIFO,
        device or socket is refused (``FileExistsError`` naming it) and left alone.
    write : callable
        ``write(fh)`` writes the content to the binary file object ``fh``.
    mode : int, optional
        Permissions of a new file, less the umask (default ``0o666``, as ``open`` gives).  An
        existing target keeps its permissions; with ``mode`` given, only those it shares with
        ``mode`` (so ``mode=0o600`` never leaves a file readable by others).

    Raises
    ------
    FileExistsError
        ``path`` exists and is not a regular file.
    OSError
        Creating, writing or renaming failed; the error names ``path``, never the temporary
        file.  Whatever ``write`` raises passes through.  In every case the temporary file is
        removed.

    Notes
    -----
    SIGTERM, SIGINT and SIGHUP during the write (from the main thread) remove the temporary
    file before the process ends as it would have.  SIGKILL cannot be caught: a save killed by
    it (or by a power cut) can leave ``.NAME.XXXXXXXX.ptebatch-tmp`` next to the target, safe
    to delete.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    st = _existing_target(path)
    umask = os.umask(0)
    os.umask(umask)
    if st is None:
        final_mode = (0o666 if mode is None else mode) & ~umask
    else:
        final_mode = stat.S_IMODE(st.st_mode) & (0o7777 if mode is None else mode)
    prefix = "." + os.path.basename(path)[:_TEMP_NAME_MAX] + "."
    with _RemoveOnSignal() as guard:
        try:
            fd, guard.tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=directory)
        except OSError as exc:
            raise _about_target(exc, path, prefix) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fchmod(fh.fileno(), final_mode)  # mkstemp made it 0600
                if st is not None and (st.st_uid, st.st_gid) != os.fstat(fh.fileno())[4:6]:
                    _keep_owner(fh.fileno(), st)
                os.fsync(fh.fileno())
            _existing_target(path)  # again: it may have been replaced while we wrote
            os.replace(guard.tmp, path)
            guard.tmp = None
        except BaseException as exc:
            if guard.tmp is not None:
                _unlink_quietly(guard.tmp)
            if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
                raise _about_target(exc, path, prefix) from exc
            raise
    _sync_directory(directory)


def _keep_owner(fd: int, st: os.stat_result) -> None:
    """Give the new file the old one's owner and group where we may (root, or our own group)."""
    for uid in (st.st_uid, -1):
        try:
            os.fchown(fd, uid, st.st_gid)
            return
        except OSError:
            continue


def _sync_directory(directory: str) -> None:
    """Make the rename itself durable; best effort (some file systems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - the directory was just written to
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - e.g. some network file systems
        pass
    finally:
        os.close(fd)


class Layout(NamedTuple):
    """An ``.npy`` member's array: what its header says."""

    shape: tuple
    fortran: bool
    dtype: np.dtype

    @property
    def c_contiguous(self) -> bool:
        """Whether NumPy would flag the loaded array C-contiguous."""
        return not self.fortran or 0 in self.shape or sum(d > 1 for d in self.shape) <= 1

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _npy_header(fh) -> tuple[Layout, str | None]:
    """The ``.npy`` header at ``fh``'s position, leaving ``fh`` at the data, and what is wrong
    with it for this reader (None: nothing).  NumPy's parser raises ValueError on a header it
    cannot read; versions other than 1.0 and 2.0 (which np.savez never writes) are refused."""
    version = np.lib.format.read_magic(fh)
    reader = _HEADER_READERS.get(version)
    if reader is None:
        return Layout((), False, np.dtype(np.uint8)), (
            f".npy format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)"
        )
    shape, fortran, dtype = reader(fh)
    layout = Layout(tuple(shape), bool(fortran), dtype)
    if any(d < 0 for d in layout.shape):
        return layout, f"the .npy header declares a negative dimension, shape {layout.shape}"
    if dtype.hasobject:
        return layout, f"holds Python objects (dtype {dtype}), which are never loaded"
    if dtype.itemsize == 0:
        return layout, f"dtype {dtype} has no size"
    if math.prod(layout.shape) > _MAX_COUNT:
        return layout, f"the .npy header declares shape {layout.shape}, too many elements"
    return layout, None


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
        self._start = start
        self._pos, self._left = start, info.compress_size
        self._crc = 0

    def tell(self) -> int:
        return self._pos - self._start

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
            raise EOFError("the member runs past the end of the file")
        self._crc = zlib.crc32(data, self._crc)
        self._pos += len(data)
        self._left -= len(data)
        if not self._left and self._crc != self._info.CRC:
            raise zipfile.BadZipFile(f"Bad CRC-32 for file {self._info.filename!r}")


def _open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, refusing anything but a regular file before opening
    it (a FIFO would block the open, a device could be anything) and again after (it may have
    been swapped in between; O_NONBLOCK keeps that open from blocking)."""
    st = os.stat(path)  # FileNotFoundError, PermissionError: the caller's to see
    if not stat.S_ISREG(st.st_mode):
        raise _not_a_snapshot(path, f"{_kind(st.st_mode)}, not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # pragma: no cover - swapped between stat and open
        os.close(fd)
        raise _not_a_snapshot(path, f"{_kind(st.st_mode)}, not a regular file")
    return fd


def _not_a_snapshot(path: str, why: str) -> SnapshotError:
    return SnapshotError(f"{path}: not a ptebatch snapshot ({why})")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explain(exc: BaseException) -> str:
    """What a parser's exception says about the member, as a rule."""
    msg = _one_line(exc)
    if isinstance(exc, zlib.error):
        return f"the deflate stream is corrupt ({msg})"
    if isinstance(exc, zipfile.BadZipFile) and "CRC-32" in msg:
        return "its data does not match its CRC-32"
    if isinstance(exc, EOFError):
        return f"the data is cut short ({msg})"
    if isinstance(exc, ValueError) and not isinstance(exc, SnapshotError):
        return f"not a valid .npy array ({msg})"
    return msg


class NpzReader:
    """The ``.npy`` members of an ``.npz`` file, by name without the ``.npy`` suffix.

    ``array`` memory-maps a member stored uncompressed (``ZIP_STORED``, what ``np.savez``
    writes) and reads any other member whole; ``layout`` reads only a member's header;
    ``chunks`` streams a member's elements through one bounded buffer.  Members read
    through :mod:`zipfile` have their CRC-32 checked; a memory-mapped member only when
    ``verify`` asks for it (which reads the member once, through a bounded buffer).

    A hostile file is checked before anything it declares is believed: only a regular file
    is opened; the zip directory is read and each wanted member's entry checked (stored or
    deflated, not encrypted, inside the file, its uncompressed size within what its
    compressed bytes can give); each ``.npy`` header is checked against the member's size
    before an array is allocated or mapped.  Members not in ``names`` are never read.
    Everything wrong raises :class:`SnapshotError` with a one-line message naming the file
    and the member; only real I/O errors (``OSError``) pass through.  Use as a context
    manager; mapped arrays stay valid after it closes.

    Parameters
    ----------
    path : str or os.PathLike
    names : collection of str, optional
        The members wanted (without ``.npy``); others are listed in ``ignored`` and never
        read.  Default: every ``.npy`` member.
    """

    def __init__(self, path, names: Collection[str] | None = None):
        self.path = os.fspath(path)
        self._fh = os.fdopen(_open_regular(self.path), "rb")  # closed by close()
        self._zip = None
        try:
            self._open_zip(names)
        except BaseException:
            self.close()
            raise
        self._map: _mmap.mmap | None = None
        self._layouts: dict[str, tuple[Layout, int]] = {}

    def _open_zip(self, names) -> None:
        self.size = os.fstat(self._fh.fileno()).st_size
        magic = self._fh.read(len(_NPY_MAGIC))
        if not magic:
            raise _not_a_snapshot(self.path, "an empty file")
        if magic == _NPY_MAGIC:
            raise _not_a_snapshot(
                self.path,
                "a single .npy array; a snapshot is the .npz archive AddressSpace.save writes",
            )
        if magic[:4] not in (_LOCAL_MAGIC, _EMPTY_ZIP_MAGIC):
            raise _not_a_snapshot(self.path, f"not a zip archive: it starts with {magic[:4]!r}")
        with self._errors("the zip directory"):
            self._zip = zipfile.ZipFile(self._fh)
            infos = self._zip.infolist()
        self.members: dict[str, zipfile.ZipInfo] = {}
        self.ignored: list[str] = []
        self._starts: dict[str, int] = {}
        for info in infos:
            name = info.filename
            key = name[: -len(".npy")] if name.endswith(".npy") else None
            if key is None or (names is not None and key not in names):
                self.ignored.append(name)
                continue
            if key in self.members:
                raise self._corrupt(name, "appears twice in the zip directory")
            with self._errors(name):
                self._starts[key] = self._check_entry(info)
            self.members[key] = info

    def _corrupt(self, member: str, why: str) -> SnapshotError:
        return SnapshotError(f"{self.path}: truncated or corrupt snapshot: {member}: {why}")

    @contextmanager
    def _errors(self, member: str):
        """Turn what a parser raises on a bad file into one SnapshotError naming ``member``."""
        try:
            yield
        except SnapshotError:
            raise
        except OSError as exc:
            if exc.errno not in (None, errno.EINVAL):
                raise  # a real I/O error, not a bad file
            raise self._corrupt(member, _explain(exc)) from None
        except READ_ERRORS as exc:
            raise self._corrupt(member, _explain(exc)) from None

    def _check_entry(self, info: zipfile.ZipInfo) -> int:
        """Check a member's directory entry and local header before any of its data is read;
        returns the file offset of its first byte."""
        name = info.filename
        for bit, what in _REFUSED_FLAGS.items():
            if info.flag_bits & bit:
                raise self._corrupt(name, f"{what} (zip flag {bit:#x}); np.savez never sets it")
        method = info.compress_type
        if method not in _METHODS:
            what = _OTHER_METHODS.get(method, "unknown")
            raise self._corrupt(
                name,
                f"compression method {method} ({what}) is not supported; a snapshot's "
                f"members are stored or deflated",
            )
        if method == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise self._corrupt(
                name,
                f"a stored member's sizes must agree; {info.compress_size} bytes stored, "
                f"{info.file_size} declared",
            )
        if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + _DEFLATE_SLACK:
            raise self._corrupt(
                name,
                f"declares {info.file_size} bytes from {info.compress_size} compressed; "
                f"deflate expands at most {DEFLATE_MAX_RATIO} times",
            )
        start = self._data_start(info)
        if start + info.compress_size > self.size:
            raise self._corrupt(name, "the member runs past the end of the file")
        return start

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._fh.close()
        self._map = None  # arrays made from it keep it alive

    # -- one member ----------------------------------------------------------------------
    def _open(self, name: str):
        """A reader of the member's bytes (``read``/``readinto``/``tell``) whose last read
        checks the CRC-32: stored members straight from the file, others through zipfile."""
        info = self.members[name]
        if info.compress_type == zipfile.ZIP_STORED:
            return nullcontext(_Stored(self._fh, info, self._starts[name]))
        return self._zip.open(info)

    def _checked(self, name: str) -> tuple[Layout, int]:
        """The member's layout and header length, its header checked against the member's size
        (so that no array is allocated or mapped on a size the file does not hold)."""
        if name not in self._layouts:
            info = self.members[name]
            with self._errors(info.filename), self._open(name) as f:
                layout, wrong = _npy_header(f)
                header = f.tell()
            if wrong:
                raise self._corrupt(info.filename, wrong)
            if header + layout.nbytes != info.file_size:
                raise self._corrupt(
                    info.filename,
                    f"the .npy header declares shape {layout.shape} of {layout.dtype} "
                    f"({layout.nbytes} bytes) but the member holds "
                    f"{max(info.file_size - header, 0)} data bytes",
                )
            self._layouts[name] = (layout, header)
        return self._layouts[name]

    def layout(self, name: str) -> Layout:
        """Shape, order and dtype from the member's ``.npy`` header; reads nothing else."""
        return self._checked(name)[0]

    def array(self, name: str, *, mmap: bool = True, verify: bool = True) -> np.ndarray:
        """The member's array: a read-only view of the file where it is stored uncompressed
        and has at least one dimension (``mmap``), else read whole into memory (at most the
        size its header declares, which was checked against the member)."""
        layout, header = self._checked(name)
        info = self.members[name]
        order = "F" if layout.fortran else "C"
        if mmap and info.compress_type == zipfile.ZIP_STORED and layout.shape:
            if self._map is None:
                self._map = _mmap.mmap(self._fh.fileno(), 0, access=_mmap.ACCESS_READ)
            a = np.ndarray(
                layout.shape,
                dtype=layout.dtype,
                buffer=self._map,
                offset=self._starts[name] + header,
                order=order,
            )
            if verify:
                self.verify(name)
            return a
        buf = np.empty(layout.nbytes, dtype=np.uint8)
        with self._errors(info.filename), self._open(name) as f:
            f.read(header)
            if _read_full(f, memoryview(buf)) != layout.nbytes:
                raise EOFError("the array's data is cut short")
            f.read(1)  # past the data: a member read through zipfile checks its CRC-32 here
        return np.ndarray(layout.shape, dtype=layout.dtype, buffer=buf, order=order)

    def verify(self, name: str, chunk_bytes: int = 16 << 20) -> None:
        """Read the member once through one bounded buffer, checking its CRC-32."""
        info = self.members[name]
        buf = memoryview(bytearray(min(chunk_bytes, max(info.file_size, 1))))
        with self._errors(info.filename), self._open(name) as f:
            while _read_full(f, buf) == len(buf):
                pass

    def chunks(self, name: str, elems: int = 1 << 20) -> Iterator[np.ndarray]:
        """The member's elements in storage order, ``elems`` at a time, in one reused buffer
        (a consumer must not keep a chunk).  The CRC-32 is checked once all are read."""
        layout, header = self._checked(name)
        count = math.prod(layout.shape)
        if count == 0:
            return
        info = self.members[name]
        buf = np.empty(min(elems, count), dtype=layout.dtype)
        raw = memoryview(buf.view(np.uint8))
        with self._errors(info.filename), self._open(name) as f:
            f.read(header)
            for lo in range(0, count, elems):
                k = min(elems, count - lo)
                want = k * layout.dtype.itemsize
                if _read_full(f, raw[:want]) != want:
                    raise EOFError("the array's data is cut short")
                yield buf[:k]
            f.read(1)  # past the data: a member read through zipfile checks its CRC-32 here

    # -- where a member's data starts ------------------------------------------------------
    def _data_start(self, info: zipfile.ZipInfo) -> int:
        """File offset of the member's first byte: past its local file header (30 bytes, the
        name and the extra field, whose lengths may differ from the central directory's)."""
        if not 0 <= info.header_offset <= self.size - _LOCAL_HEADER.size:
            raise EOFError(f"the local header at offset {info.header_offset} is not in the file")
        self._fh.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(self._fh.read(_LOCAL_HEADER.size))
        if fields[0] != _LOCAL_MAGIC:
            raise zipfile.BadZipFile("bad magic number in its local header")
        name_len, extra_len = fields[-2], fields[-1]
        name = self._fh.read(name_len)
        encoded = info.orig_filename.encode("utf-8" if fields[2] & _UTF8_NAME else "cp437")
        if name != encoded:
            raise zipfile.BadZipFile(
                f"its local header names it {name!r}, the zip directory {info.orig_filename!r}"
            )
        return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len
