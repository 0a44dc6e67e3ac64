"""Snapshots on disk: stored or deflated members, memory-mapped loads, metadata-only info."""

import json
import mmap
import os
import pickle
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import ptebatch as pb
from ptebatch import space as space_mod
from ptebatch.space import read_info

NAMES = ("ptes", "table_va", "vma_start", "vma_end", "folio_pfn", "folio_nr", "folio_flags")
MEMBERS = ["format", "version", "arch", "vma_flags", *NAMES]


def _mapping(a: np.ndarray):
    """The mmap an array is a view of, or None."""
    while a is not None and not isinstance(a, mmap.mmap):
        a = getattr(a, "base", None)
    return a


def _timeless(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if "seconds" not in k}


def _same_walk(a, b) -> None:
    assert _timeless(a.summary()) == _timeless(b.summary())
    for name in ("va", "nr", "reason", "findings"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.fixture(scope="module")
def small():
    return pb.generate(3000, seed=7, moved=0.3, lazyfree=0.5, uffd_wp=0.2)


# -- writing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "compress,method", [(False, zipfile.ZIP_STORED), (True, zipfile.ZIP_DEFLATED)]
)
def test_round_trip_both_compressions(tmp_path, small, compress, method):
    path = tmp_path / "s.npz"
    small.save(path, compress=compress)
    with zipfile.ZipFile(path) as z:
        assert [i.filename for i in z.infolist()] == [m + ".npy" for m in MEMBERS]
        assert {i.compress_type for i in z.infolist()} == {method}
    for mapped in (True, False):
        back = pb.load(path, mmap=mapped)
        assert back == small and back.info() == small.info()
    with np.load(path) as npz:  # what any NumPy reader sees: the same schema
        assert str(npz["format"]) == "ptebatch.snapshot" and int(npz["version"]) == 1
        np.testing.assert_array_equal(npz["ptes"], small.ptes)
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_default_is_stored_and_much_bigger_than_deflated(tmp_path, small):
    small.save(tmp_path / "stored.npz")
    small.save(tmp_path / "deflated.npz", compress=True)
    stored, deflated = (os.path.getsize(tmp_path / n) for n in ("stored.npz", "deflated.npz"))
    assert stored > small.ptes.nbytes > deflated


# -- loading: memory-mapped or read whole ---------------------------------------------------------


def test_stored_snapshot_loads_memory_mapped(tmp_path, small):
    path = tmp_path / "s.npz"
    small.save(path)
    back = pb.load(path)
    for name in (*NAMES, "vma_flags"):
        a = getattr(back, name)
        assert isinstance(_mapping(a), mmap.mmap), name
        assert not a.flags.writeable, name
        np.testing.assert_array_equal(a, getattr(small, name))
    with pytest.raises(ValueError, match="read-only"):
        back.ptes[0, 0] = 1
    whole = pb.load(path, mmap=False)
    assert whole == small and _mapping(whole.ptes) is None and whole.ptes.flags.writeable


@pytest.mark.parametrize("writer", ["save", "savez_compressed", "savez_old_schema"])
def test_compressed_and_old_snapshots_still_load(tmp_path, small, writer):
    path = tmp_path / "old.npz"
    fields = dict(
        format=np.array("ptebatch.snapshot"),
        version=np.array(1),
        arch=np.array(small.arch),
        **{n: getattr(small, n) for n in NAMES},
    )
    if writer == "save":
        small.save(path, compress=True)
    elif writer == "savez_compressed":
        np.savez_compressed(path, vma_flags=small.vma_flags, **fields)
    else:  # written before vma_flags existed, by plain np.savez: vma_flags come back 0
        np.savez(path, **fields)
    back = pb.load(path)
    want = (
        small
        if writer != "savez_old_schema"
        else pb.AddressSpace(**{n: getattr(small, n) for n in NAMES}, arch=small.arch)
    )
    assert back == want
    assert read_info(path, present=True) == want.info()
    if writer != "savez_old_schema":  # deflated members are read whole, into writable memory
        assert _mapping(back.ptes) is None and back.ptes.flags.writeable


