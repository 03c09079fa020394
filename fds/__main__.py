"""``python -m fds`` is the ``fds`` command."""

from fds.cli import main

raise SystemExit(main())
