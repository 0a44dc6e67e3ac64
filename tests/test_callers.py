"""Caller presets (docs/model.md section 5): the table, its checks, and what each preset changes."""

import json

import numpy as np
import pytest

import ptebatch as pb
from ptebatch import ARM64
from ptebatch.callers import CALLERS, callers_table, resolve_caller
from ptebatch.cli import main
from ptebatch.releases import _RELEASES, parse_version, resolve_flags
from ptebatch.space import FOLIO_ANON, FOLIO_SWAPBACKED

BASE = 0x10000000000
PFN = 0x80000


def test_every_rule_is_valid_in_every_release_it_covers():
    """A row's flags are names of its generation; a row never spans a generation whose
    vocabulary differs (FPB_IGNORE_* up to 6.16, FPB_RESPECT_* from 6.17)."""
    gen_starts = [v for v, _ in _RELEASES]
    for c in CALLERS.values():
        versions = [r.version for r in c.rules]
        assert versions == sorted(versions) and len(set(versions)) == len(versions), c.name
        for i, r in enumerate(c.rules):
            end = c.rules[i + 1].version if i + 1 < len(c.rules) else (99, 0, 0)
            covered = [r.version] + [v for v in gen_starts if r.version < v < end]
            vocabs = {
                tuple(pb.resolve_kernel(".".join(map(str, v))).generation.flags) for v in covered
            }
            assert len(vocabs) == 1, (c.name, r.since)
            resolve_flags(r.flags or 0, pb.resolve_kernel(r.since).generation, 0)
            assert set(r.spread) <= {"write", "soft_dirty", "dirty"}
            assert c.walk == "unmap" or (r.unmap == "clamped" and not r.file_folios)


def test_presets_follow_kernel_md_section_5():
    def flags(caller, kernel):
        p = resolve_caller(caller, kernel)
        return set(p.profile.generation.describe_flags(p.flags)) if p.rule.batches else None

    assert flags("zap", "6.14") == {"FPB_IGNORE_DIRTY", "FPB_IGNORE_SOFT_DIRTY"}
    assert flags("zap", "6.18") == set()
    assert flags("fork-shared", "6.14") == {"FPB_IGNORE_DIRTY", "FPB_IGNORE_SOFT_DIRTY"}
    assert flags("fork-private-softdirty", "6.14") == set()
    assert flags("fork-private", "6.18") == {"FPB_RESPECT_DIRTY", "FPB_MERGE_WRITE"}
    assert flags("fork-shared-softdirty", "6.18") == {"FPB_RESPECT_SOFT_DIRTY", "FPB_MERGE_WRITE"}
    assert flags("lazyfree", "6.14") is None
    assert flags("lazyfree", "6.16") == {"FPB_IGNORE_DIRTY", "FPB_IGNORE_SOFT_DIRTY"}
    assert flags("lazyfree", "7.0") == {"FPB_RESPECT_WRITE", "FPB_RESPECT_SOFT_DIRTY"}
    assert flags("mprotect", "6.16") is None
    assert flags("mprotect", "6.17") == {"FPB_RESPECT_SOFT_DIRTY", "FPB_RESPECT_WRITE"}
    assert flags("mremap", "6.17") == set() and flags("mremap", "6.18") == {"FPB_RESPECT_WRITE"}
    assert flags("madvise-cold", "6.18") == {"FPB_MERGE_YOUNG_DIRTY"}
    lazy = [resolve_caller("lazyfree", k).rule.unmap for k in ("6.15", "6.15.6", "6.15.7", "7.0")]
    assert lazy == ["all_or_nothing", "all_or_nothing", "clamped", "clamped"]
    assert resolve_caller("mremap", "6.17").rule.spread == ("write",)
    assert resolve_caller("mremap", "6.18").rule.spread == ()


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda s: pb.scan(s, caller="nope"), "caller: unknown caller 'nope'"),
        (lambda s: pb.scan(s, caller="lazyfree"), "reverse-map caller; run it with ptebatch.unmap"),
        (lambda s: pb.unmap(s, caller="zap"), "page-table walk caller; run it with ptebatch.scan"),
        (lambda s: pb.scan(s, caller="zap", move_by=4096), "move_by: only a caller that moves"),
        (
            lambda s: pb.scan(s, caller="mremap", kernel="6.18", move_by=100),
            "move_by: must be a multiple",
        ),
        (lambda s: pb.naive.scan(s, caller="zap", kernel="6.16", move_by=4096), "move_by: only"),
    ],
)
def test_bad_caller_arguments_are_refused_with_the_field_named(call, match):
    with pytest.raises(ValueError, match=match):
        call(pb.thread_layout())