def test_data_snapshots_load_mapped_and_whole_alike():
    data = os.path.join(os.path.dirname(__file__), os.pardir, "data")
    names = sorted(n for n in os.listdir(data) if n.endswith(".npz"))
    assert names
    for name in names:
        path = os.path.join(data, name)
        mapped, whole = pb.load(path), pb.load(path, mmap=False)
        assert mapped == whole, name
        assert read_info(path, present=True) == whole.info(), name


# -- bad files: one ValueError naming the problem -------------------------------------------------


def _member_span(path, name):
    """(first, end) file offsets of a stored member's data (its .npy header included)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    with open(path, "rb") as fh:
        fh.seek(info.header_offset + 26)
        n, m = np.frombuffer(fh.read(4), dtype="<u2")
    first = info.header_offset + 30 + int(n) + int(m)
    return first, first + info.compress_size


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_files_are_refused(tmp_path, compress):
    path = tmp_path / "t.npz"
    pb.generate(200, seed=2).save(path, compress=compress)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 10, 100):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or corrupt"):
            pb.load(bad)
        with pytest.raises(ValueError, match="truncated or corrupt"):
            read_info(bad)


def test_corrupt_ptes_fail_the_crc_unless_verify_is_off(tmp_path):
    sp = pb.generate(200, seed=2)
    path = tmp_path / "c.npz"
    sp.save(path)
    first, end = _member_span(path, "ptes.npy")
    raw = bytearray(path.read_bytes())
    mid = (first + end) // 2
    raw[mid : mid + 64] = bytes(64)  # none PTEs: the schema rules cannot see them
    path.write_bytes(bytes(raw))
    with pytest.raises(pb.SnapshotError, match=r"corrupt snapshot: ptes\.npy: .* CRC-32$"):
        pb.load(path)
    with pytest.raises(pb.SnapshotError, match=r"corrupt snapshot: ptes\.npy: .* CRC-32$"):
        read_info(path, present=True)
    read_info(path)  # does not read the tables
    unchecked = pb.load(path, verify=False)
    assert unchecked != sp and unchecked.table_va.tolist() == sp.table_va.tolist()


def test_corrupt_deflated_member_is_refused(tmp_path):
    path = tmp_path / "z.npz"
    pb.generate(200, seed=2).save(path, compress=True)
    first, end = _member_span(path, "ptes.npy")
    raw = bytearray(path.read_bytes())
    raw[first + 20 : first + 84] = bytes(range(64))
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        pb.load(path)


def test_member_size_that_disagrees_with_its_npy_header(tmp_path):
    """A stored member whose .npy header promises more data than the member holds."""
    path = tmp_path / "h.npz"
    pb.generate(50, seed=1).save(path)
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    members["table_va.npy"] = members["table_va.npy"][:-8]  # one entry short
    with zipfile.ZipFile(path, "w") as z:  # stored, CRC-32s of the shortened data
        for name, blob in members.items():
            z.writestr(name, blob)
    with pytest.raises(ValueError, match="truncated or corrupt.*table_va"):
        pb.load(path)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        pb.load(path, mmap=False)


def test_not_an_npz(tmp_path):
    (tmp_path / "text.npz").write_text("hello")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    for name, why in (
        ("text.npz", "not a zip archive: it starts with b'hell'"),
        (
            "plain.npy",
            "a single .npy array; a snapshot is the .npz archive AddressSpace.save writes",
        ),
        ("empty.npz", "an empty file"),
    ):
        for call in (pb.load, read_info):
            with pytest.raises(pb.SnapshotError) as got:
                call(tmp_path / name)
            assert str(got.value) == f"{tmp_path / name}: not a ptebatch snapshot ({why})"
    with pytest.raises(FileNotFoundError):
        pb.load(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        read_info(tmp_path / "missing.npz")


def _write_fields(path, compress=False, **fields):
    (np.savez_compressed if compress else np.savez)(path, **fields)


def _fields(sp):
    f = {n: getattr(sp, n) for n in NAMES}
    f.update(format=np.array("ptebatch.snapshot"), version=np.array(1), arch=np.array(sp.arch))
    return f


@pytest.mark.parametrize(
    "mutate,exc,match",
    [
        (lambda f: f.update(version=np.array(2)), ValueError, "version must be 1, got"),
        (lambda f: f.pop("folio_nr"), ValueError, "missing field 'folio_nr'"),
        (lambda f: f.update(arch=np.array("mips")), ValueError, "arch: unknown architecture"),
        (
            lambda f: f.update(table_va=f["table_va"].astype(np.int64)),
            pb.SnapshotError,
            "table_va: dtype must be uint64",
        ),
        (
            lambda f: f.update(ptes=np.asfortranarray(f["ptes"])),
            ValueError,
            "ptes: must be C-contiguous",
        ),
        (
            lambda f: f.update(ptes=f["ptes"][:, :256].copy()),
            ValueError,
            "ptes: each table must have 512 entries",
        ),
        (
            lambda f: f.update(folio_flags=f["folio_flags"][:-1].copy()),
            ValueError,
            "folio_nr/folio_flags: lengths",
        ),
        (
            lambda f: f.update(vma_flags=np.zeros(1, dtype=np.uint8)),
            ValueError,
            "vma_flags: length 1 does not match",
        ),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_header_errors_are_the_same_from_load_and_read_info(
    tmp_path, small, mutate, exc, match, compress
):
    f = _fields(small)
    mutate(f)
    path = tmp_path / "bad.npz"
    _write_fields(path, compress, **f)
    for call in (pb.load, read_info):
        with pytest.raises(exc, match=match) as got:
            call(path)
        assert str(got.value).startswith(str(path))
        assert type(got.value) is pb.SnapshotError  # one error type for every bad file


def test_value_rules_are_left_to_load(tmp_path, small):
    f = _fields(small)
    f["folio_nr"] = f["folio_nr"].copy()
    f["folio_nr"][5] = 12
    path = tmp_path / "bad.npz"
    _write_fields(path, **f)
    with pytest.raises(ValueError, match="folio 5 has 12"):
        pb.load(path)
    assert read_info(path)["folio_sizes"]["12"] == 1


# -- validation and info go through the arrays a piece at a time -------------------------------


def _violations(sp):
    """Copies of ``sp``'s arrays, each with one rule broken at a given index."""
    n_t, n_v, n_f = sp.n_tables, sp.n_vmas, sp.n_folios

    def edit(name, fn):
        a = {n: getattr(sp, n).copy() for n in NAMES}
        a["vma_flags"] = sp.vma_flags.copy()
        fn(a[name])
        return a

    for i in (0, 3, 4, 5, n_t - 1):
        yield edit("table_va", lambda a, i=i: a.__setitem__(i, a[i] + np.uint64(4096)))
    for i in (1, 4, 5, n_t - 1):
        yield edit("table_va", lambda a, i=i: a.__setitem__(i, a[i - 1]))
    for i in (0, 4, n_v - 1):
        yield edit("vma_start", lambda a, i=i: a.__setitem__(i, a[i] + np.uint64(1)))
        yield edit("vma_end", lambda a, i=i: a.__setitem__(i, a[i] - np.uint64(1)))
        yield edit("vma_flags", lambda a, i=i: a.__setitem__(i, 4))
    for i in (1, 4, 8, n_v - 1):
        yield edit("vma_start", lambda a, i=i: a.__setitem__(i, a[i - 1]))
    for i in (0, 3, 4, 7, n_f - 1):
        yield edit("folio_nr", lambda a, i=i: a.__setitem__(i, 3))
        yield edit("folio_pfn", lambda a, i=i: a.__setitem__(i, a[i] + np.uint64(1)))
        yield edit("folio_flags", lambda a, i=i: a.__setitem__(i, 8))
    for i in (1, 4, 8, n_f - 1):
        yield edit("folio_pfn", lambda a, i=i: a.__setitem__(i, a[i - 1]))


