"""Run the command-line tools as a user would: a subprocess of this Python, from the repo root."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"

# A tiny rasgan64 (8³ grids, width 1/8) that trains in well under a second per epoch.
TINY = ["-d", "synthetic:boxes:res=8:n=32", "-b", "8", "--width", "0.125", "--no-progress"]


def tool_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def tool(name: str, *args, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    """Run ``tools/<name>.py`` with ``args``; returns the finished process (text output)."""
    cmd = [sys.executable, str(REPO / "tools" / f"{name}.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, env=tool_env())


def start_tool(name: str, *args, cwd=None) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "tools" / f"{name}.py"), *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd or REPO, env=tool_env())


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The tool's error: exactly one ``error:`` line on stderr and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def assert_unwritable_output_is_one_line(tmp_path, name: str, source, suffix: str) -> None:
    """``tools/<name>.py -f SOURCE -o OUT`` into a path below a file, and into a read-only folder (refused before
    any work, also for root, whom chmod does not stop): one ``error:`` line each, nothing written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = error_line(tool(name, "-f", source, "-o", blocker / f"c{suffix}"))
    assert line == f"error: cannot write into {blocker}: it is a file, not a folder"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for target in (ro / f"c{suffix}", ro / "new" / f"c{suffix}"):
            line = error_line(tool(name, "-f", source, "-o", target))
            assert line == (f"error: cannot write into {target.parent}: {ro} is not writable (read-only: no write "
                            "permission); choose a writable location")
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


def assert_failed_writes_are_one_line(monkeypatch, capsys, main, argv, target, code: int, words: str) -> None:
    """A tool's ``main(argv)`` whose write of ``target`` fails with ``OSError(code)`` (read-only file system, full
    disk: simulated, as root cannot make them): exit 2 and exactly one ``error: cannot write TARGET`` line."""
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot write {target}: ") and words in err, err


def stop_when(proc, path, sig, timeout: float = 120) -> str:
    """Send ``sig`` to the running tool ``proc`` once ``path`` exists (or after ``timeout`` s); its output, once it
    has exited with status 0 (the trainer saves on SIGINT/SIGTERM and exits cleanly)."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and not path.exists():
        time.sleep(0.05)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    return out
