"""The safe reader: hostile files get one SnapshotError (a ValueError) with a one-line message
naming the file, the member or field and the rule, before anything they declare is allocated; the
CLI turns it into one line on stderr and exit 2.  A fuzz test closes the file."""

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
import zlib

import hostile
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ptebatch as pb
from ptebatch._io import DEFLATE_MAX_RATIO
from ptebatch.cli import main
from ptebatch.space import read_info

READERS = {
    "load": pb.load,
    "load-whole": lambda p: pb.load(p, mmap=False),
    "read_info": lambda p: read_info(p, present=True),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A small valid snapshot (stored, as save writes it) and its members."""
    sp = pb.generate(60, seed=3, lazyfree=0.5, uffd_wp=0.3)
    path = tmp_path_factory.mktemp("base") / "base.npz"
    sp.save(path)
    return sp, path, hostile.members(path)


def _error(call, path) -> str:
    """The message of the SnapshotError ``call(path)`` raises; checks it is one line about
    ``path``."""
    with pytest.raises(pb.SnapshotError) as got:
        call(path)
    msg = str(got.value)
    assert isinstance(got.value, ValueError)  # callers catching ValueError keep working
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    return msg[len(f"{path}: ") :]


def _all_readers(path) -> set[str]:
    """The message every reader gives (they must agree)."""
    return {_error(call, path) for call in READERS.values()}


def _peak(call, *args) -> int:
    """Peak bytes allocated (Python and NumPy) while ``call(*args)`` runs, whatever it raises."""
    tracemalloc.start()
    try:
        call(*args)
    except pb.SnapshotError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


# -- not a snapshot at all ------------------------------------------------------------------------


def test_special_files_are_refused_before_opening(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    for path, what in ((fifo, "a FIFO"), (tmp_path, "a directory")):
        # before the fix: open() of the FIFO blocked for ever
        assert _all_readers(path) == {f"not a ptebatch snapshot ({what}, not a regular file)"}
    with pytest.raises(pb.SnapshotError, match="a character device, not a regular file"):
        pb.load(os.devnull)
    link = tmp_path / "link.npz"
    os.symlink(fifo, link)  # a link is followed: what it points to decides
    assert _all_readers(link) == {"not a ptebatch snapshot (a FIFO, not a regular file)"}


def test_cli_info_on_a_fifo_does_not_hang(tmp_path):
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    p = subprocess.run(
        [sys.executable, "-m", "ptebatch", "info", str(fifo)],
        capture_output=True,
        text=True,
        timeout=120,  # before the fix: blocked in open() until killed
    )
    assert p.returncode == 2
    assert p.stderr == (
        f"ptebatch: error: {fifo}: not a ptebatch snapshot (a FIFO, not a regular file)\n"
    )


def test_a_pickle_or_object_member_never_asks_for_allow_pickle(tmp_path, base):
    _, _, m = base
    objs = tmp_path / "objs.npz"
    hostile.write(objs, {**m, "format.npy": hostile.npy(np.array(["x"], dtype=object))})
    msg = _all_readers(objs)
    assert msg == {
        "truncated or corrupt snapshot: format.npy: holds Python objects (dtype object), "
        "which are never loaded"
    }
    pickle = tmp_path / "p.npz"
    pickle.write_bytes(b"\x80\x04\x95" + bytes(20))
    assert _all_readers(pickle) == {
        "not a ptebatch snapshot (not a zip archive: it starts with b'\\x80\\x04\\x95\\x00')"
    }


# -- the zip directory and its entries ------------------------------------------------------------


@pytest.mark.parametrize(
    "method,what",
    [(99, "AES-encrypted"), (12, "bzip2"), (14, "lzma"), (1, "unknown")],
)
def test_unsupported_compression_methods(tmp_path, base, method, what):
    _, path, _ = base
    raw = bytearray(path.read_bytes())
    hostile.patch(raw, "ptes.npy", method=method)
    bad = tmp_path / "m.npz"
    bad.write_bytes(bytes(raw))
    # before the fix: NotImplementedError from zipfile (for 99), a bzip2/lzma member read whole
    assert _all_readers(bad) == {
        f"truncated or corrupt snapshot: ptes.npy: compression method {method} ({what}) is not "
        f"supported; a snapshot's members are stored or deflated"
    }


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "bit,what", [(0x1, "encrypted"), (0x40, "strongly encrypted"), (0x20, "patched data")]
)
def test_encrypted_and_patched_members(tmp_path, base, compress, bit, what):
    _, _, m = base
    bad = tmp_path / "e.npz"
    hostile.write(bad, m, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    raw = bytearray(bad.read_bytes())
    hostile.patch(raw, "version.npy", flags=bit)
    bad.write_bytes(bytes(raw))
    # before the fix: RuntimeError ("password required") or NotImplementedError
    assert _all_readers(bad) == {
        f"truncated or corrupt snapshot: version.npy: {what} (zip flag {bit:#x}); "
        f"np.savez never sets it"
    }


def test_a_corrupt_deflate_stream_names_the_member(tmp_path, base):
    _, _, m = base
    bad = tmp_path / "z.npz"
    hostile.write(bad, m, zipfile.ZIP_DEFLATED)
    raw = bytearray(bad.read_bytes())
    first, end = hostile.data_span(bytes(raw), "folio_nr.npy")
    raw[first:end] = bytes([0xFF]) * (end - first)  # block type 3: reserved, invalid
    bad.write_bytes(bytes(raw))
    # before the fix: "truncated or corrupt .npz: Error -3 ..." without the member
    assert _all_readers(bad) == {
        "truncated or corrupt snapshot: folio_nr.npy: the deflate stream is corrupt "
        "(Error -3 while decompressing data: invalid block type)"
    }


def test_a_duplicated_member_is_refused(tmp_path, base):
    _, _, m = base
    bad = tmp_path / "d.npz"
    with pytest.warns(UserWarning, match="Duplicate name"):
        hostile.write(bad, m)
        with zipfile.ZipFile(bad, "a") as z:
            z.writestr("table_va.npy", m["table_va.npy"])
    assert _all_readers(bad) == {
        "truncated or corrupt snapshot: table_va.npy: appears twice in the zip directory"
    }


def test_a_member_past_the_end_of_the_file(tmp_path, base):
    _, path, _ = base
    raw = bytearray(path.read_bytes())
    hostile.patch(raw, "folio_pfn.npy", compress_size=len(raw), file_size=len(raw))
    bad = tmp_path / "p.npz"
    bad.write_bytes(bytes(raw))
    assert _all_readers(bad) == {
        "truncated or corrupt snapshot: folio_pfn.npy: the member runs past the end of the file"
    }


# -- .npy headers against the member's size -------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
def test_a_huge_declared_shape_fails_before_allocating(tmp_path, base, compress):
    _, _, m = base
    bad = tmp_path / "h.npz"
    shape = (2**40, 512)
    m = {**m, "ptes.npy": hostile.npy_header(shape) + bytes(64)}
    hostile.write(bad, m, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
    # 2**40 * 512 * 8 bytes declared; 64 held.  Before the fix: _ArrayMemoryError (deflated)
    assert _all_readers(bad) == {
        f"truncated or corrupt snapshot: ptes.npy: the .npy header declares shape {shape} of "
        f"uint64 ({2**40 * 512 * 8} bytes) but the member holds 64 data bytes"
    }
    assert _peak(pb.load, bad) < 1 << 20


def test_a_declared_size_beyond_what_deflate_can_give(tmp_path, base):
    """A directory entry whose uncompressed size agrees with a lying .npy header."""
    _, _, m = base
    tables = 4096  # 16 MiB of tables declared, from about a hundred compressed bytes
    header = hostile.npy_header((tables, 512))
    bad = tmp_path / "r.npz"
    hostile.write(bad, {**m, "ptes.npy": header + bytes(64)}, zipfile.ZIP_DEFLATED)
    raw = bytearray(bad.read_bytes())
    first, end = hostile.data_span(bytes(raw), "ptes.npy")
    declared = len(header) + tables * 512 * 8
    hostile.patch(raw, "ptes.npy", file_size=declared)
    bad.write_bytes(bytes(raw))
    # the limit: deflate gives at most 1032 bytes per compressed byte
    assert declared > DEFLATE_MAX_RATIO * (end - first) + 1024
    assert _all_readers(bad) == {
        f"truncated or corrupt snapshot: ptes.npy: declares {declared} bytes from "
        f"{end - first} compressed; deflate expands at most 1032 times"
    }
    assert _peak(pb.load, bad) < 1 << 20  # before the fix: the 16 MiB array was allocated


def test_npy_header_versions_and_negative_shapes(tmp_path, base):
    _, _, m = base
    bad = tmp_path / "v.npz"
    v3 = bytearray(m["folio_nr.npy"])
    v3[6] = 3  # .npy format version 3.0 (np.savez writes 1.0, or 2.0 for huge headers)
    hostile.write(bad, {**m, "folio_nr.npy": bytes(v3)})
    assert _all_readers(bad) == {
        "truncated or corrupt snapshot: folio_nr.npy: .npy format version 3.0 is not supported "
        "(1.0 or 2.0)"
    }
    hostile.write(bad, {**m, "folio_nr.npy": hostile.npy_header((-1,)) + bytes(8)})
    assert _all_readers(bad) == {
        "truncated or corrupt snapshot: folio_nr.npy: the .npy header declares a negative "
        "dimension, shape (-1,)"
    }


def test_a_member_that_is_not_npy(tmp_path, base):
    _, _, m = base
    bad = tmp_path / "n.npz"
    hostile.write(bad, {**m, "format.npy": b"hello world"})
    # before the fix (np.load's view): AttributeError; then "the magic string is not correct"
    # with no member named
    assert _all_readers(bad) == {
        "truncated or corrupt snapshot: format.npy: not a valid .npy array (the magic string "
        "is not correct; expected b'\\x93NUMPY', got b'hello ')"
    }
    m = {k: v for k, v in m.items() if k != "format.npy"}
    hostile.write(bad, {**m, "format": b"ptebatch.snapshot"})
    assert _all_readers(bad) == {
        "missing field 'format'; not a ptebatch snapshot (member 'format' is there, but is not "
        "a .npy member 'format.npy')"
    }


@pytest.mark.parametrize(
    "member,array,rule",
    [
        (
            "format.npy",
            np.array("x" * 1000),
            "format must be 'ptebatch.snapshot', got an array of dtype <U1000 and shape (); "
            "not a ptebatch snapshot",
        ),
        (
            "format.npy",
            np.array(["ptebatch.snapshot"]),
            "format must be 'ptebatch.snapshot', got an array of dtype <U17 and shape (1,); "
            "not a ptebatch snapshot",
        ),
        (
            "version.npy",
            np.array(1.0),
            "version must be 1, got an array of dtype float64 and shape () (this ptebatch "
            "reads version 1)",
        ),
        (
            "arch.npy",
            np.array(7),
            "arch must be a string of at most 64 characters, got an array of dtype int64 and "
            "shape ()",
        ),
    ],
)
def test_identity_members_are_checked_before_they_are_read(tmp_path, base, member, array, rule):
    _, _, m = base
    bad = tmp_path / "i.npz"
    hostile.write(bad, {**m, member: hostile.npy(array)})
    assert _all_readers(bad) == {rule}


# -- members outside the schema -------------------------------------------------------------------


def test_unknown_members_are_never_read(tmp_path, base):
    sp, _, m = base
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    junk = b"".join(z.compress(bytes(1 << 20)) for _ in range(64)) + z.flush()  # 64 MiB of 0s
    path = tmp_path / "extra.npz"
    hostile.write(path, m)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as zf:
        zf.writestr("junk.npy", junk)  # stored: then patched to look deflated
        zf.writestr("notes.txt", b"hello")
        zf.writestr("broken.npy", b"not even .npy")
    raw = bytearray(path.read_bytes())
    hostile.patch(raw, "junk.npy", method=zipfile.ZIP_DEFLATED, file_size=64 << 20, crc=1)
    path.write_bytes(bytes(raw))
    assert path.stat().st_size < 1 << 20
    for name, call in READERS.items():
        # the 64 MiB member is not decompressed (info's folio-size histogram is 4 MiB itself)
        assert _peak(call, path) < 8 << 20, name
    assert pb.load(path) == sp and read_info(path, present=True) == sp.info()


# -- the CLI: one line on stderr, exit 2 ----------------------------------------------------------


def _bad_files(tmp_path, m) -> dict[str, tuple]:
    """Reproducers of issue 12: path and the end of the one line each must give."""
    out = {}
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    out["fifo"] = (fifo, "(a FIFO, not a regular file)")
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros(3))
    out["plain"] = (
        plain,
        "(a single .npy array; a snapshot is the .npz archive AddressSpace.save writes)",
    )
    huge = tmp_path / "huge.npz"
    hostile.write(
        huge, {**m, "ptes.npy": hostile.npy_header((2**40, 512)) + bytes(64)}, zipfile.ZIP_DEFLATED
    )
    out["huge"] = (huge, "but the member holds 64 data bytes")
    deflate = tmp_path / "deflate.npz"
    hostile.write(deflate, m, zipfile.ZIP_DEFLATED)
    raw = bytearray(deflate.read_bytes())
    first, end = hostile.data_span(bytes(raw), "folio_nr.npy")
    raw[first:end] = bytes([0xFF]) * (end - first)
    deflate.write_bytes(bytes(raw))
    out["deflate"] = (
        deflate,
        "folio_nr.npy: the deflate stream is corrupt (Error -3 while "
        "decompressing data: invalid block type)",
    )
    for name, field, value, tail in (
        (
            "method",
            "method",
            99,
            "compression method 99 (AES-encrypted) is not supported; a "
            "snapshot's members are stored or deflated",
        ),
        ("encrypted", "flags", 1, "encrypted (zip flag 0x1); np.savez never sets it"),
    ):
        path = tmp_path / f"{name}.npz"
        hostile.write(path, m)
        raw = bytearray(path.read_bytes())
        hostile.patch(raw, "folio_nr.npy", **{field: value})
        path.write_bytes(bytes(raw))
        out[name] = (path, f"folio_nr.npy: {tail}")
    notnpy = tmp_path / "notnpy.npz"
    hostile.write(notnpy, {**m, "arch.npy": b"x86_64 as text"})
    out["notnpy"] = (
        notnpy,
        "arch.npy: not a valid .npy array (the magic string is not "
        "correct; expected b'\\x93NUMPY', got b'x86_64')",
    )
    return out


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, base):
    return _bad_files(tmp_path_factory.mktemp("bad"), base[2])


@pytest.mark.parametrize(
    "name", ["fifo", "plain", "huge", "deflate", "method", "encrypted", "notnpy"]
)
@pytest.mark.parametrize("cmd", ["info", "scan", "unmap", "run"])
def test_cli_reproducers_give_one_line_and_exit_2(capsys, bad_files, name, cmd):
    path, tail = bad_files[name]
    argv = [cmd, str(path)] + (["--kernels", "6.15"] if cmd == "run" else [])
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"ptebatch: error: {path}: ") and err.endswith(f"{tail}\n"), err
    assert err.count("\n") == 1


def test_cli_corpus_data_with_a_bad_snapshot(tmp_path, capsys, bad_files):
    data = os.path.join(os.path.dirname(__file__), os.pardir, "data")
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    victim = copy / "thread.npz"  # the first bug of the corpus
    shutil.copyfile(bad_files["deflate"][0], victim)
    code = main(["corpus", "--data", str(copy)])
    out, err = capsys.readouterr()
    assert code == 2
    assert err == (
        f"ptebatch: error: {victim}: truncated or corrupt snapshot: folio_nr.npy: the deflate "
        f"stream is corrupt (Error -3 while decompressing data: invalid block type)\n"
    )


# -- the fuzz test --------------------------------------------------------------------------------

KNOWN = ["format", "version", "arch", "vma_flags", "ptes", "table_va", "vma_start", "vma_end"]
KNOWN += ["folio_pfn", "folio_nr", "folio_flags"]
FLAG_BITS = [0x1, 0x8, 0x20, 0x40, 0x800, 0x2000, 0xFFFF]
METHODS = [0, 8, 1, 9, 12, 14, 93, 99, 0xFFFF]
DESCRS = ["<u8", "<u1", "<i8", ">u8", "<f8", "|O", "<U17", "|V0", "<u8,<u8", "|S3"]
SHAPES = st.one_of(
    st.tuples(st.integers(-2, 2**62), st.integers(-2, 2**12)),
    st.tuples(st.integers(0, 2**62)),
    st.just(()),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)),
)


@st.composite
def _mutation(draw, contents: dict[str, bytes], raw: bytes):
    """One hostile variant of a valid archive: (bytes, what was done)."""
    kind = draw(st.sampled_from(["truncate", "bytes", "members", "header", "npy", "shape"]))
    if kind == "truncate":
        cut = draw(st.integers(0, len(raw) - 1))
        return raw[:cut], f"truncated at {cut}"
    if kind == "bytes":
        out = bytearray(raw)
        edits = draw(
            st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)), max_size=8)
        )
        for at, value in edits:
            out[at] = value
        return bytes(out), f"bytes {edits}"
    if kind == "header":
        out = bytearray(raw)
        name = draw(st.sampled_from(sorted(contents)))
        values = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "flags": st.sampled_from(FLAG_BITS),
                    "method": st.sampled_from(METHODS),
                    "file_size": st.integers(0, 2**32 - 1),
                    "compress_size": st.integers(0, 2**32 - 1),
                    "crc": st.integers(0, 2**32 - 1),
                },
            )
        )
        hostile.patch(out, name, **values)
        return bytes(out), f"header {name} {values}"
    m = dict(contents)
    name = draw(st.sampled_from(sorted(m)))
    if kind == "members":
        op = draw(st.sampled_from(["drop", "add", "rename", "replace"]))
        if op == "drop":
            del m[name]
        elif op == "add":
            extra = draw(st.sampled_from(KNOWN + ["junk", "ptes.npy", "format"]))
            m[extra + draw(st.sampled_from([".npy", ""]))] = draw(st.binary(max_size=64))
        elif op == "rename":
            m[draw(st.sampled_from(KNOWN)) + ".npy"] = m.pop(name)
        else:
            m[name] = draw(st.binary(max_size=256))
    elif kind == "npy":  # a whole valid .npy member of another dtype or shape
        dtype = draw(st.sampled_from(["<u8", "<u1", "<i8", ">u8", "<U17", "<f8"]))
        n = draw(st.integers(0, 1100))
        m[name] = hostile.npy(np.zeros(n if n < 1100 else (2, 512), dtype=dtype))
    else:  # a header declaring any shape and dtype, followed by some bytes
        shape = draw(SHAPES)
        descr = draw(st.sampled_from(DESCRS))
        try:
            header = hostile.npy_header(shape, descr, draw(st.booleans()))
        except (ValueError, TypeError):  # a descr NumPy will not write
            header = hostile.npy_header(shape)
        m[name] = header + bytes(draw(st.integers(0, 4096)))
    method = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    buf = io.BytesIO()
    hostile.write(buf, m, method)
    return buf.getvalue(), f"{kind} {name} method {method}"


def _fuzz_one(data, bases, compress: bool) -> None:
    sp, contents, raw = bases[compress]
    blob, what = data.draw(_mutation(contents, raw), label="mutation")
    path = bases["dir"] / "f.npz"
    path.write_bytes(blob)
    # a small multiple of what the file holds (or its valid original decompressed), plus the
    # allocations of reading and describing any snapshot at all (info's folio-size histogram
    # and its bincount are 2 MiB each)
    limit = 3 * max(len(blob), sum(len(b) for b in contents.values())) + (6 << 20)
    for name, call in READERS.items():
        tracemalloc.start()
        try:
            got = call(path)
        except pb.SnapshotError as exc:
            msg = str(exc)
            assert "\n" not in msg and msg.startswith(f"{path}: "), (what, name, msg)
            got = None
        except Exception as exc:  # the contract: nothing else, ever
            raise AssertionError(f"{what}: {name} raised {type(exc).__name__}: {exc}") from exc
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < limit, (what, name, peak, limit)
        if name.startswith("load") and got is not None:
            assert isinstance(got, pb.AddressSpace)
            got.info()  # a valid space: every array readable


class _Bases(dict):
    def __repr__(self) -> str:  # hypothesis prints the test's arguments: not the archives
        return "<the valid archives>"


@pytest.fixture(scope="module")
def fuzz_bases(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz")
    sp = pb.generate(12, seed=11, lazyfree=0.5, uffd_wp=0.5)
    out = _Bases(dir=directory)
    for compress in (False, True):
        path = directory / f"base{int(compress)}.npz"
        sp.save(path, compress=compress)
        contents = hostile.members(path)
        # rewritten without zip64 extras, so that every header holds its sizes
        hostile.write(path, contents, zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED)
        assert pb.load(path) == sp
        out[compress] = (sp, contents, path.read_bytes())
    return out


@pytest.mark.parametrize("compress", [False, True])
@settings(max_examples=150)
@given(data=st.data())
def test_fuzz_hostile_archives(fuzz_bases, compress, data):
    _fuzz_one(data, fuzz_bases, compress)


@pytest.mark.slow
@pytest.mark.parametrize("compress", [False, True])
@settings(max_examples=1000)
@given(data=st.data())
def test_fuzz_hostile_archives_many(fuzz_bases, compress, data):
    _fuzz_one(data, fuzz_bases, compress)


# -- the big cases, measured in a fresh process ---------------------------------------------------

_RSS = textwrap.dedent(
    """
    import json, resource, subprocess, sys
    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"code": done.returncode, "err": done.stderr, "rss": rss}))
    """
)


def _cli_rss(*argv) -> dict:
    exe = [sys.executable, "-m", "ptebatch", *map(str, argv)]
    done = subprocess.run(
        [sys.executable, "-c", _RSS, *exe], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


@pytest.mark.slow
def test_big_hostile_files_stay_small_in_a_fresh_process(tmp_path, base):
    """1 GiB of unknown member in a 1 MB file, and a 2**40-table header: info and scan stay at
    the interpreter's own size."""
    sp, path, m = base
    big = tmp_path / "big.npz"
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    junk = b"".join(z.compress(bytes(16 << 20)) for _ in range(64)) + z.flush()  # 1 GiB of 0s
    hostile.write(big, m)
    with zipfile.ZipFile(big, "a") as zf:
        zf.writestr("junk.npy", junk)
    raw = bytearray(big.read_bytes())
    hostile.patch(raw, "junk.npy", method=zipfile.ZIP_DEFLATED, file_size=(1 << 30) - 1)
    big.write_bytes(bytes(raw))
    huge = tmp_path / "huge.npz"
    hostile.write(
        huge, {**m, "ptes.npy": hostile.npy_header((2**40, 512)) + bytes(64)}, zipfile.ZIP_DEFLATED
    )
    for cmd in ("info", "scan"):
        ok = _cli_rss(cmd, path)  # the same command on the valid snapshot: its own size
        assert ok["code"] == 0, ok
        got = _cli_rss(cmd, big)
        assert got["code"] == 0, got
        assert got["rss"] < ok["rss"] + 4 * big.stat().st_size + (64 << 20), got
        got = _cli_rss(cmd, huge)
        assert got["code"] == 2 and got["err"].count("\n") == 1, got
        assert got["rss"] < ok["rss"] + (64 << 20), got