def _error(arrays, arch):
    try:
        pb.AddressSpace(**arrays, arch=arch)
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


def test_chunked_validation_reports_what_one_pass_did(small, monkeypatch):
    cases = list(_violations(small))
    whole = [_error(a, small.arch) for a in cases]
    assert all(whole) and len(set(whole)) > 20
    for step in (1, 3, 4):
        monkeypatch.setattr(space_mod, "_STEP", step)
        assert [_error(a, small.arch) for a in cases] == whole


def test_chunked_info_and_equality(tmp_path, small, monkeypatch):
    path = tmp_path / "s.npz"
    small.save(path)
    want = small.info()
    monkeypatch.setattr(space_mod, "_STEP", 1000)  # not a multiple of 512: pieces split tables
    back = pb.load(path)
    assert back.info() == want == read_info(path, present=True)
    assert read_info(path) == {**want, "present_ptes": None} == back.info(present=False)
    assert back == small
    other = pb.AddressSpace(
        **{n: getattr(small, n).copy() for n in NAMES}, arch=small.arch, vma_flags=small.vma_flags
    )
    other.ptes[-1, -1] ^= np.uint64(1 << 62)
    assert other != back


# -- a loaded (mapped) space behaves as an in-memory one -----------------------------------------


def test_walks_of_a_mapped_space_equal_the_in_memory_ones(tmp_path, small):
    path = tmp_path / "s.npz"
    small.save(path)
    back = pb.load(path)
    assert isinstance(_mapping(back.ptes), mmap.mmap)
    _same_walk(pb.scan(back, kernel="6.15"), pb.scan(small, kernel="6.15"))
    _same_walk(pb.unmap(back, kernel="6.15"), pb.unmap(small, kernel="6.15"))
    arm = pb.generate(2000, seed=3, arch="arm64", mixed_write=0.3, lazyfree=0.8)
    arm.save(path)
    back = pb.load(path)
    kw = dict(caller="mremap", kernel="6.17", move_by=0x1FF000)
    _same_walk(pb.scan(back, **kw), pb.scan(arm, **kw))
    _same_walk(pb.naive.scan(back, **kw), pb.scan(arm, **kw))


