"""The regression corpus: each real bug trips its detector under every buggy release
and under no fixed one, on every architecture where it applies."""

import os
import re

import numpy as np
import pytest

import ptebatch as pb
from ptebatch.cli import main
from ptebatch.workloads import layouts
from ptebatch.workloads.corpus import CORPUS, NOT_EXPRESSED, check

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, os.pardir, "data")
MODEL_MD = os.path.join(HERE, os.pardir, "docs", "model.md")
IDS = [b.name for b in CORPUS]


@pytest.mark.parametrize("bug", CORPUS, ids=IDS)
def test_committed_snapshot_is_what_the_builder_makes(bug):
    assert bug.layout(DATA) == bug.layout()
    assert bug.layout(DATA).arch == bug.arch


@pytest.mark.parametrize("impl", [pb.engine, pb.naive], ids=["jit", "naive"])
@pytest.mark.parametrize("bug", CORPUS, ids=IDS)
def test_buggy_releases_trip_the_detector_and_fixed_ones_do_not(bug, impl):
    r = check(bug, data_dir=DATA, impl=impl)
    assert all(n > 0 for n in r["buggy"].values()), r
    assert not any(r["fixed"].values()), r
    assert r["ok"]


@pytest.mark.parametrize("bug", CORPUS, ids=IDS)
def test_jit_equals_naive_on_every_corpus_release(bug):
    space = bug.layout()
    walk = pb.CALLERS[bug.caller].walk
    for k in bug.buggy + bug.fixed:
        a = getattr(pb, walk)(space, caller=bug.caller, kernel=k, **bug.walk_args)
        b = getattr(pb.naive, walk)(space, caller=bug.caller, kernel=k, **bug.walk_args)
        for f in ("va", "nr", "reason", "findings"):
            np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


# The batches each bug's description in docs/model.md section 7 implies.
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_bug1_batches(arch):
    space = layouts.thread_layout(arch=arch)
    # 6.15: the all-or-nothing attempt from entry 511 fails (it read past the table),
    # so all 16 PTEs go one by one; the fix batches 1 (the table's end) then 15
    assert pb.unmap(space, kernel="6.15").nr.tolist() == [1] * 16
    assert pb.unmap(space, kernel="6.16").nr.tolist() == [1, 15]


def test_bug4_batches_and_why_x86_is_immune():
    space = layouts.mremap_write_layout("arm64")
    buggy = pb.scan(space, caller="mremap", kernel="6.17")
    fixed = pb.scan(space, caller="mremap", kernel="6.18")
    assert buggy.nr.tolist() == [32] and buggy.flagged("spread").tolist() == [0]
    assert fixed.nr.tolist() == [16, 16] and fixed.reason_names().tolist() == [
        "bit_mismatch",
        "folio_end",
    ]
    # mremap batches only when pte_batch_hint > 1: never on x86-64
    x86 = layouts.mremap_write_layout("x86_64")
    for k in ("6.17", "6.18"):
        r = pb.scan(x86, caller="mremap", kernel=k)
        assert r.nr.tolist() == [1] * 32 and set(r.reason_names()) == {"single"}
        assert r.finding_counts["spread"] == 0


@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
def test_bug5_batches(arch):
    space = layouts.lazyfree_restore_layout(arch)
    assert pb.unmap(space, kernel="6.18").nr.tolist() == [16]
    assert pb.unmap(space, kernel="7.0").nr.tolist() == [8, 8]


SECTION_7 = set(range(1, 9))  # docs/model.md section 7 lists bugs 1 to 8


def test_every_section_7_bug_is_in_the_corpus_or_explained():
    with open(MODEL_MD) as fh:
        text = fh.read()
    section = text[text.index("## 7.") : text.index("## 8.")]
    assert {int(n) for n in re.findall(r"^\| (\d+) \|", section, flags=re.M)} == SECTION_7
    assert SECTION_7 == {b.number for b in CORPUS} | set(NOT_EXPRESSED)
    assert not {b.number for b in CORPUS} & set(NOT_EXPRESSED)
    with open(os.path.join(DATA, "README.md")) as fh:
        readme = fh.read()
    for n in NOT_EXPRESSED:
        assert f"#{n}" in readme, f"data/README.md does not explain bug #{n}"
    for b in CORPUS:
        assert b.file in readme


def test_cli_corpus_passes_and_fails_on_a_regression(capsys, monkeypatch):
    assert main(["corpus", "--data", DATA]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == len(CORPUS) and "REGRESSION" not in out
    # a "fixed" release that still has the bug must fail the run
    import ptebatch.workloads.corpus as C

    broken = C.CORPUS[0].__class__(**{**C.CORPUS[0].__dict__, "fixed": ("6.15",)})
    monkeypatch.setattr(C, "CORPUS", (broken,) + C.CORPUS[1:])
    assert main(["corpus"]) == 1
    assert "REGRESSION" in capsys.readouterr().out