def test_a_caller_that_does_not_batch_yet_takes_one_pte_at_a_time():
    space = pb.generate(500, seed=2, sizes="mthp16", moved=0)
    r = pb.scan(space, caller="mprotect", kernel="6.16")
    large = r.reason_names() != "order0"
    assert large.any() and (r.nr[large] == 1).all() and set(r.reason_names()[large]) == {"single"}
    assert (pb.scan(space, caller="mprotect", kernel="6.17").nr > 1).any()


def contpte_folio_space(n=32):
    va = BASE + 4096 * np.arange(n, dtype=np.uint64)
    ptes = ARM64.make_pte(PFN + np.arange(n, dtype=np.uint64), write=True, extra=ARM64.cont)
    return pb.AddressSpace.from_entries(
        va,
        ptes,
        [BASE],
        [BASE + n * 4096],
        [PFN],
        [n],
        [FOLIO_ANON | FOLIO_SWAPBACKED],
        arch="arm64",
    )


@pytest.mark.parametrize("impl", [pb, pb.naive], ids=["jit", "naive"])
def test_mremap_max_nr_stops_at_the_destinations_pmd_boundary(impl):
    space = contpte_folio_space()
    # the destination crosses a 2 MiB boundary 8 pages into the folio
    move_by = 2 * 1024 * 1024 - 8 * 4096
    r = impl.scan(space, caller="mremap", kernel="6.18", move_by=move_by)
    # from entry 0 the hint (16) is clipped to max_nr 8; from entry 8 the hint is 8, then a
    # whole block: 24 to the folio's end
    assert r.nr.tolist() == [8, 24]
    assert r.reason_names().tolist() == ["dst_pmd_end", "folio_end"]
    same = impl.scan(space, caller="mremap", kernel="6.18", move_by=-2 * 1024 * 1024)
    assert same.nr.tolist() == [32]  # a 2 MiB-aligned move adds no boundary