def test_walks_of_a_mapped_space_whose_vmas_cover_no_table(tmp_path):
    # a table and a VMA elsewhere: no segment to walk.  The unmap of the mapped space once
    # released the tables of its first group of segments, and there was none (IndexError).
    sp = pb.AddressSpace.from_entries(
        [0x200000], [0], [0x800000], [0x801000], [], [], [], arch="x86_64"
    )
    sp.save(tmp_path / "s.npz")
    back = pb.load(tmp_path / "s.npz")
    for rows in (True, False):
        _same_walk(pb.unmap(back, rows=rows), pb.unmap(sp, rows=rows))
        _same_walk(pb.scan(back, rows=rows), pb.scan(sp, rows=rows))


def test_pickle_and_save_over_the_mapped_file(tmp_path, small):
    path = tmp_path / "s.npz"
    small.save(path)
    back = pb.load(path)
    pb.scan(back)  # caches derived indexes on the space
    again = pickle.loads(pickle.dumps(back))
    assert again == small and again.ptes.flags.writeable
    back.save(path)  # over the file it maps: a new file is renamed over the old one
    assert back == small and pb.load(path) == small
    other = pb.generate(500, seed=9)
    other.save(path, compress=True)
    assert back == small  # still the old file's data
    assert pb.load(path) == other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npz"]


# -- a large snapshot: info without reading the tables -------------------------------------------

_MEASURE = textwrap.dedent(
    """
    import json, resource, subprocess, sys, time
    t = time.perf_counter()
    out = subprocess.run(sys.argv[1:], check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"out": out, "wall": wall, "rss": rss}))
    """
)


