"""Ending child processes the kit starts (collector, stand-ins, demo services)."""

from __future__ import annotations

import signal
import subprocess

__all__ = ["terminate", "kill"]


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM and wait, so the child can finish in-flight work; SIGKILL if it overstays."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def kill(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL, what a crash looks like, and reap the child."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    proc.wait()
