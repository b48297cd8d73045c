"""The documentation's commands and links are right: README.md and docs/*.md.

Every ``python train_net.py ...`` and ``python tools/*.py ...`` command in a fenced ``bash`` block
must name a script that exists, pass that script's own argparse parser (the parser the script
builds when it runs, not a copy of its flags), name a ``--config-file`` that exists, and override
only keys that config has (loaded with :func:`dyhead_d2.config.load_config`, which rejects unknown
keys). A renamed flag, config file or config key therefore fails here.

Placeholders the pages mark as such are accepted: ``CFG`` or ``FILE`` as the config file (no key
check then) and any override value (``...``, ``/data/...``, ``path/to/...``); override keys are
always checked against a real config.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from unittest import mock

from . import needs_detectron2

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_PLACEHOLDERS = {"CFG", "FILE"}
PYTHONS = {"python", "python3"}
SEPARATORS = {"&&", "||", "|", ";", "&"}
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Command:
    where: str  # "docs/page.md:LINE"
    script: str  # as written, relative to the repository root
    args: tuple[str, ...]


def bash_blocks(text: str) -> Iterator[tuple[int, str]]:
    """``(line number of the block's first line, code)`` of each fenced ``bash`` block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, language = opening.groups()
        end = i + 1
        while end < len(lines) and not lines[end].lstrip().startswith(fence):
            end += 1
        if language == "bash":
            yield i + 2, "\n".join(lines[i + 1 : end])
        i = end + 1


def logical_lines(code: str, first: int) -> Iterator[tuple[int, str]]:
    """Lines with their ``\\`` continuations joined, each with the number of its first line."""
    pending, start = "", first
    for number, line in enumerate(code.splitlines(), first):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            yield start, pending + line
            pending = ""
    if pending:
        yield start, pending


def simple_commands(line: str) -> Iterator[list[str]]:
    """The words of each simple command of a shell line (``&&``, ``|``, ``;`` split; comments and
    leading ``VAR=value`` assignments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token in SEPARATORS:
            while words and ENV_ASSIGNMENT.match(words[0]):
                words.pop(0)
            if words:
                yield words
            words = []
        else:
            words.append(token)


def commands_in(text: str, page: str) -> list[Command]:
    """The ``python SCRIPT.py ...`` commands of the bash blocks of one page."""
    found = []
    for first, code in bash_blocks(text):
        for number, line in logical_lines(code, first):
            for words in simple_commands(line):
                if len(words) > 1 and words[0] in PYTHONS and words[1].endswith(".py"):
                    found.append(Command(f"{page}:{number}", words[1], tuple(words[2:])))
    return found


def doc_commands() -> list[Command]:
    return [c for p in PAGES for c in commands_in(p.read_text(), str(p.relative_to(ROOT)))]


class _Parsed(BaseException):
    """Carries the parser out of the script (a BaseException: no ``except Exception`` stops it)."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


@cache
def script_parser(script: str) -> argparse.ArgumentParser:
    """The parser ``script`` builds for its own command line: the script runs as ``__main__``
    until it parses its arguments, and stops there."""

    def capture(parser, args=None, namespace=None):
        raise _Parsed(parser)

    with (
        mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture),
        mock.patch.object(sys, "argv", [script]),
    ):
        try:
            runpy.run_path(str(ROOT / script), run_name="__main__")
        except _Parsed as parsed:
            return parsed.parser
    raise AssertionError(f"{script} never parsed a command line")