def _peak(cmd: list) -> dict:
    """Run ``cmd`` under a fresh Python whose only child it is; its wall time and peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    sp = pb.generate(700_000, seed=1)
    path = tmp_path_factory.mktemp("large") / "large.npz"
    sp.save(path)
    return sp, path


@pytest.mark.slow
def test_read_info_of_a_large_snapshot_reads_no_tables(large):
    sp, path = large
    size = os.path.getsize(path)
    assert size > 150 << 20
    t = time.perf_counter()
    info = read_info(path)
    elapsed = time.perf_counter() - t
    assert info == sp.info(present=False)
    assert elapsed < 1.0, elapsed
    code = "import json, sys; from ptebatch.space import read_info; "
    code += "print(json.dumps(read_info(sys.argv[1])))"
    got = _peak([sys.executable, "-c", code, str(path)])
    assert json.loads(got["out"]) == info
    # the interpreter with NumPy and Numba imported is most of it (about 165 MB here)
    assert got["rss"] < size / 2 + (150 << 20), got


@pytest.mark.slow
def test_cli_info_of_a_large_snapshot_stays_small(large):
    sp, path = large
    size = os.path.getsize(path)
    exe = os.path.join(os.path.dirname(sys.executable), "ptebatch")
    got = _peak([exe, "info", str(path), "--json"])
    info = json.loads(got["out"])
    assert info["tables"] == sp.n_tables and info["folio_sizes"] == sp.info()["folio_sizes"]
    assert got["rss"] < size / 2 + (150 << 20), got


@pytest.mark.slow
def test_large_mapped_snapshot_scans_like_the_in_memory_one(large):
    sp, path = large
    back = pb.load(path)
    assert isinstance(_mapping(back.ptes), mmap.mmap)
    assert back == sp
    _same_walk(
        pb.scan(back, kernel="6.15", clamp="folio", oob="adjacent"),
        pb.scan(sp, kernel="6.15", clamp="folio", oob="adjacent"),
    )
    assert read_info(path, present=True) == sp.info()


@pytest.fixture
def released(monkeypatch):
    """Large-space behaviour forced on small spaces, and every release of walked tables."""
    from ptebatch import engine, planning

    monkeypatch.setattr(engine, "PROGRESS_MIN_WORK", 0)
    calls = []
    real = planning.PageReleaser.release

    def spy(self, lo, hi):
        calls.append((lo, hi))
        real(self, lo, hi)

    monkeypatch.setattr(planning.PageReleaser, "release", spy)
    return calls


def test_a_counts_scan_of_a_mapped_snapshot_releases_walked_tables(tmp_path, released):
    # groups of chunks, walked pages released
    space = pb.generate(20_000, seed=9, moved=0.2)
    path = tmp_path / "s.npz"
    space.save(path)
    mapped = pb.load(path)
    for kw in ({}, {"clamp": "folio", "oob": "adjacent"}):
        got = pb.scan(mapped, rows=False, **kw)
        assert got.summary() == pb.scan(space, rows=False, **kw).summary()
    assert len(released) > 2
    assert all(lo < hi for lo, hi in released)
    released.clear()
    pb.scan(space, rows=False)  # in memory: nothing to release
    assert not released


@pytest.mark.parametrize("kernel", ["6.15", "6.16"])
def test_an_unmap_of_a_mapped_snapshot_releases_tables_behind_it(
    tmp_path, monkeypatch, released, kernel
):
    # the runs pass goes a few segments at a time and the walk a group of chunks at a time,
    # each releasing the tables behind it; counts equal the in-memory walk's (a released
    # table is read again if needed)
    from ptebatch import engine

    monkeypatch.setattr(engine, "RELEASE_ENTRIES", 4096)
    space = pb.generate(20_000, seed=9, moved=0.2, vma_split=0.3, lazyfree=0.8)
    path = tmp_path / "s.npz"
    space.save(path)
    mapped = pb.load(path)
    for par in (False, True):
        got = pb.unmap(mapped, kernel=kernel, rows=False, parallel=par)
        assert got.summary() == pb.unmap(space, kernel=kernel, rows=False).summary()
    assert len(released) > 2 * (space.ptes.size // 4096)  # runs: both passes, by groups
    walk = [r for r in released if r[0] == 0 or r[1] == space.ptes.size]
    assert walk and released[-1][1] == space.ptes.size  # the walk ends past every table
    released.clear()
    pb.unmap(space, kernel=kernel, rows=False)  # in memory: nothing to release
    assert not released
