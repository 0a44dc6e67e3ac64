"""Compiled code is cached by default, and never crosses a NUMBA_BOUNDSCHECK switch or an edit.

Each test runs fresh processes with an empty ``NUMBA_CACHE_DIR`` of its own,
so it means the same in every CI pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import ptebatch as pb

pytestmark = pytest.mark.slow  # PTEBATCH_SLOW=1 runs it (CI does)

PACKAGE = os.path.dirname(os.path.abspath(pb.__file__))

# one small compiled entry point; prints the cache statistics of its dispatcher
SNIPPET = """
import json, numpy as np, ptebatch as pb
from ptebatch._jit import folio_pte_batch as F, options
arr = pb.X86_64.make_pte(0x1000 + np.arange(4, dtype=np.uint64))
assert pb.folio_pte_batch(arr, 0, 4, 0x1000, 4).nr == 4
d = F.folio_pte_batch_one
print(json.dumps({"cache": options.CACHE, "hits": sum(d.stats.cache_hits.values()),
                  "misses": sum(d.stats.cache_misses.values())}))
"""


def _run(cache_dir, *, pythonpath=None, **env):
    e = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NUMBA_BOUNDSCHECK", "NUMBA_DISABLE_JIT", "PTEBATCH_NUMBA_CACHE")
    }
    e.update(NUMBA_CACHE_DIR=str(cache_dir), **env)
    if pythonpath:
        e["PYTHONPATH"] = str(pythonpath)
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET],
        env=e,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        cwd=str(cache_dir),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _files(folder) -> list[str]:
    return [f for _, _, fs in os.walk(folder) for f in fs]


def test_a_second_process_loads_the_compiled_code(tmp_path):
    first = _run(tmp_path)
    assert first["cache"] and first["misses"] == 1 and first["hits"] == 0
    assert any(f.endswith(".nbi") for f in _files(tmp_path))
    second = _run(tmp_path)
    assert second["hits"] == 1 and second["misses"] == 0


def test_a_bounds_checked_run_neither_reads_nor_writes_the_cache(tmp_path):
    _run(tmp_path)  # a normal run fills the cache
    before = sorted(_files(tmp_path))
    checked = _run(tmp_path, NUMBA_BOUNDSCHECK="1")
    assert not checked["cache"] and checked["hits"] == 0
    assert sorted(_files(tmp_path)) == before


def test_caching_can_be_switched_off(tmp_path):
    off = _run(tmp_path, PTEBATCH_NUMBA_CACHE="0")
    assert not off["cache"] and not _files(tmp_path)


def test_an_edit_to_a_source_of_compiled_code_recompiles(tmp_path):
    # Numba checks only the loaded function's own file; folio_pte_batch_one inlines code from
    # other files, so the stamp covers every file compiled code is built from.  Edit one it
    # does not live in.
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "ptebatch", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    cache.mkdir()
    assert _run(cache, pythonpath=copy)["misses"] == 1
    assert _run(cache, pythonpath=copy)["hits"] == 1
    with open(copy / "ptebatch" / "_jit" / "pte.py", "a") as fh:
        fh.write("\n# an edit\n")
    again = _run(cache, pythonpath=copy)
    assert again["misses"] == 1 and again["hits"] == 0
