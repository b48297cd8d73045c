"""Progress of long work: log lines at each tenth of the work when stderr is not a terminal (a
log file, CI, a pipe), a tqdm bar when it is (the synthetic data's progress is tested with it, in
test_synthetic_data.py)."""

import io
import logging
import re
import sys

from dyhead_d2.progress import LOGGER_NAME, progress, progress_lines, step


def progress_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]


def test_not_on_a_terminal_a_line_at_each_tenth_and_one_when_done(caplog, capsys):
    assert not sys.stderr.isatty()  # captured
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        assert list(progress(range(20), desc="work", unit="items")) == list(range(20))
    lines = progress_messages(caplog)
    assert lines[:-1] == [f"work: {n}/20 items ({5 * n}%)" for n in range(2, 20, 2)]
    assert re.fullmatch(r"work: 20 items done in \d+\.\d s", lines[-1]), lines[-1]
    assert capsys.readouterr().err == ""  # no bar


def test_few_items_and_unknown_totals(caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        list(progress(iter(range(3)), desc="few", total=3))
        list(progress(iter(range(4)), desc="unknown"))  # no total: only the last line
    lines = progress_messages(caplog)
    assert lines[:2] == ["few: 1/3 it (33%)", "few: 2/3 it (66%)"]
    assert lines[2].startswith("few: 3 it done in ") and lines[3].startswith("unknown: 4 it done")
    assert len(lines) == 4


def test_on_a_terminal_a_bar_and_no_lines(caplog, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        assert list(progress(range(5), desc="bar", unit="img")) == list(range(5))
    assert progress_messages(caplog) == []
    assert "bar: 100%" in terminal.getvalue() and "5/5" in terminal.getvalue()


def test_progress_lines_go_to_stderr_with_a_prefix_for_the_block_only(capsys):
    logger = logging.getLogger(LOGGER_NAME)
    before = (logger.level, logger.propagate, list(logger.handlers))
    with progress_lines("tool.py: "):
        step("reading a large file")
    step("not shown")  # outside the block: not configured (WARNING)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and re.fullmatch(
        r"\[\d\d:\d\d:\d\d\] tool.py: reading a large file", err[0]
    )
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
