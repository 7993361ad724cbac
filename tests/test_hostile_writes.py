"""Writes under hostile conditions: -o a FIFO or a device (written through, never replaced),
a full disk, SIGTERM / SIGHUP in the middle of a patch, a concurrent run taking OUT's name.
Every way out leaves nothing behind; where the user can act (a full disk) it is exit 2."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from relu_doctor.cli import app
from relu_doctor.errors import UserError
from relu_doctor.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
SCAN = ["scan", str(SAMPLES / "sample_cnn.onnx"), "--data", str(SAMPLES / "sample_batch.npy"), "--samples", "8",
        "-q"]
PATCH = ["patch", str(SAMPLES / "sample_cnn.onnx"), "--data", str(SAMPLES / "sample_batch.npy"),
         "--samples", "8", "-q"]


def _read_fifo(path: Path, into: list[bytes]) -> threading.Thread:
    def read() -> None:
        with open(path, "rb") as f:
            into.append(f.read())
    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("command", ["scan", "patch"])
def test_a_fifo_as_output_is_written_through_not_replaced(command: str, tmp_path: Path) -> None:
    fifo = tmp_path / ("r.json" if command == "scan" else "m.onnx")
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = _read_fifo(fifo, received)
    args = [*SCAN, "-f", "json"] if command == "scan" else PATCH
    result = CliRunner().invoke(app, [*args, "-o", str(fifo)])
    reader.join(30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)  # still a FIFO
    assert sorted(p.name for p in tmp_path.iterdir()) == [fifo.name]  # no temporary left beside it
    if command == "scan":
        assert json.loads(received[0])["schema"] == "relu-doctor/report/v1"
    else:
        import onnx

        assert onnx.load_from_string(received[0]).graph.node  # the patched model came through


def _device(tmp_path: Path, name: str, minor: int) -> Path:
    path = tmp_path / name
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except (PermissionError, OSError):
        pytest.skip("needs CAP_MKNOD to make a private character device")
    return path


def test_a_device_as_output_stays_a_device(tmp_path: Path) -> None:
    null = _device(tmp_path, "null", 3)  # a private /dev/null (the real one is never at risk)
    result = CliRunner().invoke(app, [*SCAN, "-f", "json", "-o", str(null)])
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.stat(null).st_mode)


def test_a_full_device_is_exit_2_and_says_why(tmp_path: Path) -> None:
    full = _device(tmp_path, "full", 7)  # a private /dev/full: every write fails with ENOSPC
    result = CliRunner().invoke(app, [*SCAN, "-f", "json", "-o", str(full)])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 2
    assert stat.S_ISCHR(os.stat(full).st_mode)


def _limit_file_size() -> None:  # a full disk, as far as this process can tell
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


@pytest.mark.slow  # a subprocess patch of a .pt2: about 20 s on 2 busy cores
def test_a_full_disk_during_patch_is_exit_2_and_leaves_nothing(tmp_path: Path) -> None:
    """The patched .pt2 is bigger than the file-size limit: the write fails midway. torch's C++
    writer used to abort the process (SIGABRT) and leave its partial temporary file."""
    args = ["patch", str(SAMPLES / "sample_cnn.pt2"), "--data", str(SAMPLES / "sample_batch.npy"),
            "--samples", "8", "-q", "-o", str(tmp_path / "m.pt2")]
    result = subprocess.run([sys.executable, "-m", "relu_doctor", *args], capture_output=True, text=True,
                            cwd=ROOT, preexec_fn=_limit_file_size, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "File too large" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


_SLOW_VERIFY = """
import sys, time
from relu_doctor.patching import run
run._verify = lambda *a, **k: time.sleep(120)  # hold the temporary file open, as a long check would
from relu_doctor.cli import main
sys.argv = ["relu-doctor", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_during_patch_leaves_no_temporary_file(sig: int, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    # default disposition in the child, even when the tests run under nohup (which ignores SIGHUP)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_VERIFY, *PATCH, "-o", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not list(tmp_path.iterdir()):  # the temporary file beside OUT
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, stderr
    assert "nothing was written" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_a_concurrent_run_that_took_the_name_is_not_clobbered(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    with pytest.raises(UserError, match="another run"), atomic_path(out, force=False) as tmp:
        tmp.write_text("ours")
        out.write_text("theirs")  # the other run committed first
    assert out.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
