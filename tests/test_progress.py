"""Progress bars: on stderr only, only on a terminal unless asked, and results never change."""

from __future__ import annotations

import io

import numpy as np

import ptebatch as pb
from ptebatch.progress import Progress, as_hook


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_bars_only_on_a_terminal_unless_asked():
    tty, pipe = Tty(), io.StringIO()
    Progress(stream=tty, delay=0)("generate", 3, 10, "ptes")
    Progress(stream=pipe, delay=0)("generate", 3, 10, "ptes")
    Progress(True, stream=pipe, delay=0)("run", 1, 4, "zap 6.16")
    Progress(False, stream=tty, delay=0)("run", 1, 4)
    assert "ptebatch generate" in tty.getvalue() and "30%" in tty.getvalue()
    assert "ptebatch run" in pipe.getvalue() and "generate" not in pipe.getvalue()


def test_a_bar_closes_when_its_task_is_done():
    err = Tty()
    p = Progress(stream=err, delay=0)
    p("scan", 5, 10)
    assert "scan" in p._bars
    p("scan", 10, 10)
    assert not p._bars


def test_old_one_argument_hooks_still_hear_the_step():
    heard = []
    hook = as_hook(heard.append)
    hook("generate", 1, 10, "ptes")
    hook("generate", 2, 10)
    assert heard == ["ptes", "generate"]


def test_generate_reports_every_step_and_gives_the_same_space():
    calls = []
    a = pb.generate(2000, seed=3, moved=0.2, progress=lambda *c: calls.append(c))
    assert a == pb.generate(2000, seed=3, moved=0.2)
    assert calls[-1][1] == calls[-1][2] and [c[1] for c in calls] == sorted(c[1] for c in calls)


def test_a_large_walk_reports_progress_and_the_same_result(monkeypatch):
    from ptebatch import engine

    monkeypatch.setattr(engine, "PROGRESS_MIN_WORK", 0)
    space = pb.generate(3000, seed=5, moved=0.2)
    for walk, kw in ((pb.scan, {}), (pb.unmap, {"kernel": "6.15"})):
        for rows in (True, False):
            calls: list = []
            got = walk(space, rows=rows, progress=lambda *c, calls=calls: calls.append(c), **kw)
            want = walk(space, rows=rows, **kw)
            assert got.summary() == want.summary()
            if rows:
                np.testing.assert_array_equal(got.va, want.va)
            assert calls and calls[-1][1] == calls[-1][2]  # ends at 100%


def test_run_reports_each_step(tmp_path):
    calls = []
    pb.experiment(pb.thread_layout(), kernels=["6.15", "6.16"], progress=lambda *c: calls.append(c))
    assert calls[-1][1] == calls[-1][2] and len(calls) >= 5
