"""The safe writer (``ptebatch._io.atomic_write``): what a save may replace, the modes it leaves,
what it names in its errors, and that a signal or an error leaves no temporary file behind."""

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import ptebatch as pb
from ptebatch._io import TEMP_SUFFIX, atomic_write
from ptebatch.cli import main


@pytest.fixture(scope="module")
def space():
    return pb.generate(300, seed=5)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(TEMP_SUFFIX))


# -- modes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_overwriting_keeps_the_targets_mode(tmp_path, space, umask022, mode):
    path = tmp_path / "s.npz"
    path.write_bytes(b"old")
    os.chmod(path, mode)
    space.save(path)
    assert _mode(path) == mode  # before the fix: 0o644 (0666 less the umask) every time
    assert pb.load(path) == space


def test_new_file_mode_is_0666_less_the_umask_or_what_is_asked(tmp_path, space, umask022):
    space.save(tmp_path / "plain.npz")
    assert _mode(tmp_path / "plain.npz") == 0o644  # 0o666 & ~0o022
    space.save(tmp_path / "private.npz", mode=0o600)
    assert _mode(tmp_path / "private.npz") == 0o600
    # an existing target never gains a permission it lacks, nor keeps one `mode` withholds
    (tmp_path / "shared.npz").write_bytes(b"old")
    os.chmod(tmp_path / "shared.npz", 0o644)
    space.save(tmp_path / "shared.npz", mode=0o600)
    assert _mode(tmp_path / "shared.npz") == 0o600  # 0o644 & 0o600


def _fake_capture(space):
    from ptebatch.live.capture import Capture

    return Capture(
        space=space,
        pid=1,
        comm="fake",
        vmas=[],
        skipped=[],
        pmd_mapped=np.zeros(0, dtype=np.uint64),
        stats=dict(vmas=0, virtual_bytes=0, present=0, large_folios=0, pages_in_large_folios=0)
        | dict(pmd_mapped=0, seconds=0.0),
    )


def test_captures_are_written_0600(tmp_path, space, umask022, monkeypatch, capsys):
    # a capture holds physical frame numbers, which the kernel shows only to CAP_SYS_ADMIN
    from ptebatch.live import capture as capture_mod

    cap = _fake_capture(space)
    cap.save(tmp_path / "api.npz")
    assert _mode(tmp_path / "api.npz") == 0o600
    monkeypatch.setattr(capture_mod, "capture_detailed", lambda *a, **k: cap)
    out = tmp_path / "cli.npz"
    assert main(["capture", "--pid", "1", "-o", str(out), "--quiet", "--json"]) == 0
    capsys.readouterr()
    assert _mode(out) == 0o600  # before the fix: 0o644, world-readable
    assert pb.load(out) == space


# -- what a save refuses to replace ---------------------------------------------------------------


