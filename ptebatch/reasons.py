"""Why a batch stopped: codes shared by the naive reference and the compiled walks.

The reason describes what limited the batch, the same way in every
generation: a batch that reached its folio's last page is ``folio_end`` even
when the caller's limit fell on the same entry; otherwise a batch that used all
of ``max_nr`` is cut by the caller's clamp (``pmd_end``, ``vma_end``,
``dst_pmd_end`` for mremap's destination, or ``max_nr`` for a direct call);
otherwise the first entry that did not match says why (``not_present``,
``pfn_gap``, ``bit_mismatch``).
"""

FOLIO_END = 0  # the batch reached the last page of its folio
PMD_END = 1  # max_nr, cut at the next 2 MiB boundary, was used up
VMA_END = 2  # max_nr, cut at the VMA end, was used up
NOT_PRESENT = 3  # the next entry was not present (or read past the table as 0)
PFN_GAP = 4  # the next entry was present but maps another PFN
BIT_MISMATCH = 5  # the next entry maps the next PFN but differs in a respected bit
ORDER0 = 6  # the PTE maps an order-0 folio: a batch of 1, no call
MAX_NR = 7  # a direct folio_pte_batch call used up its max_nr
SINGLE = 8  # the caller took one PTE of a large folio without batching (it does not
# batch in that release, or only when pte_batch_hint > 1, or lazyfree rules)
DST_PMD_END = 9  # mremap: max_nr, cut at the destination's next 2 MiB boundary, was used up

NAMES = (
    "folio_end",
    "pmd_end",
    "vma_end",
    "not_present",
    "pfn_gap",
    "bit_mismatch",
    "order0",
    "max_nr",
    "single",
    "dst_pmd_end",
)

# Detector bits of a batch ("findings"), one per known bug class.
OVER_TABLE = 1  # the scan read an entry past entry 511 of its table (CVE-2025-38447)
OVER_VMA = 2  # the scan read an entry at or past the VMA's end
PAST_FOLIO = 4  # the batch covers a page past its folio's last page (the XEN PV overrun)
SPREAD = 8  # a write-back caller would stamp one value on entries that differ in a
# bit it ignored (the 6.17 mremap and 6.15-6.19 lazyfree restore bugs)
UFFD_WP = 16  # the batch is not uniform in uffd-wp

FINDINGS = (
    ("table_overrun", OVER_TABLE),
    ("vma_overrun", OVER_VMA),
    ("past_folio", PAST_FOLIO),
    ("spread", SPREAD),
    ("uffd_wp", UFFD_WP),
)
