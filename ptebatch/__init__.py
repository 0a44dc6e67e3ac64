"""ptebatch: Linux's PTE batching rules (folio_pte_batch) over NumPy page tables.

Public API
----------
AddressSpace, load, SnapshotError
    The page-table model, its ``.npz`` snapshot, and the error a bad snapshot raises.
folio_pte_batch, scan, unmap
    One batch; a page-table walker's walk of every VMA; reclaim's per-folio
    unmap.  JIT compiled (Numba); :mod:`ptebatch.naive` has plain-Python twins.
BatchResult, ScanResult, UnmapResult
    What they return.
resolve_kernel, KernelProfile, Generation, GENERATIONS
    Kernel releases and ``folio_pte_batch`` generations.
X86_64, ARM64, ARCHES, Arch, get_arch
    PTE encodings.
CALLERS, resolve_caller, Walk, UnmapMode
    Every kernel caller of folio_pte_batch as a preset per release.
ShardedSpace, shards
    A space stored as a directory of snapshots cut on table boundaries; the walks take
    it and give the whole space's result (shard, unshard, map_shards in ``shards``).
generate, thread_layout, layouts, experiment, corpus, diff
    Workloads: synthetic spaces, the real-bug layouts, sweeps, the regression corpus,
    and two settings of a walk compared address by address.
capture, capture_detailed, Capture, CaptureError, PartialCaptureError, ProcessExitedError,
reproduce_thread
    Live page tables from /proc.
thpmaps, ThpReport
    The kernel's tools/mm/thpmaps counters for live processes, with batching on top.

Where things live: the model (``arch``, ``space``, ``releases``, ``callers``,
``reasons``, ``results``); the JIT side (``engine`` with ``checks`` and
``planning``, compiled code in ``_jit``); the references (``naive``,
``vectorized``); ``workloads``; ``live``; ``bench``; and ``cli``, which imports
the library and is never imported by it.
"""

from . import engine, naive, reasons, shards
from .arch import ARCHES, ARM64, X86_64, Arch, get_arch
from .callers import CALLERS, UnmapMode, Walk, resolve_caller
from .engine import folio_pte_batch, scan, unmap
from .live.capture import (
    Capture,
    CaptureError,
    PartialCaptureError,
    ProcessExitedError,
    capture,
    capture_detailed,
)
from .live.reproduce import reproduce_thread
from .live.thpmaps import ThpReport, thpmaps
from .releases import GENERATIONS, Generation, KernelProfile, resolve_kernel
from .results import BatchResult, ScanResult, UnmapResult
from .shards import ShardedSpace
from .space import AddressSpace, SnapshotError, load
from .workloads import corpus, layouts
from .workloads.diff import diff
from .workloads.experiment import experiment
from .workloads.generator import generate
from .workloads.layouts import thread_layout

__version__ = "0.1.0"

__all__ = [
    "AddressSpace",
    "load",
    "SnapshotError",
    "folio_pte_batch",
    "scan",
    "unmap",
    "BatchResult",
    "ScanResult",
    "UnmapResult",
    "resolve_kernel",
    "KernelProfile",
    "Generation",
    "GENERATIONS",
    "Arch",
    "X86_64",
    "ARM64",
    "ARCHES",
    "get_arch",
    "CALLERS",
    "resolve_caller",
    "Walk",
    "UnmapMode",
    "engine",
    "naive",
    "reasons",
    "shards",
    "ShardedSpace",
    "generate",
    "thread_layout",
    "layouts",
    "experiment",
    "corpus",
    "diff",
    "capture",
    "capture_detailed",
    "Capture",
    "CaptureError",
    "PartialCaptureError",
    "ProcessExitedError",
    "reproduce_thread",
    "thpmaps",
    "ThpReport",
    "__version__",
]