def _special(tmp_path, kind):
    path = tmp_path / kind
    if kind == "symlink":
        target = tmp_path / "target.npz"
        target.write_bytes(b"target")
        os.symlink(target, path)
    elif kind == "dangling-symlink":
        os.symlink(tmp_path / "nowhere.npz", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "device":
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            pytest.skip("mknod needs CAP_MKNOD")
    return path


@pytest.mark.parametrize(
    "kind,what",
    [
        ("symlink", "a symbolic link"),
        ("dangling-symlink", "a symbolic link"),
        ("fifo", "a FIFO"),
        ("directory", "a directory"),
        ("device", "a character device"),
    ],
)
def test_special_targets_are_refused_and_left_alone(tmp_path, space, kind, what):
    path = _special(tmp_path, kind)
    before = os.lstat(path)
    with pytest.raises(FileExistsError) as got:
        space.save(path)
    msg = str(got.value)
    assert msg == (
        f"{path}: exists and is {what}, not a regular file; a save replaces only regular files "
        f"(remove it or choose another name)"
    )
    after = os.lstat(path)  # the same inode, not a new file renamed over it
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    if kind == "symlink":
        assert (tmp_path / "target.npz").read_bytes() == b"target"
    assert _leftovers(tmp_path) == []


def test_cli_refuses_a_symlink_target_in_one_line(tmp_path, capsys):
    path = _special(tmp_path, "symlink")
    code = main(["generate", "--folios", "50", "--seed", "1", "-o", str(path)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"ptebatch: error: {path}: exists and is a symbolic link")
    assert (tmp_path / "target.npz").read_bytes() == b"target"


# -- errors name the target and leave nothing behind ----------------------------------------------


def test_a_failing_write_names_the_target_and_removes_the_temp_file(tmp_path):
    path = tmp_path / "out.bin"

    def no_space(fh):
        fh.write(b"x" * 100)
        raise OSError(28, "No space left on device")  # what a full disk raises: no file name

    with pytest.raises(OSError) as got:
        atomic_write(path, no_space)
    assert got.value.errno == 28 and got.value.filename == str(path)
    assert TEMP_SUFFIX not in str(got.value)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_directory_is_named_not_the_temp_file(tmp_path, space):
    path = tmp_path / "no-such-dir" / "s.npz"
    with pytest.raises(FileNotFoundError) as got:
        space.save(path)
    # before the fix: "... '.../no-such-dir/.s.npz.abc123.tmp'"
    assert got.value.filename == str(path) and TEMP_SUFFIX not in str(got.value)


def test_other_errors_pass_through_and_remove_the_temp_file(tmp_path):
    def bad(fh):
        fh.write(b"partial")
        raise ValueError("the writer's own error")

    with pytest.raises(ValueError, match="the writer's own error"):
        atomic_write(tmp_path / "x", bad)
    assert list(tmp_path.iterdir()) == []


def test_temp_file_name_pattern_and_a_long_target_name(tmp_path):
    seen = []

    def spy(fh):
        seen.append(os.path.basename(os.readlink(f"/proc/self/fd/{fh.fileno()}")))
        fh.write(b"data")

    long = "n" * 250 + ".npz"  # 254 bytes: within NAME_MAX, but not with a prefix and suffix added
    atomic_write(tmp_path / long, spy)
    assert (tmp_path / long).read_bytes() == b"data"
    # .NAME.XXXXXXXX.ptebatch-tmp, NAME cut so that the whole fits in NAME_MAX (255)
    assert re.fullmatch(r"\.n{200}\.\w{8}\.ptebatch-tmp", seen[0]), seen[0]
    atomic_write(tmp_path / "s.npz", spy)
    assert re.fullmatch(r"\.s\.npz\.\w{8}\.ptebatch-tmp", seen[1]), seen[1]


def test_saving_from_another_thread_works(tmp_path, space):
    # signal handlers can only be installed from the main thread: elsewhere the save goes on
    # without them
    errors = []

    def save():
        try:
            space.save(tmp_path / "t.npz")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=save)
    t.start()
    t.join()
    assert errors == [] and pb.load(tmp_path / "t.npz") == space
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_handlers_are_restored_after_a_save(tmp_path, space):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    space.save(tmp_path / "s.npz")
    with pytest.raises(ValueError):
        atomic_write(tmp_path / "x", lambda fh: (_ for _ in ()).throw(ValueError("x")))
    assert {s: signal.getsignal(s) for s in before} == before


# -- a signal during a save ------------------------------------------------------------------------

# The child saves through a writer that announces itself and then waits: the parent signals it
# mid-write.  It prints its handlers' state afterwards when it survives.
_CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from ptebatch._io import atomic_write
    target, sig_ign = sys.argv[1], sys.argv[2] == "ignore"
    if sig_ign:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    def slow(fh):
        fh.write(b"x" * 4096)
        fh.flush()
        print("writing", flush=True)
        for _ in range(40):  # 2 s: the parent signals at once
            time.sleep(0.05)
        fh.write(b"done")
    try:
        atomic_write(target, slow)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    print("saved", signal.getsignal(signal.SIGTERM) == signal.SIG_IGN, flush=True)
    """
)


def _save_and_signal(tmp_path, sig, mode="default"):
    target = tmp_path / "big.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(target), mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().strip() == "writing"
        assert len(_leftovers(tmp_path)) == 1  # the temp file exists mid-write
        child.send_signal(sig)
        out = child.stdout.read()
        code = child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
    return code, out, target


def test_sigterm_during_a_save_leaves_no_temp_file(tmp_path):
    code, out, target = _save_and_signal(tmp_path, signal.SIGTERM)
    assert code == -signal.SIGTERM  # still dies of the signal, as it would have
    assert out == "" and not target.exists()
    assert _leftovers(tmp_path) == []  # before the fix: .big.npz.XXXXXXXX.tmp stayed behind


def test_sigint_during_a_save_leaves_no_temp_file(tmp_path):
    code, out, target = _save_and_signal(tmp_path, signal.SIGINT)
    assert code == 130 and out.strip() == "interrupted"  # Python's KeyboardInterrupt, as before
    assert not target.exists() and _leftovers(tmp_path) == []


def test_an_ignored_sigterm_stays_ignored(tmp_path):
    code, out, target = _save_and_signal(tmp_path, signal.SIGTERM, "ignore")
    assert code == 0 and out.strip() == "saved True"
    assert target.read_bytes().endswith(b"done") and _leftovers(tmp_path) == []
