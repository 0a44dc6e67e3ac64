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
        ("6.14.3", "1", "single"),
        ("6.15.0", "1b", "all_or_nothing"),
        ("6.15.11", "1b", "clamped"),
        ("6.19", "2", "clamped"),
        ("gen2:7.1", "2", "clamped"),
        ("gen2:6.18", "2", "clamped"),
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


def test_flag_spellings_that_are_accepted():
    # bits from the generation 2 table: RESPECT_WRITE bit 2, MERGE_WRITE bit 3
    g2 = pb.resolve_kernel("6.18").generation
    assert resolve_flags("FPB_RESPECT_WRITE | MERGE_WRITE", g2, 0) == 4 | 8
    assert resolve_flags("FPB_RESPECT_WRITE,FPB_MERGE_WRITE", g2, 0) == 4 | 8
    assert resolve_flags(("MERGE_WRITE",), g2, 0) == 8
    assert resolve_flags("0", g2, 7) == 0 and resolve_flags([], g2, 7) == 0
    assert resolve_flags(np.int64(8), g2, 0) == 8


# Issue 12, finding 6: flags that used to be taken as no flags or as some flags.
@pytest.mark.parametrize(
    "bad,exc,match",
    [
        ("", ValueError, r"'' has an empty flag name.*or 0 for none"),
        ("|", ValueError, r"'\|' has an empty flag name"),
        ("FPB_RESPECT_WRITE|", ValueError, r"'FPB_RESPECT_WRITE\|' has an empty flag name"),
        (
            "fpb_respect_write",
            ValueError,
            r"'fpb_respect_write' must be written in capitals as the kernel spells it "
            r"\('FPB_RESPECT_WRITE'\)",
        ),
        (
            ["merge_write"],
            ValueError,
            r"'merge_write' must be written in capitals.*'FPB_MERGE_WRITE'",
        ),
        ({"FPB_RESPECT_WRITE": 1}, TypeError, r"expected an int, .* a list of names, got dict"),
        ({"FPB_RESPECT_WRITE"}, TypeError, r"expected an int, .* a list of names, got set"),
        (np.bool_(True), TypeError, r"expected an int, .* a list of names, got bool"),
    ],
)
def test_meaningless_flags_are_refused(bad, exc, match):
    g2 = pb.resolve_kernel("6.18").generation
    with pytest.raises(exc, match="^flags: " + match):
        resolve_flags(bad, g2, 0)


# Issue 12, finding 6: selectors that used to be taken silently as some generation.
@pytest.mark.parametrize(
    "bad,match",
    [
        # newer than 7.0, the newest modelled release: only with an explicit generation
        ("99.0", r"newer than the newest modelled release \(7\.0\).*'gen2:99\.0'"),
        ("7.1", r"newer than the newest modelled release \(7\.0\).*'gen2:7\.1'"),
        # 6.15.y ended at 6.15.11, so 6.15.99 never existed
        ("6.15.99", r"never released: the 6\.15\.y stable series ended at 6\.15\.11"),
        ("v6.16", r"without the 'v'.*expected a modelled release MAJOR\.MINOR \(6\.9 to 7\.0\)"),
        ("06.16", r"no 'v', spaces or leading zeros.*gen1, gen1b, gen2"),
        (" 6.16", r"without spaces"),
        ("6.20", r"not a mainline release; the model knows 6\.9, .*6\.19, 7\.0"),
        ("Gen2", r"not a release version"),
        ("gen1:7.1", r"newer than 7\.0 can only be taken as the newest generation, gen2"),
        ("gen1:6.18", r"contradicts the model: 6\.18 has generation 2"),
        ("gen2:", r"not a release version"),
    ],
)
def test_meaningless_kernel_selectors_are_refused(bad, match):
    with pytest.raises(ValueError, match="^kernel: .*" + match):
        pb.resolve_kernel(bad)


def test_a_release_past_the_newest_takes_the_newest_rows_and_names_itself():
    p = pb.resolve_kernel("gen2:7.1")
    assert (p.version, p.generation.name, p.name) == ((7, 1, 0), "2", "gen2:7.1")
    assert pb.resolve_kernel(p.name) == p
    # 7.0's lazyfree row (respects write and soft-dirty) is the one in force
    assert (
        pb.resolve_caller("lazyfree", "gen2:7.1").rule == pb.resolve_caller("lazyfree", "7.0").rule
    )
    # real bug 5: 8 writable then 8 read-only PTEs of one folio.  6.19 ignores write and
    # batches all 16 (spread); 7.0, and so 7.1 as generation 2, respects write: 8 and 8
    space = pb.workloads.layouts.lazyfree_restore_layout()
    old, new = pb.unmap(space, kernel="6.19"), pb.unmap(space, kernel="gen2:7.1")
    assert (old.nr.tolist(), old.finding_counts["spread"]) == ([16], 1)
    assert (new.nr.tolist(), new.finding_counts["spread"], new.kernel) == ([8, 8], 0, "gen2:7.1")


