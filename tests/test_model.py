"""Encoding, kernel selection, schema validation and snapshots."""

import os

import numpy as np
import pytest

import ptebatch as pb
from ptebatch import X86_64
from ptebatch.releases import normaliser, resolve_flags

# -- x86-64 encoding (docs/model.md section 6) ----------------------------------------


def test_x86_bit_positions():
    b = X86_64.bits
    want = {
        "PRESENT": 0,
        "RW": 1,
        "USER": 2,
        "PWT": 3,
        "PCD": 4,
        "ACCESSED": 5,
        "DIRTY": 6,
        "PAT": 7,
        "GLOBAL": 8,
        "SPECIAL": 9,
        "UFFD_WP": 10,
        "SOFT_DIRTY": 11,
        "NX": 63,
    }
    assert {k: b[k].bit_length() - 1 for k in want} == want
    assert X86_64.pfn_mask == sum(1 << i for i in range(12, 52))


def test_make_pte_and_tests_round_trip():
    pfn = np.array([0, 1, (1 << 40) - 1], dtype=np.uint64)
    p = X86_64.make_pte(
        pfn,
        write=[True, False, True],
        young=True,
        dirty=[False, True, False],
        soft_dirty=True,
        uffd_wp=[True, False, False],
        nx=True,
    )
    assert p.dtype == np.uint64
    np.testing.assert_array_equal(X86_64.pte_pfn(p), pfn)
    assert X86_64.pte_present(p).all() and X86_64.pte_young(p).all()
    assert X86_64.pte_write(p).tolist() == [True, False, True]
    assert X86_64.pte_dirty(p).tolist() == [False, True, False]
    assert X86_64.pte_soft_dirty(p).all()
    assert X86_64.pte_uffd_wp(p).tolist() == [True, False, False]
    assert (p >> np.uint64(63)).tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="pfn"):
        X86_64.make_pte(1 << 40)


def test_x86_operations():
    p = X86_64.make_pte(5, write=True, young=True, dirty=True, soft_dirty=True, nx=True)
    b = X86_64.bits
    assert int(X86_64.pte_mkclean(p)) == int(p) & ~b["DIRTY"]
    assert int(X86_64.pte_mkold(p)) == int(p) & ~b["ACCESSED"]
    assert int(X86_64.pte_wrprotect(p)) == int(p) & ~b["RW"]
    assert int(X86_64.pte_clear_soft_dirty(p)) == int(p) & ~b["SOFT_DIRTY"]
    clean = X86_64.make_pte(5)
    assert int(X86_64.pte_mkdirty(clean)) == int(clean) | b["DIRTY"] | b["SOFT_DIRTY"]
    assert X86_64.apply("mkclean", int(p)) == int(X86_64.pte_mkclean(p))


@pytest.mark.parametrize(
    "kernel,flags,ignored",
    [
        ("6.14", 0, ["young", "write"]),  # pte_wrprotect(pte_mkold(pte))
        (
            "6.14",
            "FPB_IGNORE_DIRTY|FPB_IGNORE_SOFT_DIRTY",
            ["dirty", "soft_dirty", "young", "write"],
        ),
        ("6.18", 0, ["dirty", "soft_dirty", "write", "young"]),
        ("6.18", "FPB_RESPECT_DIRTY,FPB_RESPECT_WRITE", ["soft_dirty", "young"]),
    ],
)
def test_generation_ignore_rules(kernel, flags, ignored):
    gen = pb.resolve_kernel(kernel).generation
    fl = resolve_flags(flags, gen, 0)
    assert gen.ignored(fl) == ignored
    n = normaliser(X86_64, gen, fl)
    masks = {
        "dirty": X86_64.bits["DIRTY"],
        "soft_dirty": X86_64.bits["SOFT_DIRTY"],
        "write": X86_64.bits["RW"],
        "young": X86_64.bits["ACCESSED"],
    }
    assert n.keep == ((1 << 64) - 1) & ~sum(masks[p] for p in ignored)
    assert (n.set, n.cond_set) == (0, 0)


# -- kernel selection --------------------------------------------------------------


