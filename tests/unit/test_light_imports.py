"""What a client process loads, and what the server plumbing may depend on, checked in fresh interpreters.

A program that only reads and writes blobs must not pay for (or be broken
by) the servers' stack, and constructing a client must not change process-wide
settings such as the allocator: that is an explicit :func:`fds.tune_allocator`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_STACK = ("fastapi", "starlette", "uvicorn", "prometheus_client")
ROLES = ("fds.metaserver", "fds.tractserver", "fds.gateway", "fds.s3", "fds.client", "fds.cli")

# What a client may import (fds.local too: a library for clients and tests; its servers are child processes).
CLIENT_MODULES = ["fds.client", "fds.auth", "fds.logs", "fds.tls", "fds.httpclient", "fds.http1", "fds.errors",
                  "fds.local"]


def _loaded_after(code: str) -> set[str]:
    """Top-level module names loaded in a fresh interpreter after running ``code``."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_client_imports_no_server_stack() -> None:
    loaded = _loaded_after("\n".join(f"import {name}" for name in CLIENT_MODULES))
    assert set(CLIENT_MODULES) <= loaded  # the imports really happened
    heavy = sorted(m for m in loaded if m.split(".")[0] in SERVER_STACK)
    assert heavy == [], f"importing {', '.join(CLIENT_MODULES)} loaded {heavy[:8]}"
    assert "fds.web" not in loaded


def test_web_imports_no_role() -> None:
    loaded = _loaded_after("import fds.web")
    assert "fastapi" in loaded
    roles = sorted(m for m in loaded if m.startswith(ROLES))
    assert roles == [], f"fds.web imported roles: {roles}"


_RECORD_MALLOPT = """
import ctypes
calls = []
real = ctypes.CDLL
class Recording(real):
    def __getattr__(self, name):
        function = super().__getattr__(name)
        if name != "mallopt":
            return function
        def mallopt(*args):
            calls.append(args)
            return function(*args)
        setattr(self, name, mallopt)  # as CDLL caches its functions: later lookups skip __getattr__
        return mallopt
ctypes.CDLL = Recording
"""
"""Prefix for a script: every mallopt call, whoever makes it, lands in ``calls`` (any route goes through CDLL)."""
_TUNED = f"[(-1, {256 << 20}), (-3, {32 << 20})]"


def _run(code: str, cwd: Path = REPO) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _RECORD_MALLOPT + code], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "FDS_METASERVER": "", "FDS_TOKEN": "", "FDS_SECRET_FILE": ""})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_client_leaves_the_allocator_alone() -> None:
    lines = _run("""
from fds.client import Client, SyncClient
client = Client("http://127.0.0.1:9", token="fds1.write.1.0.x")
sync = SyncClient("http://127.0.0.1:9", token="fds1.write.1.0.x")
sync.close()
print("CLIENT", calls)
import fds
fds.tune_allocator()  # the explicit choice: the recorder must see it
print("TUNED", calls)
""")
    assert "CLIENT []" in lines
    assert f"TUNED {_TUNED}" in lines


def test_the_commands_opt_in(tmp_path: Path) -> None:
    # Quick commands that reach their work: each must have tuned the allocator by then.
    lines = _run(f"""
from fds.cli import main
main(["secret", "new", {str(tmp_path / "secret")!r}])
print("FDS", calls)
calls.clear()
from apps.minutesort.cli import main as minutesort
minutesort(["gen", "--records", "1"])  # no cluster here: exits 3 after parsing, and after tuning
print("MINUTESORT", calls)
""", cwd=tmp_path)
    assert f"FDS {_TUNED}" in lines
    assert f"MINUTESORT {_TUNED}" in lines
