"""ptebatch: Linux's PTE batching rules (folio_pte_batch) over NumPy page tables.

Public API
----------
AddressSpace, load
    The page-table model and its ``.npz`` snapshot.
folio_pte_batch, scan, unmap
    One batch; the zap walk of every VMA; reclaim's per-folio unmap.  JIT
    compiled (Numba); :mod:`ptebatch.naive` has plain-Python twins.
resolve_kernel, KernelProfile, GENERATIONS
    Kernel releases and ``folio_pte_batch`` generations.
X86_64, ARM64, get_arch
    PTE encodings.
CALLERS, resolve_caller
    Every kernel caller of folio_pte_batch as a preset per release.
"""

from . import naive

from . import reasons
from .arch import ARCHES, ARM64, X86_64, Arch, get_arch
from . import engine
from .callers import CALLERS, resolve_caller
from .engine import folio_pte_batch, scan, unmap
from .workloads.generator import generate
from .workloads.layouts import thread_layout
from .results import BatchResult, ScanResult, UnmapResult
from .space import AddressSpace, load
from .releases import GENERATIONS, Generation, KernelProfile, resolve_kernel
# Functions named like their modules: import the modules first, then bind the
# functions (ptebatch.capture / ptebatch.experiment are the functions).
from .live.capture import (Capture, CaptureError, PartialCaptureError, ProcessExitedError, capture,
                      capture_detailed)
from .workloads.experiment import experiment
from .live.reproduce import reproduce_thread

__version__ = "0.1.0"

__all__ = [
    "AddressSpace", "load", "folio_pte_batch", "scan", "unmap", "CALLERS", "resolve_caller", "BatchResult", "ScanResult",
    "UnmapResult", "resolve_kernel", "KernelProfile", "Generation", "GENERATIONS", "Arch",
    "X86_64", "ARM64", "ARCHES", "get_arch", "naive", "reasons", "thread_layout", "generate",
    "capture", "capture_detailed", "Capture", "CaptureError", "PartialCaptureError",
    "ProcessExitedError", "experiment", "reproduce_thread", "__version__",
]
