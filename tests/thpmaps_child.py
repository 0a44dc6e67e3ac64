"""A child process for tests/test_thpmaps.py: maps known THP layouts, prints them, waits.

Run as ``python thpmaps_child.py DIR`` (DIR: where to create its files).  It
prints one JSON line ``{name: [start, end], ...}`` (each range is exactly one
VMA, fenced by PROT_NONE pages so that no neighbour merges with it), then
waits until stdin closes.  The 64 kB mTHP size must be enabled (madvise or
always) while it starts; PMD THPs must be enabled for madvise.
"""

import ctypes
import ctypes.util
import json
import os
import sys

K, M, PAGE = 1 << 10, 1 << 20, 4096
PROT_NONE, PROT_READ, PROT_RW = 0, 1, 3
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANONYMOUS, MAP_NORESERVE = 1, 2, 0x10, 0x20, 0x4000
MADV_HUGEPAGE = 14
MREMAP_MAYMOVE, MREMAP_FIXED = 1, 2

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.mmap.restype = ctypes.c_void_p
VOIDP, SIZE, INT = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
libc.mmap.argtypes = [VOIDP, SIZE, INT, INT, INT, ctypes.c_long]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [VOIDP, SIZE, SIZE, INT, VOIDP]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def check(ok, what):
    if not ok:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def reserve(size, align):
    """A PROT_NONE reservation; returns an ``align``-aligned address with ``size`` bytes
    and at least one PROT_NONE page on each side."""
    total = size + align + 2 * PAGE
    base = libc.mmap(None, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    check(base not in (None, ctypes.c_void_p(-1).value), "mmap reservation")
    return (base + PAGE + align - 1) & ~(align - 1)


def anon(size, align, huge=True, fill=True):
    """An anonymous read-write VMA of exactly ``size`` bytes at an ``align``-aligned address."""
    a = reserve(size, align)
    got = libc.mmap(a, size, PROT_RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
    check(got == a, "mmap anon")
    if huge:
        check(libc.madvise(a, size, MADV_HUGEPAGE) == 0, "madvise(MADV_HUGEPAGE)")
    if fill:
        ctypes.memset(a, 0x5A, size)  # not zero: the underused-THP shrinker splits zero THPs
    return a


def file_map(path, size, align):
    """``size`` bytes written to ``path`` in one write, mapped shared read-only and read."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, b"\x5a" * size)
    a = reserve(size, align)
    got = libc.mmap(a, size, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0)
    check(got == a, f"mmap {path}")
    os.close(fd)
    for off in range(0, size, PAGE):
        ctypes.string_at(a + off, 1)
    return a


def main(folder):
    out = {}
    # A: one PMD-mapped 2 MiB THP
    a = anon(2 * M, 2 * M)
    out["pmd"] = [a, a + 2 * M]
    # B: eight 64 kB mTHPs, aligned (the VMA is 512 kB: no PMD fits)
    b = anon(512 * K, 64 * K)
    out["mthp_aligned"] = [b, b + 512 * K]
    # C: eight 64 kB mTHPs; the middle four are moved by mremap to 4 kB past a 64 kB boundary,
    # inside one 2 MiB table
    c = anon(512 * K, 64 * K)
    dst = reserve(2 * M, 2 * M) + 64 * K + PAGE
    moved = libc.mremap(c + 128 * K, 256 * K, 256 * K, MREMAP_MAYMOVE | MREMAP_FIXED, dst)
    check(moved == dst, "mremap")
    # refill the hole with PROT_NONE so that nothing merges with the two halves
    libc.mmap(c + 128 * K, 256 * K, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
    out["mthp_src_lo"] = [c, c + 128 * K]
    out["mthp_src_hi"] = [c + 384 * K, c + 512 * K]
    out["mthp_unaligned"] = [dst, dst + 256 * K]
    # D: four 64 kB mTHPs, then pages 8..23 unmapped (half of folio 0, half of folio 1)
    d = anon(256 * K, 64 * K)
    check(libc.munmap(d + 32 * K, 64 * K) == 0, "munmap")
    libc.mmap(d + 32 * K, 64 * K, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0)
    out["partial_lo"] = [d, d + 32 * K]
    out["partial_hi"] = [d + 96 * K, d + 256 * K]
    # E: file pages: a 2 MiB file folio mapped by a PMD, a 64 kB file folio, and 16 kB of
    # order-0 shmem pages (tmpfs in /dev/shm, shmem THP off)
    out["file_pmd"] = [file_map(os.path.join(folder, "f2m"), 2 * M, 2 * M)]
    out["file_pmd"].append(out["file_pmd"][0] + 2 * M)
    f64 = file_map(os.path.join(folder, "f64k"), 64 * K, 64 * K)
    out["file_64k"] = [f64, f64 + 64 * K]
    shm = os.path.join("/dev/shm", f"ptebatch-thpmaps-{os.getpid()}")
    try:
        s = file_map(shm, 16 * K, 64 * K)
    finally:
        os.unlink(shm)
    out["shmem_small"] = [s, s + 16 * K]
    print(json.dumps(out), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1])
