"""The house rules of the package layout, checked on the source.

The import graph is read statically (``ast``), so a rule holds for every
module whether or not a test happens to import it.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys

import pytest

import ptebatch as pb

ROOT = os.path.dirname(os.path.abspath(pb.__file__))
README = os.path.join(ROOT, os.pardir, "README.md")


def _modules() -> dict[str, str]:
    """Dotted module name -> path, for every module of the package."""
    out = {}
    for folder, _dirs, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _imports(name: str, *, top_level_only: bool) -> set[str]:
    """Modules ``name`` imports (package-internal ones resolved to module names)."""
    path = MODULES[name]
    tree = ast.parse(open(path).read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            subs = {f"{mod}.{a.name}" for a in node.names} & MODULES.keys()
            # "from . import engine" imports a module; "from .arch import X" imports .arch
            out.update(subs if subs and not node.module else subs | {mod})
    return out


def _closure(name: str) -> set[str]:
    """Everything ``name`` loads at import time through the package's own modules."""
    seen, todo = set(), [name]
    while todo:
        m = todo.pop()
        for dep in _imports(m, top_level_only=True):
            if dep not in seen:
                seen.add(dep)
                if dep in MODULES and dep != "ptebatch":
                    todo.append(dep)
    return seen


def test_the_package_has_the_modules_the_readme_names():
    for name in (
        "ptebatch.arch",
        "ptebatch.releases",
        "ptebatch.callers",
        "ptebatch.engine",
        "ptebatch.naive",
        "ptebatch.checks",
        "ptebatch._jit.folio_pte_batch",
        "ptebatch._jit.pte",
        "ptebatch._jit.options",
        "ptebatch.cli",
    ):
        assert name in MODULES, name


def test_no_library_module_imports_the_cli():
    # ptebatch.__main__ is the CLI's entry point (python -m ptebatch)
    offenders = {
        m
        for m in MODULES
        if not m.startswith(("ptebatch.cli", "ptebatch.__main__"))
        and any(
            d == "ptebatch.cli" or d.startswith("ptebatch.cli.")
            for d in _imports(m, top_level_only=False)
        )
    }
    assert not offenders


def test_the_import_graph_has_no_cycle():
    graph = {m: {d for d in _imports(m, top_level_only=True) if d in MODULES} for m in MODULES}
    # a module's package is imported before it: that edge is not a cycle of ours
    for m in graph:
        graph[m].discard("ptebatch")
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in graph[m]:
            if state.get(d) == 1:
                raise AssertionError(" -> ".join(stack + [m, d]))
            if d not in state:
                visit(d, stack + [m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


@pytest.mark.parametrize("name", ["ptebatch.naive", "ptebatch.checks"])
def test_the_reference_imports_nothing_compiled(name):
    loaded = _closure(name)
    compiled = {
        m
        for m in loaded
        if m == "numba"
        or m.startswith("numba.")
        or m.startswith("ptebatch._jit")
        or m in ("ptebatch.engine", "ptebatch.planning")
    }
    assert not compiled, f"{name} loads {sorted(compiled)}"


def test_only_the_options_module_and_the_vector_ir_import_numba():
    # simd writes LLVM IR, which needs Numba's types and code generation; options sets options
    users = {
        m
        for m in MODULES
        for d in _imports(m, top_level_only=False)
        if d == "numba" or d.startswith("numba.")
    }
    assert users == {"ptebatch._jit.options", "ptebatch._jit.simd"}


def test_no_library_module_imports_ctypes_at_import_time():
    users = {
        m
        for m in MODULES
        if not m.startswith("ptebatch.cli") and "ctypes" in _imports(m, top_level_only=True)
    }
    assert not users


def test_import_ptebatch_loads_neither_argparse_nor_the_cli():
    code = (
        "import sys, ptebatch\n"
        "print(sorted(m for m in sys.modules if m == 'argparse' or m.startswith('ptebatch.cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_name_in_the_readme_api_table_works():
    with open(README) as fh:
        text = fh.read()
    section = text[text.index("## Python API") :]
    section = section[: section.index("\n### ")]
    names = []
    for row in re.findall(r"^\| (.+?) \|", section, flags=re.M):
        for code in re.findall(r"`([^`]+)`", row):
            m = re.match(r"[A-Za-z_][\w.]*", code)
            if m:
                names.append(m.group(0).rstrip("."))
    assert len(names) >= 15
    for dotted in names:
        obj = pb
        for part in dotted.split("."):
            if part == "*":
                continue
            obj = getattr(obj, part)  # AttributeError names what the README promises wrongly


def test_every_package_folder_is_a_regular_package():
    # setuptools' find ships only folders with an __init__.py: a namespace folder would
    # work in a checkout and be missing from an installed wheel
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        if any(f.endswith(".py") for f in files):
            assert "__init__.py" in files, folder


def test_the_cache_stamp_covers_every_module_compiled_code_is_built_from():
    from ptebatch._jit.options import COMPILED_FROM

    jit = [m for m in MODULES if m.startswith("ptebatch._jit")]
    used = set().union(*(_closure(m) for m in jit)) & MODULES.keys()
    covered = {m for m in used if m.startswith("ptebatch._jit")}
    covered |= {f"ptebatch.{f[:-3]}" for f in COMPILED_FROM if f.endswith(".py")}
    assert used - {"ptebatch"} <= covered, sorted(used - covered)


def test_reading_a_snapshot_s_metadata_does_not_import_numba(tmp_path):
    # Numba's import costs about 0.3 s: `ptebatch info` and `--help` must not pay it (issue 11
    # target: info under 0.5 s).  The compiled modules load on first use (_jit.compiled).
    path = tmp_path / "t.npz"
    code = (
        "import sys, ptebatch\n"
        f"ptebatch.thread_layout().save({str(path)!r})\n"
        "from ptebatch.cli import main\n"
        f"rc = main(['info', {str(path)!r}])\n"
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] in ("0 []", "None []")


def test_a_walk_loads_the_compiled_modules_on_first_use():
    code = (
        "import sys, ptebatch\n"
        "print('numba' in sys.modules)\n"
        "r = ptebatch.scan(ptebatch.thread_layout(), kernel='6.16', rows=False)\n"
        "print('numba' in sys.modules, r.batches)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = pb.scan(pb.thread_layout(), kernel="6.16", rows=False).batches
    assert out.stdout.split() == ["False", "True", str(expected)]
