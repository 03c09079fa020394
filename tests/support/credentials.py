"""The tests' cluster secret: one for every cluster a test run starts.

Imported once per run (tests import it from here, never through conftest, which pytest
imports under a name of its own), so every cluster and client of the run shares one secret.
``$FDS_SECRET_FILE`` points at the secret, so clients and CLI subprocesses
made without explicit credentials find it, as an operator's would.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fds.auth import load_secret, mint, write_secret

SECRET_DIR = tempfile.mkdtemp(prefix="fds-test-secret-")
SECRET_FILE = Path(SECRET_DIR) / "secret"
write_secret(SECRET_FILE)
os.environ["FDS_SECRET_FILE"] = str(SECRET_FILE)
os.environ.pop("FDS_TOKEN", None)

AUTH = {"authorization": f"Bearer {mint(load_secret(SECRET_FILE), 'cluster', 24 * 3600)}"}
"""Headers for raw HTTP calls in tests: a cluster-scope token (may call every route)."""