def test_callers_cli_lists_every_preset_with_its_source(capsys):
    assert main(["callers"]) == 0
    out = capsys.readouterr().out
    for c in CALLERS.values():
        assert c.name in out and c.source in out
    assert main(["callers", "--kernel", "6.17", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["caller"] for r in rows] == list(CALLERS)
    assert rows == callers_table("6.17")
    assert {r["kernel"] for r in rows} == {"6.17"}


def test_scan_cli_takes_a_caller(tmp_path, capsys):
    path = str(tmp_path / "s.npz")
    pb.thread_layout(arch="arm64").save(path)
    assert main(["scan", path, "--caller", "fork-private", "--kernel", "6.18", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["caller"] == "fork-private" and s["flags"] == ["FPB_RESPECT_DIRTY", "FPB_MERGE_WRITE"]
    assert main(["unmap", path, "--caller", "lazyfree", "--kernel", "6.15", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"]["table_overrun"] == 1
    restore = str(tmp_path / "r.npz")
    pb.workloads.layouts.lazyfree_restore_layout("arm64").save(restore)
    for extra, spread in (([], 1), (["--no-detectors"], 0)):
        assert main(["unmap", restore, "--kernel", "6.16", "--json", *extra]) == 0
        assert json.loads(capsys.readouterr().out)["findings"]["spread"] == spread
    assert (
        main(["scan", path, "--caller", "mremap", "--kernel", "6.18", "--move-by", "0x1ff000"]) == 0
    )
    capsys.readouterr()
    assert main(["scan", path, "--caller", "zap", "--move-by", "0x1000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ptebatch: error: move_by:")
    with pytest.raises(SystemExit) as e:
        main(["scan", path, "--caller", "lazyfree"])
    assert e.value.code == 2
    assert parse_version("6.15.7") == (6, 15, 7)


@pytest.mark.parametrize("impl", [pb, pb.naive], ids=["jit", "naive"])
def test_7_0_reclaim_does_not_batch_in_a_uffd_wp_vma(impl):
    space = pb.thread_layout(folio_nr=16, before_boundary=4)  # 4 + 12 pages, one VMA
    registered = pb.AddressSpace(
        space.ptes,
        space.table_va,
        space.vma_start,
        space.vma_end,
        space.folio_pfn,
        space.folio_nr,
        space.folio_flags,
        vma_flags=np.array([1], dtype=np.uint8),
    )
    for kernel in ("6.16", "6.19"):  # the flag changes nothing before 7.0
        assert impl.unmap(registered, kernel=kernel).nr.tolist() == [4, 12]
    assert impl.unmap(space, kernel="7.0").nr.tolist() == [4, 12]
    r = impl.unmap(registered, kernel="7.0")
    assert r.nr.tolist() == [1] * 16 and set(r.reason_names()) == {"single"}
    assert resolve_caller("lazyfree", "7.0").describe()["skip_uffd_wp_vmas"] is True


def test_generated_uffd_wp_ptes_sit_in_registered_vmas():
    space = pb.generate(3000, seed=3, uffd_wp=0.1)
    flat = space.ptes.reshape(-1)
    hit = np.flatnonzero(flat & np.uint64(pb.X86_64.uffd_wp))
    va = space.table_va[hit // 512] + (hit % 512).astype(np.uint64) * np.uint64(4096)
    v = np.searchsorted(space.vma_start, va, side="right") - 1
    assert hit.size and (space.vma_flags[v] == 1).all()
    assert 0 < space.info()["uffd_wp_vmas"] < space.n_vmas
    assert not pb.generate(3000, seed=3).vma_flags.any()


@pytest.mark.parametrize("impl", [pb, pb.naive], ids=["jit", "naive"])
def test_mremap_moves_a_whole_aligned_table_by_its_pmd(impl):
    # one VMA over a whole table, a 512-page folio folded into contpte blocks
    va = BASE + 4096 * np.arange(512, dtype=np.uint64)
    ptes = ARM64.make_pte(PFN + np.arange(512, dtype=np.uint64), write=True, extra=ARM64.cont)
    space = pb.AddressSpace.from_entries(
        va,
        ptes,
        [BASE],
        [BASE + 512 * 4096],
        [PFN],
        [512],
        [FOLIO_ANON | FOLIO_SWAPBACKED],
        arch="arm64",
    )
    for move_by in (0, 4 * 1024 * 1024, -2 * 1024 * 1024):  # aligned: move_pgt_entry
        r = impl.scan(space, caller="mremap", kernel="6.18", move_by=move_by)
        assert (r.batches, r.tables_moved, r.present_ptes) == (0, 1, 512)
    r = impl.scan(space, caller="mremap", kernel="6.18", move_by=0x10000)  # 64 KiB: PTE by PTE
    assert r.tables_moved == 0 and r.nr.tolist() == [496, 16]
    assert r.reason_names().tolist() == ["dst_pmd_end", "folio_end"]
    assert impl.scan(space, caller="zap", kernel="6.18").tables_moved == 0


def test_mempolicy_and_mlock_notes_name_their_release():
    # issue 12, finding 8: the mempolicy row is mainline 4a34c584d8cd, first released in
    # 6.16; mlock's batching came in the 6.11 merge
    mempolicy, mlock = pb.CALLERS["mempolicy"].rules[0], pb.CALLERS["mlock"].rules[0]
    assert (mempolicy.since, mlock.since) == ("6.16", "6.11")
    assert "4a34c584d8cd" in mempolicy.note and "first released in 6.16" in mempolicy.note
    assert "merged for 6.11" in mlock.note
    assert not any("release tag not verified" in r.note for r in (mempolicy, mlock))
