"""A Jepsen-style harness for fds: writers and readers, a seeded nemesis, and a checker.

- :mod:`.history`: unique tract values and the invoke/ok/fail/info history;
- :mod:`.checker`: what a history (and the replicas' final bytes) may not show;
- :mod:`.workload`: writers and readers through the real :mod:`fds.client`;
- :mod:`.nemesis`: the seeded fault schedule and the metaserver proxy it cuts;
- ``test_jepsen.py``: the run. ``docs/testing.md`` says how to run it and what it checks.
"""