@pytest.mark.parametrize(
    "text,gen,unmap",
    [
        ("6.9", "1", "single"),
        ("6.14", "1", "single"),
        ("v6.14.3", "1", "single"),
        ("6.15", "1b", "all_or_nothing"),
        ("6.15.6", "1b", "all_or_nothing"),
        ("6.15.7", "1b", "clamped"),
        ("6.16", "1b", "clamped"),
        ("6.17", "2", "clamped"),
        ("6.18", "2", "clamped"),
        ("7.0", "2", "clamped"),
        ("gen1", "1", "single"),
        ("gen1b", "1b", "clamped"),
        ("gen2", "2", "clamped"),
    ],
)
def test_resolve_kernel(text, gen, unmap):
    p = pb.resolve_kernel(text)
    preset = pb.resolve_caller("lazyfree", text)
    assert p.generation.name == gen
    assert (preset.rule.unmap if preset.rule.batches else "single") == unmap


def test_zap_and_unmap_flags_per_release():
    def flags(caller, kernel):
        p = pb.resolve_caller(caller, kernel)
        return p.profile.generation.describe_flags(p.flags)

    assert flags("zap", "6.16") == ["FPB_IGNORE_DIRTY", "FPB_IGNORE_SOFT_DIRTY"]
    assert flags("zap", "6.18") == []
    assert flags("lazyfree", "7.0") == ["FPB_RESPECT_SOFT_DIRTY", "FPB_RESPECT_WRITE"]


@pytest.mark.parametrize(
    "bad,match",
    [
        ("6.8", "predates"),
        ("5.15", "predates"),
        ("6.16-rc1", "release version"),
        ("banana", "release"),
        ("gen3", "unknown generation"),
        ("", "release"),
    ],
)
def test_bad_kernel_strings(bad, match):
    with pytest.raises(ValueError, match="kernel: .*" + match):
        pb.resolve_kernel(bad)


def test_flag_vocabularies_do_not_mix():
    g1 = pb.resolve_kernel("6.16").generation
    g2 = pb.resolve_kernel("6.18").generation
    assert resolve_flags("ignore_dirty", g1, 0) == 1
    assert resolve_flags(["FPB_RESPECT_WRITE", "merge_write"], g2, 0) == 12
    with pytest.raises(
        ValueError, match="flags: 'FPB_RESPECT_DIRTY' is not a flag of generation 1b"
    ):
        resolve_flags("FPB_RESPECT_DIRTY", g1, 0)
    with pytest.raises(ValueError, match="belongs to generation 1/1b"):
        resolve_flags("FPB_IGNORE_DIRTY", g2, 0)
    with pytest.raises(ValueError, match="bits outside"):
        resolve_flags(4, g1, 0)
    with pytest.raises(ValueError, match="not a flag"):
        resolve_flags("FPB_NONSENSE", g2, 0)
    with pytest.raises(TypeError, match="flags"):
        resolve_flags(1.5, g2, 0)


# -- schema validation ---------------------------------------------------------------


def good_arrays():
    sp = pb.thread_layout()
    return {
        n: getattr(sp, n).copy()
        for n in (
            "ptes",
            "table_va",
            "vma_start",
            "vma_end",
            "folio_pfn",
            "folio_nr",
            "folio_flags",
        )
    }


def build(**changes):
    a = good_arrays()
    a.update(changes)
    return pb.AddressSpace(**a)


