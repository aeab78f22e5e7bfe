"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path


def run_result_child(cmd: list[str], what: str) -> dict:
    """Run ``cmd`` as a fresh process and return the JSON on its ``RESULT `` line.

    Linux keeps ru_maxrss across exec, so a child spawned straight from a large benchmark process
    would report that process's peak; a shell that forks the child gives it a clean count.
    """
    if os.name == "posix" and Path("/bin/sh").exists():
        cmd = ["/bin/sh", "-c", '"$0" "$@"; exit $?', *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