def test_flag_vocabularies_do_not_mix():
    g1 = pb.resolve_kernel("6.16").generation
    g2 = pb.resolve_kernel("6.18").generation
    assert resolve_flags("IGNORE_DIRTY", g1, 0) == 1
    assert resolve_flags(["FPB_RESPECT_WRITE", "MERGE_WRITE"], g2, 0) == 12
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


# Issue 12, finding 4: an np.matrix was accepted and then failed inside Numba.
@pytest.mark.parametrize(
    "field,wrap",
    [
        ("ptes", np.matrix),
        ("table_va", lambda a: np.ma.masked_array(a)),
        ("folio_nr", lambda a: np.ma.masked_array(a)),
    ],
)
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
def test_array_subclasses_are_refused(field, wrap):
    arrays = good_arrays()
    arrays[field] = wrap(arrays[field])
    with pytest.raises(TypeError, match=f"^{field}: expected a plain numpy.ndarray .*np.asarray"):
        pb.AddressSpace(**arrays)


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
        (("ok", 0, 1, 0x1000, 3), ValueError, "folio_nr: must be a power of two from 2 to 262144"),
        (("ok", 0, 1, 0x1000, 1), ValueError, "folio_nr: must be a power of two from 2 to 262144"),
        # issue 12: a folio of 2**40 pages is no folio of any modelled kernel (at most 2**18)
        (("ok", 0, 1, 0, 2**40), ValueError, "folio_nr: must be a power of two from 2 to 262144"),
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


# Issue 12, finding 6: detectors="no" was taken as true, move_by=2**70 as some offset.
@pytest.mark.parametrize("impl", [pb, pb.naive])
def test_walk_switches_and_offsets_out_of_their_domain(impl):
    sp = pb.thread_layout()
    for walk in (impl.scan, impl.unmap):
        for bad in ("no", 0, None):
            with pytest.raises(TypeError, match="^detectors: expected True or False"):
                walk(sp, detectors=bad)
    for bad in (2**70, -(2**64), 2**64):
        with pytest.raises(ValueError, match=r"^move_by: must be between -\(2\*\*64 - 4096\)"):
            impl.scan(sp, caller="mremap", kernel="6.18", move_by=bad)
    # the largest offsets in range are accepted: mremap on x86-64 never batches (hint 1),
    # so each of the folio's 16 PTEs is its own row
    top = 2**64 - 4096
    for ok in (top, -top):
        assert impl.scan(sp, caller="mremap", kernel="6.18", move_by=ok).batches == 16


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


def test_unmap_components_keep_folios_that_touch_common_entries_together():
    from ptebatch.planning import unmap_components

    def components(run_g, run_len, run_reach, run_f, items):
        by_folio = np.argsort(run_f, kind="stable")
        item_r0 = np.searchsorted(run_f[by_folio], items)
        return unmap_components(run_g, run_len, run_reach, by_folio, item_r0)

    def parts(labels, items):
        out = {}
        for lab, f in zip(labels.tolist(), items.tolist()):
            out.setdefault(lab, []).append(f)
        return sorted(out.values())

    # Runs in flat order (start, length, reach, folio).  Windows are widened to
    # whole 16-entry blocks: [0, 16) folio 5; [16, 32) folio 2 (reach 30 < 32);
    # [32, 48) folio 9, whose reach 40 stays in its block; [48, 64) folio 1, and
    # folio 7 at entry 50 shares that block.  Components: {5}, {2}, {9}, {1, 7}.
    run_g = np.array([0, 16, 32, 48, 50], dtype=np.int64)
    run_len = np.array([16, 8, 4, 2, 2], dtype=np.int64)
    run_reach = np.array([16, 30, 40, 50, 52], dtype=np.int64)
    run_f = np.array([5, 2, 9, 1, 7], dtype=np.int64)
    items = np.array([1, 2, 5, 7, 9])
    got = components(run_g, run_len, run_reach, run_f, items)
    assert parts(got, items) == [[1, 7], [2], [5], [9]]
    # A run whose reach crosses into the next block links it: folio 2 now reaches
    # entry 33 (folio 9's block): {2, 9}.
    run_reach[1] = 33
    got = components(run_g, run_len, run_reach, run_f, items)
    assert parts(got, items) == [[1, 7], [2, 9], [5]]
    # A folio with runs in two groups joins them: folio 5 also mapped at entry 96,
    # next to folio 9 (second mapping at 100): {2, 9} and {5} become one, through
    # 9 -> its run at 100 -> folio 5's run at 96 -> folio 5.
    run_g = np.append(run_g, [96, 100])
    run_len = np.append(run_len, [4, 4])
    run_reach = np.append(run_reach, [100, 104])
    run_f = np.append(run_f, [5, 9])
    got = components(run_g, run_len, run_reach, run_f, items)
    assert parts(got, items) == [[1, 7], [2, 5, 9]]