@pytest.mark.parametrize(
    "changes,exc,match",
    [
        (dict(ptes=np.zeros((2, 512), dtype=np.int64)), TypeError, "ptes: dtype must be uint64"),
        (dict(ptes=[[0] * 512]), TypeError, "ptes: expected a numpy.ndarray"),
        (
            dict(ptes=np.zeros((2, 256), dtype=np.uint64)),
            ValueError,
            "ptes: each table must have 512",
        ),
        (
            dict(ptes=np.zeros((512, 2), dtype=np.uint64).T),
            ValueError,
            "ptes: must be C-contiguous",
        ),
        (
            dict(table_va=np.array([0x200000, 0x200000], dtype=np.uint64)),
            ValueError,
            "table_va: must be strictly increasing",
        ),
        (
            dict(table_va=np.array([0x1000, 0x400000], dtype=np.uint64)),
            ValueError,
            "table_va: must be multiples of 2 MiB",
        ),
        (dict(table_va=np.array([0x200000], dtype=np.uint64)), ValueError, "table_va: length 1"),
        (
            dict(vma_start=np.array([0x1001], dtype=np.uint64)),
            ValueError,
            "vma_start: must be page-aligned",
        ),
        (
            dict(
                vma_start=np.array([0x10000200000], dtype=np.uint64),
                vma_end=np.array([0x10000100000], dtype=np.uint64),
            ),
            ValueError,
            "vma_end: must be above",
        ),
        (
            dict(
                vma_start=np.array([0x1000, 0x2000], dtype=np.uint64),
                vma_end=np.array([0x3000, 0x4000], dtype=np.uint64),
            ),
            ValueError,
            "vma_start: VMAs must be sorted and non-overlapping",
        ),
        (
            dict(folio_nr=np.array([12], dtype=np.uint64)),
            ValueError,
            "folio_nr: must be a power of two",
        ),
        (
            dict(folio_nr=np.array([0], dtype=np.uint64)),
            ValueError,
            "folio_nr: must be a power of two",
        ),
        (
            dict(folio_pfn=np.array([0x113AA8], dtype=np.uint64)),
            ValueError,
            "folio_pfn: .*naturally aligned",
        ),
        (
            dict(
                folio_pfn=np.array([0x10, 0x18], dtype=np.uint64),
                folio_nr=np.array([16, 8], dtype=np.uint64),
                folio_flags=np.array([1, 1], dtype=np.uint8),
            ),
            ValueError,
            "folio_pfn: folios must not overlap",
        ),
        (
            dict(
                folio_pfn=np.array([0x20, 0x10], dtype=np.uint64),
                folio_nr=np.array([16, 16], dtype=np.uint64),
                folio_flags=np.array([1, 1], dtype=np.uint8),
            ),
            ValueError,
            "folio_pfn: must be strictly increasing",
        ),
        (dict(folio_flags=np.array([4], dtype=np.uint8)), ValueError, "folio_flags: only bit 0"),
        (
            dict(folio_flags=np.array([1], dtype=np.uint16)),
            TypeError,
            "folio_flags: dtype must be uint8",
        ),
        (
            dict(folio_nr=np.array([16, 16], dtype=np.uint64)),
            ValueError,
            "folio_nr/folio_flags: lengths",
        ),
    ],
)
def test_bad_space_is_rejected_with_the_field_and_rule(changes, exc, match):
    with pytest.raises(exc, match=match):
        build(**changes)


def test_bad_arch():
    with pytest.raises(ValueError, match="arch: unknown architecture 'sparc'"):
        pb.AddressSpace(**good_arrays(), arch="sparc")


# -- single-batch argument checks ----------------------------------------------------------


@pytest.mark.parametrize("impl", [pb, pb.naive])
@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((np.zeros(4, dtype=np.int64), 0, 1, 0x1000, 4), TypeError, "ptes: dtype must be uint64"),
        (
            (np.zeros((2, 2), dtype=np.uint64), 0, 1, 0x1000, 4),
            ValueError,
            "ptes: must be one-dimensional",
        ),
        (
            (np.zeros(8, dtype=np.uint64)[::2], 0, 1, 0x1000, 4),
            ValueError,
            "ptes: must be C-contiguous",
        ),
        (("A", 0, 1, 0x1000, 4), TypeError, "ptes: expected a numpy.ndarray"),
        (("ok", 4, 1, 0x1000, 4), ValueError, "index: 4 is outside"),
        (("ok", -1, 1, 0x1000, 4), ValueError, "index: -1 is outside"),
        (("ok", 0, 0, 0x1000, 4), ValueError, "max_nr: must be at least 1"),
        (("ok", 0, 1.0, 0x1000, 4), TypeError, "max_nr: expected an integer"),
        (("ok", 0, 1, 0x1000, 3), ValueError, "folio_nr: must be a power of two >= 2"),
        (("ok", 0, 1, 0x1000, 1), ValueError, "folio_nr: must be a power of two >= 2"),
        (("ok", 0, 1, 0x1001, 4), ValueError, "folio_pfn: must be aligned"),
        (("ok", 0, 1, 0x2000, 4), ValueError, r"ptes\[0\]: the first PTE maps PFN 0x1000, outside"),
        (("hole", 0, 1, 0x1000, 4), ValueError, r"ptes\[0\]: the first PTE must be present"),
    ],
)
def test_bad_batch_arguments(impl, args, exc, match):
    arr = X86_64.make_pte(0x1000 + np.arange(4, dtype=np.uint64), write=True)
    if isinstance(args[0], str) and args[0] == "ok":
        args = (arr,) + args[1:]
    elif isinstance(args[0], str) and args[0] == "hole":
        arr[0] = 0
        args = (arr,) + args[1:]
    with pytest.raises(exc, match=match):
        impl.folio_pte_batch(*args)


