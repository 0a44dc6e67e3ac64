"""The layouts the properties draw can tell implementations apart.

A property over layouts that never overrun, never hit a VMA end or never
differ between generations would pass against a broken kernel.  Each test
asks Hypothesis to *find* a layout with the feature.
"""

import numpy as np
import pytest
from hypothesis import Phase, find, settings

import ptebatch as pb
from strategies import batch_calls, spaces

# No shrinking: finding one example is the point, not a minimal one.
SEARCH = settings(max_examples=2000, database=None, derandomize=True, deadline=None,
                  phases=[Phase.generate])


@pytest.mark.parametrize("reason", ["folio_end", "pmd_end", "vma_end", "not_present", "pfn_gap",
                                    "bit_mismatch", "order0"])
def test_spaces_reach_every_scan_reason(reason):
    find(spaces(), lambda s: reason in pb.scan(s, kernel="6.16", parallel=False).reason_names(),
         settings=SEARCH)


@pytest.mark.parametrize("kwargs,attr", [
    (dict(clamp="folio", oob="adjacent"), "table_overruns"),
    (dict(clamp="folio", oob="none"), "vma_overruns"),
])
def test_spaces_reach_overruns(kwargs, attr):
    find(spaces(), lambda s: getattr(pb.scan(s, kernel="6.14", parallel=False, **kwargs), attr) > 0,
         settings=SEARCH)


def test_spaces_reach_a_6_15_unmap_overrun():
    find(spaces(), lambda s: pb.unmap(s, kernel="6.15", parallel=False).table_overruns > 0,
         settings=SEARCH)


def test_spaces_tell_generation_1_from_1b():
    def differ(s):
        a = pb.scan(s, kernel="6.14", clamp="folio", oob="adjacent", parallel=False)
        b = pb.scan(s, kernel="6.16", clamp="folio", oob="adjacent", parallel=False)
        return not np.array_equal(a.overrun, b.overrun) or not np.array_equal(a.nr, b.nr)
    find(spaces(), differ, settings=SEARCH)


@pytest.mark.parametrize("reason", ["folio_end", "max_nr", "not_present", "pfn_gap", "bit_mismatch"])
def test_batch_calls_reach_every_reason(reason):
    find(batch_calls(), lambda c: pb.folio_pte_batch(*c[:5], flags=c[5], kernel=c[6]).reason == reason,
         settings=SEARCH)


def test_batch_calls_reach_reads_past_the_end():
    find(batch_calls(), lambda c: pb.folio_pte_batch(*c[:5], flags=c[5], kernel=c[6]).read_past_end,
         settings=SEARCH)
