"""fds.progress: bars draw on a terminal, and stay silent (the same calls doing nothing) elsewhere."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading

from fds.progress import byte_bar, count_bar


class Terminal(io.StringIO):
    """A stream that says it is a terminal, so rich draws into it."""

    def isatty(self) -> bool:
        return True


def _text(stream: io.StringIO) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", stream.getvalue())  # drop cursor and colour codes


def test_not_a_terminal_is_silent() -> None:
    out = io.StringIO()
    with byte_bar("get", 10 << 20, file=out) as bar:
        assert not bar.shown
        bar(4 << 20)
        bar.advance(1)
        bar.update(7, total=9, description="x")
    with count_bar("sort", 5, unit="tracts", file=out) as count:
        assert not count.shown
        count.update(3)
    assert out.getvalue() == ""


def test_quiet_on_a_terminal_is_silent() -> None:
    out = Terminal()
    with byte_bar("get", 100, quiet=True, file=out) as bar:
        bar(50)
        assert not bar.shown
    assert out.getvalue() == ""


def test_byte_bar_draws_description_amount_and_rate() -> None:
    out = Terminal()
    with byte_bar("download", 2_000_000, file=out) as bar:
        assert bar.shown
        for _ in range(4):
            bar(500_000)
        bar._progress.refresh()  # draw now rather than on the next tick of the refresh thread
    text = _text(out)
    assert "download" in text and "2.0/2.0 MB" in text and "/s" in text


def test_count_bar_takes_absolute_updates_and_a_new_total() -> None:
    out = Terminal()
    with count_bar("read + shuffle", None, unit="tracts", file=out) as bar:
        bar.update(3, total=12)
        bar.advance(2)
        bar._progress.refresh()
    assert "5/12 tracts" in _text(out) and "read + shuffle" in _text(out)


def test_advance_from_many_threads_counts_every_call() -> None:
    out = Terminal()
    with count_bar("many", 8000, file=out) as bar:
        threads = [threading.Thread(target=lambda: [bar.advance() for _ in range(1000)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert bar._progress.tasks[0].completed == 8000


def test_importing_it_pulls_in_no_server_code_and_no_rich() -> None:
    code = ("import sys, fds.progress; heavy = [m for m in ('rich', 'fastapi', 'starlette', 'uvicorn', "
            "'fds.client', 'fds.web', 'fds.tractserver') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
