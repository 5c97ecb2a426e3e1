"""Every command of the README's tour runs as written after the quickstart.

In a fresh folder holding only a demo workspace (the tour writes the example files with
`qualify examples`: it runs anywhere Qualify is installed, not only in a checkout), each `$ qualify …` line of the tour's console blocks goes through bash with the
installed console script; none may fail or print a traceback. Left out: `qualify serve`, which
does not return, and curl, which needs it. The demo is built smaller than the quickstart's (600
leads instead of 2,000) to keep the suite quick, and built once per run (`built_demo`): this test and
the docs' (test_docs_commands.py) each start from a copy of it. The commands are the README's,
character for character.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import built_once

ROOT = Path(__file__).resolve().parents[2]
TOUR_SECTIONS = ("## A short tour", "## The HTTP API")
DEMO = "qualify demo --leads 600 --json > /dev/null"


def tour_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for heading in TOUR_SECTIONS:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        section = text[start : end if end != -1 else len(text)]
        for block in re.findall(r"^```console\n(.*?)^```", section, re.MULTILINE | re.DOTALL):
            for line in block.splitlines():
                if line.startswith("$ ") and not re.search(r"\bqualify serve\b|^\$ curl\b", line):
                    commands.append(line[2:])
    return commands


def run_in(folder: Path, command: str) -> subprocess.CompletedProcess[str]:
    """A command line through bash in `folder`, with the installed `qualify` first on the PATH and
    no workspace named by the environment: as a reader's shell after the quickstart."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("QUALIFY_DATABASE_URL", None)
    return subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def built_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding only what `DEMO` leaves in an empty one (the demo workspace), built once per
    run (`built_once`). Copy its files; never change them."""

    def build(folder: Path) -> None:
        built = run_in(folder, DEMO)
        assert built.returncode == 0, built.stderr

    return built_once(tmp_path_factory, "demo-600", build)


def copy_files(source: Path, target: Path) -> None:
    for made in source.iterdir():
        shutil.copy2(made, target / made.name)


def test_the_tour_is_found() -> None:
    commands = tour_commands()
    assert len(commands) >= 20 and commands[:2] == ["qualify init", "qualify examples"]
    assert not any(re.search(r"\b(LEAD|KEY|<email>)\b", c) for c in commands)  # nothing to fill in by hand


@pytest.mark.slow
def test_every_command_of_the_readme_tour_runs_as_written(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    copy_files(built_demo(tmp_path_factory), tmp_path)
    for command in tour_commands():
        done = run_in(tmp_path, command)
        assert "Traceback" not in done.stderr, (command, done.stderr[-3000:])
        assert done.returncode == 0, (command, done.stdout[-1500:], done.stderr[-1500:])