@pytest.mark.parametrize("impl", [pb, pb.naive])
def test_bad_walk_arguments(impl):
    sp = pb.thread_layout()
    with pytest.raises(ValueError, match="clamp: must be one of pmd, folio"):
        impl.scan(sp, clamp="table")
    with pytest.raises(ValueError, match="oob: must be one of none, adjacent"):
        impl.scan(sp, oob="zero")
    with pytest.raises(ValueError, match="oob"):
        impl.unmap(sp, oob="zero")
    with pytest.raises(ValueError, match="kernel"):
        impl.scan(sp, kernel="6.1")
    with pytest.raises(ValueError, match="flags"):
        impl.scan(sp, kernel="6.18", flags="FPB_IGNORE_DIRTY")
    with pytest.raises(TypeError, match="space: expected an AddressSpace"):
        impl.scan({"ptes": 1})


# -- snapshots -----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    sp = pb.generate(500, seed=3, moved=0.3)
    path = tmp_path / "space.npz"
    sp.save(path)
    back = pb.load(path)
    assert back == sp and back is not sp
    assert pb.scan(back).summary() == pb.scan(sp).summary()
    assert [p.name for p in tmp_path.iterdir()] == ["space.npz"]  # no temporary left


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "space.npz"
    pb.thread_layout().save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        pb.generate(100, seed=1).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["space.npz"]


def _write_npz(path, **fields):
    with open(path, "wb") as fh:
        np.savez(fh, **fields)


def _fields():
    sp = pb.thread_layout()
    f = {
        n: getattr(sp, n)
        for n in (
            "ptes",
            "table_va",
            "vma_start",
            "vma_end",
            "folio_pfn",
            "folio_nr",
            "folio_flags",
        )
    }
    f.update(format=np.array("ptebatch.snapshot"), version=np.array(1), arch=np.array("x86_64"))
    return f


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda f: f.update(version=np.array(2)), "version must be 1, got"),
        (lambda f: f.update(format=np.array("other")), "format must be 'ptebatch.snapshot'"),
        (lambda f: f.pop("folio_nr"), "missing field 'folio_nr'"),
        (lambda f: f.pop("format"), "missing field 'format'"),
        (lambda f: f.update(arch=np.array("mips")), "arch: unknown architecture"),
        (
            lambda f: f.update(folio_nr=np.array([12], dtype=np.uint64)),
            "folio_nr: must be a power of two",
        ),
        (
            lambda f: f.update(table_va=f["table_va"].astype(np.int64)),
            "table_va: dtype must be uint64",
        ),
    ],
)
def test_load_rejects_bad_snapshots(tmp_path, mutate, match):
    f = _fields()
    mutate(f)
    path = tmp_path / "bad.npz"
    _write_npz(path, **f)
    with pytest.raises((ValueError, TypeError), match=match):
        pb.load(path)


def test_load_rejects_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "t.npz"
    pb.generate(200, seed=2).save(path)
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        pb.load(tmp_path / "trunc.npz")
    corrupt = bytearray(data)
    mid = len(corrupt) // 2
    corrupt[mid : mid + 64] = bytes(64)
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="truncated or corrupt|ptes|table_va|folio"):
        pb.load(tmp_path / "corrupt.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(pb.SnapshotError, match=r"not a ptebatch snapshot \(not a zip archive"):
        pb.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        pb.load(tmp_path / "missing.npz")


def test_saved_snapshot_has_the_umask_mode(tmp_path):
    path = tmp_path / "s.npz"
    old = os.umask(0o022)
    try:
        pb.thread_layout().save(path)
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


def test_vma_flags_are_optional_validated_and_saved(tmp_path):
    a = good_arrays()
    sp = pb.AddressSpace(**a)
    assert sp.vma_flags.tolist() == [0] * sp.n_vmas
    flagged = pb.AddressSpace(**a, vma_flags=np.ones(sp.n_vmas, dtype=np.uint8))
    assert flagged != sp
    path = str(tmp_path / "f.npz")
    flagged.save(path)
    assert pb.load(path) == flagged
    # a snapshot written before vma_flags existed loads with all flags 0
    old = str(tmp_path / "old.npz")
    np.savez(
        old, format=np.array("ptebatch.snapshot"), version=np.array(1), arch=np.array("x86_64"), **a
    )
    assert pb.load(old) == sp
    with pytest.raises(ValueError, match="vma_flags: length 2 does not match"):
        pb.AddressSpace(**a, vma_flags=np.zeros(2, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"vma_flags: only bit 0 \(uffd-wp registered\)"):
        pb.AddressSpace(**a, vma_flags=np.full(sp.n_vmas, 4, dtype=np.uint8))
    with pytest.raises(TypeError, match="vma_flags: dtype must be uint8"):
        pb.AddressSpace(**a, vma_flags=np.zeros(sp.n_vmas, dtype=np.int64))
