"""Every command block of docs/ runs as written, in a folder prepared as a reader's would be.

Each ```console block of docs/*.md is run, one doc at a time, in a copy of one folder that holds
what the README's quickstart and tour leave behind: the demo workspace (`qualify-demo.db`, 600
leads instead of 2,000 to keep the suite quick), the example files (`qualify examples`) imported
into the default workspace (`qualify.db`), and the real data sets at `../shared/data` beside it.
Each `$ …` line (with its `\\` continuation lines) goes through bash with the installed console
script; none may fail or print a traceback. Lines that do not return (`qualify serve`,
`qualify worker`) are left out, as is curl, which needs them.

A block is not run only where the line before its fence says why: `<!-- not run: REASON -->`
(a synopsis naming the reader's own files, a server elsewhere, a benchmark). A block the test
cannot run and that says nothing fails here, so a command added to the docs is run from then on.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.test_readme import built_demo, copy_files, run_in

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
SHARED = ROOT.parent / "shared"
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")
LEFT_OUT = re.compile(r"\bqualify (serve|worker)\b|^curl\b")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the fence, 1-based
    commands: tuple[str, ...]
    not_run: str | None  # why, when it is not run


def blocks(path: Path) -> list[Block]:
    """The ```console blocks of one doc with their commands, continuation lines joined."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```console":
            index += 1
            continue
        fence = index
        marker = NOT_RUN.search(lines[fence - 1]) if fence else None
        commands: list[str] = []
        index += 1
        while index < len(lines) and lines[index].strip() != "```":
            text = lines[index]
            if text.lstrip().startswith("$ "):  # a block in a list item is indented
                command = text.lstrip()[2:]
                while command.endswith("\\") and index + 1 < len(lines):
                    index += 1
                    command = command[:-1].rstrip() + " " + lines[index].strip()
                commands.append(command)
            index += 1
        found.append(Block(path.name, fence + 1, tuple(commands), marker.group(1) if marker else None))
        index += 1
    return found


def runnable(block: Block) -> list[str]:
    return [c for c in block.commands if not LEFT_OUT.search(c) and not c.lstrip().startswith("#")]


def placeholders(command: str) -> list[str]:
    """The words of a command that stand for something to fill in: `KIND`, `[OPTIONS]`, `…`."""
    words = shlex.split(command.split(" #")[0], posix=True)
    return [w for w in words if "…" in w or w.startswith("[") or re.fullmatch(r"[A-Z]{2,}", w)]


def test_every_block_runs_or_says_why_not() -> None:
    """Placeholders (`…`, `KIND FILE`, `[OPTIONS]`) cannot be run: such a block must say why it is not."""
    unexplained = [
        f"docs/{block.doc}:{block.line}: {command}"
        for path in DOCS
        for block in blocks(path)
        if block.not_run is None
        for command in runnable(block)
        if placeholders(command)
    ]
    assert not unexplained, "commands with placeholders in blocks without <!-- not run: … -->:\n" + "\n".join(
        unexplained
    )
    run = [block for path in DOCS for block in blocks(path) if block.not_run is None and runnable(block)]
    assert len(run) >= 12  # most blocks run; a marker is the exception


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder after the quickstart and the tour: demo workspace, examples imported, data beside it."""
    base = tmp_path_factory.mktemp("reader")
    folder = base / "work"
    folder.mkdir()
    if SHARED.is_dir():
        (base / "shared").symlink_to(SHARED, target_is_directory=True)
    copy_files(built_demo(tmp_path_factory), folder)  # `qualify demo --leads 600`, as the README's test builds it
    for command in (
        "qualify init",
        "qualify examples",
        "qualify import accounts examples/accounts.csv",
        "qualify import leads examples/leads.csv --mapping examples/mapping.yaml",
        "qualify import events examples/events.jsonl",
    ):
        done = run_in(folder, command)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    yield base


@pytest.mark.slow
@pytest.mark.parametrize(
    "doc", [path.name for path in DOCS if any(b.not_run is None and runnable(b) for b in blocks(path))]
)
def test_every_command_of_the_docs_runs_as_written(doc: str, prepared: Path, tmp_path: Path) -> None:
    shutil.copytree(prepared, tmp_path / "reader", symlinks=True)
    folder = tmp_path / "reader" / "work"
    for block in blocks(ROOT / "docs" / doc):
        if block.not_run is not None:
            continue
        for command in runnable(block):
            if "../shared/" in command and not SHARED.is_dir():
                pytest.skip(f"docs/{doc}:{block.line} reads the shared data folder, which is absent ({SHARED})")
            done = run_in(folder, command)
            where = f"docs/{doc}:{block.line}: {command}"
            assert "Traceback" not in done.stderr, (where, done.stderr[-3000:])
            assert done.returncode == 0, (where, done.stdout[-1500:], done.stderr[-1500:])