def parse(parser: argparse.ArgumentParser, args: tuple[str, ...]):
    """``(namespace, "")``, or ``(None, the parser's error line)``."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return parser.parse_args(list(args)), ""
        except SystemExit:
            return None, stderr.getvalue().strip().splitlines()[-1]


@cache
def config_problem(config: str, overrides: tuple[str, ...]) -> str:
    from dyhead_d2.config import ConfigError, load_config

    try:
        load_config(str(ROOT / config), list(overrides))
    except ConfigError as e:
        return str(e)
    return ""


def problems(command: Command) -> list[str]:
    """What is wrong with ``command`` (empty when nothing)."""
    if not (ROOT / command.script).is_file():
        return [f"{command.script} does not exist"]
    args, error = parse(script_parser(command.script), command.args)
    if args is None:
        return [f"{command.script} does not accept its arguments: {error}"]
    config = getattr(args, "config_file", None) or None
    overrides = tuple(getattr(args, "opts", None) or ())
    wrong = [o for o in overrides if o.startswith("-") or "=" not in o]
    if wrong:
        return [f"not key=value overrides (flags go before them): {wrong}"]
    if config is None or config in CONFIG_PLACEHOLDERS:
        return []
    if not (ROOT / config).is_file():
        return [f"config file {config} does not exist"]
    error = config_problem(config, overrides)
    return [error] if error else []


def report(commands: list[Command]) -> list[str]:
    return [f"{c.where}: {p}" for c in commands for p in problems(c)]


def test_every_documented_command_is_accepted():
    needs_detectron2()
    commands = doc_commands()
    found = report(commands)
    assert not found, "\n".join(found)
    # The check is not vacuous: the pages' commands exercise every part of it.
    with_config = [c for c in commands if "--config-file" in c.args and "CFG" not in c.args]
    with_keys = [c for c in with_config if any("=" in a and not a.startswith("-") for a in c.args)]
    assert len(commands) >= 25, [c.where for c in commands]
    assert len(with_config) >= 15 and len(with_keys) >= 10
    assert {c.script for c in commands} >= {
        "train_net.py",
        "tools/demo.py",
        "tools/export_model.py",
        "tools/convert_checkpoint.py",
        "tools/benchmark.py",
        "tools/gpu_check.py",
    }
    assert {c.where.split(":")[0] for c in commands} >= {"README.md", "docs/getting_started.md"}


WRONG_PAGE = """
Text, then commands as a page would write them.

```bash
# a flag train_net.py does not have
python train_net.py --config-file configs/quickstart/atss_dyhead_synthetic.py --eval-onyl
OMP_WAIT_POLICY=PASSIVE python tools/benchmark.py --which a \\
    --blokcs 6   # benchmark.py's flag is --blocks
python tools/demo.py --config-file configs/quickstart/atss_dyhead_synthetic.py --inputs x.jpg
python tools/no_such_tool.py --config-file configs/quickstart/atss_dyhead_synthetic.py
pip install -e . && python train_net.py --config-file configs/COCO/no_such_config.py
python train_net.py --config-file configs/quickstart/atss_dyhead_synthetic.py train.max_iters=3
python train_net.py --config-file CFG train.output_dir=out --resume
```

```python
python train_net.py --not-checked   # not a bash block
```
"""


def test_a_wrong_command_is_reported():
    needs_detectron2()
    commands = commands_in(WRONG_PAGE, "page.md")
    assert [c.where for c in commands] == [f"page.md:{n}" for n in (6, 7, 9, 10, 11, 12, 13)]
    found = report(commands)
    assert len(found) == 7, found
    expected = [
        "page.md:6: train_net.py does not accept its arguments: "
        "train_net.py: error: unrecognized arguments: --eval-onyl",
        "--blokcs 6",
        "tools/demo.py does not accept its arguments",
        "page.md:10: tools/no_such_tool.py does not exist",
        "page.md:11: config file configs/COCO/no_such_config.py does not exist",
        "has no key 'train.max_iters'; did you mean train.max_iter",
        "page.md:13: not key=value overrides (flags go before them): ['--resume']",
    ]
    for line, part in zip(found, expected):
        assert part in line, (line, part)


def test_the_same_commands_written_right_pass():
    needs_detectron2()
    right = (
        WRONG_PAGE.replace("--eval-onyl", "--eval-only")
        .replace("--blokcs 6", "--blocks 6")
        .replace("--inputs", "--input")
        .replace("tools/no_such_tool.py", "tools/analyze_model.py")
        .replace("COCO/no_such_config.py", "COCO/atss_dyhead_R_50_FPN_1x.py")
        .replace("max_iters", "max_iter")
        .replace("out --resume", "out")
    )
    commands = commands_in(right, "page.md")
    assert len(commands) == 7 and report(commands) == []


def _anchor(heading: str) -> str:
    """GitHub's id of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.M)}


def test_links_between_pages_resolve():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and anchor not in _anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_readme_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(readme)}
    assert {p.name for p in PAGES[1:]} <= linked
    assert len(PAGES) > 1
