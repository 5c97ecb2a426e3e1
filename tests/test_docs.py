"""The documentation is part of the product: these tests fail when it drifts from the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main

from qualify.domain import model_loader
from qualify.domain.conditions import OPERATORS
from qualify.domain.lifecycle import REASON_CODES, STAGE_ACTIONS
from qualify.entrypoints.cli import app
from qualify.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MODEL_LOADER = Path(model_loader.__file__)
DEFAULT_MODEL = MODEL_LOADER.parents[1] / "default_model.yaml"


def _read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


# Commands are walked by duck typing: Typer builds them on click, which recent Typer releases
# vendor under a private name, so the test must not import click itself.
def _commands(group: Any, prefix: str = "qualify") -> list[tuple[str, Any]]:
    """Every command under `group`, as its full name ("qualify stage accept"), depth first."""
    found: list[tuple[str, Any]] = []
    for name, command in sorted(group.commands.items()):
        full = f"{prefix} {name}"
        found.append((full, command))
        if hasattr(command, "commands"):
            found += _commands(command, full)
    return found


COMMANDS = _commands(typer.main.get_command(app))


def _sections(text: str) -> dict[str, str]:
    """Markdown sections by the command named in their heading: "## `qualify leads`" -> body."""
    out: dict[str, str] = {}
    parts = re.split(r"^#{2,4} (.+)$", text, flags=re.MULTILINE)
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        match = re.fullmatch(r"`(qualify[a-z -]*)`", heading.strip())
        if match:
            out[match.group(1)] = body
    return out


def _long_flags(command: Any) -> list[str]:
    """The long flags of a command's options (arguments have no leading dashes)."""
    flags: list[str] = []
    for param in command.params:
        flags += [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--") and o != "--help"]
    return flags


def test_the_command_tree_is_found() -> None:
    names = {name for name, _ in COMMANDS}
    assert {"qualify init", "qualify leads", "qualify stage accept", "qualify model validate"} <= names
    assert {f"qualify stage {action}" for action in STAGE_ACTIONS} <= names


@pytest.mark.parametrize("name", [name for name, _ in COMMANDS])
def test_every_command_has_a_heading_in_cli_md(name: str) -> None:
    assert name in _sections(_read("docs/cli.md")), f"docs/cli.md has no heading `{name}`"


@pytest.mark.parametrize(
    ("name", "flag"), [(name, flag) for name, command in COMMANDS for flag in _long_flags(command)]
)
def test_every_option_is_documented_in_its_commands_section(name: str, flag: str) -> None:
    sections = _sections(_read("docs/cli.md"))
    body = sections.get(name, "")
    # Options shared by every stage action are documented once, in the `qualify stage` section
    # (and those of every account action in `qualify account-stage`).
    for group in ("qualify stage", "qualify account-stage"):
        if name.startswith(f"{group} "):
            body += sections.get(group, "")
    assert re.search(rf"`{re.escape(flag)}[ `/]", body), f"{flag} of `{name}` is not in its docs/cli.md section"


def test_every_reason_code_is_in_the_docs() -> None:
    cli_md, lifecycle_md = _read("docs/cli.md"), _read("docs/lifecycle.md")
    for code in REASON_CODES:
        assert f"`{code}`" in cli_md and f"`{code}`" in lifecycle_md, code


def test_every_setting_is_documented() -> None:
    text = _read("docs/configuration.md")
    for name in Settings.model_fields:
        assert f"`QUALIFY_{name.upper()}`" in text, f"QUALIFY_{name.upper()} is not in docs/configuration.md"
    for variable in ("QUALIFY_TEST_POSTGRES_URL", "QUALIFY_REQUIRE_POSTGRES"):
        assert f"`{variable}`" in text
        assert variable in (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")


def _loader_keys() -> set[str]:
    """Every key the loader accepts: the `allowed` set literal of each `self._mapping(...)` call."""
    keys: set[str] = set()
    for node in ast.walk(ast.parse(MODEL_LOADER.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "_mapping"
            and len(node.args) >= 3
            and isinstance(node.args[2], ast.Set)
        ):
            keys |= {e.value for e in node.args[2].elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return keys


# The same keys, written out, so that a change to the loader's structure that the scan above
# could miss (a set built elsewhere) fails here rather than silently shrinking the check.
MODEL_KEYS = {
    "name", "description", "fit", "engagement", "disqualify", "policy",
    "grades", "rules", "personas", "A", "B", "C", "when", "points",
    "half_life_days", "event", "where", "cap_per_day", "cap", "once", "label", "reason",
    "mql", "fast_track", "decay_out", "thresholds", "requalify_margin", "requalify_after_days", "probability", "combine", "to", "floor", "min_days_in_mql",
    "min", "max",
    "handoff", "teams", "account_owner_first", "default_team", "sla", "capacity_per_week", "team", "owner",
    "hours", "business_hours", "days", "start", "end", "timezone",
    "accounts", "per_person_cap", "buying_group", "roles", "within_days", "min_engagement", "stages", "engaged", "mqa",
}  # fmt: skip


def test_the_key_list_matches_the_loader() -> None:
    source = MODEL_LOADER.read_text(encoding="utf-8")
    for key in MODEL_KEYS:
        assert f'"{key}"' in source, f"{key!r} is no longer in model_loader.py"
    assert _loader_keys() <= MODEL_KEYS | {"field"}, "model_loader.py accepts keys this test does not list"


def test_every_model_key_operator_and_field_is_documented() -> None:
    text = _read("docs/scoring-model.md")
    wanted = (
        (MODEL_KEYS | _loader_keys() | {"field"}) - {"A", "B", "C"}
        | set(OPERATORS)
        | set(model_loader.LEAD_FIELDS)
        | {f"account.{name}" for name in model_loader.ACCOUNT_FIELDS}
    )
    for key in sorted(wanted):
        assert f"`{key}`" in text, f"`{key}` is not in docs/scoring-model.md"
    assert "`A`, `B`, `C`" in text  # the grade bands


def test_the_default_model_is_quoted_whole_and_in_order() -> None:
    text = _read("docs/scoring-model.md")
    section = text.split("## The default model, line by line", 1)[1]
    quoted = [line for block in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL) for line in block.splitlines()]
    model = DEFAULT_MODEL.read_text(encoding="utf-8").splitlines()
    assert [line for line in quoted if line.strip()] == [line for line in model if line.strip()]


def _quickstart(readme: str) -> str:
    match = re.search(r"^## Quickstart\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Quickstart' section"
    return match.group(1)


def test_the_readme_quickstart_has_exactly_two_commands() -> None:
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", _quickstart(_read("README.md")), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2, blocks
    assert blocks[0].strip() == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/qualify demo"
    assert blocks[1].strip() == "bash scripts/test.sh"
    assert (ROOT / "scripts" / "test.sh").is_file()


# docs/import.md and docs/demo.md are written alongside this suite and may not exist in every
# checkout yet; the README links them anyway. A link must point at an existing file only if it
# is one of ours or the linked file is there: a missing file of theirs is not this test's failure.
LINKS_WRITTEN_ELSEWHERE = {"docs/import.md", "docs/demo.md"}


def test_readme_links_to_docs_exist() -> None:
    links = set(re.findall(r"\]\((docs/[^)#]+\.md)(?:#[^)]*)?\)", _read("README.md")))
    assert "docs/cli.md" in links
    for link in sorted(links):
        if link in LINKS_WRITTEN_ELSEWHERE and not (ROOT / link).exists():
            continue
        assert (ROOT / link).is_file(), f"README.md links {link}, which does not exist"


def test_links_between_docs_exist() -> None:
    for page in sorted(DOCS.glob("*.md")):
        for link in re.findall(r"\]\(([a-z0-9-]+\.md)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if f"docs/{link}" in LINKS_WRITTEN_ELSEWHERE and not (DOCS / link).exists():
                continue
            assert (DOCS / link).is_file(), f"{page.name} links {link}, which does not exist"


def test_the_automation_example_in_the_docs_validates() -> None:
    from qualify.domain.automation import load_automation

    text = _read("docs/automation.md")
    example = re.search(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert example is not None
    shipped = ROOT / "src" / "qualify" / "examples" / "automation.yaml"  # `qualify examples` writes it
    assert example.group(1) == shipped.read_text(encoding="utf-8")
    document = load_automation(example.group(1), "docs/automation.md")
    assert {s.name for s in document.segments} == {"pricing-readers", "engaged-no-demo"}
    assert [w.name for w in document.workflows] == ["recycle"] and len(document.workflows[0].steps) == 7


# --- docs/architecture.md ----------------------------------------------------------------------

PACKAGE = ROOT / "src" / "qualify"


def _modules() -> list[str]:
    """Every module under src/qualify as the architecture page names it (`service/pipeline.py`),
    less package markers and the migration revisions (one file per schema change)."""
    return sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "__init__.py" and "versions" not in path.relative_to(PACKAGE).parts
    )


def test_the_architecture_page_names_every_module() -> None:
    text = _read("docs/architecture.md")
    missing = [module for module in _modules() if f"`{module}`" not in text]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


def test_every_module_the_architecture_page_names_exists() -> None:
    named = set(re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", _read("docs/architecture.md")))
    stale = sorted(name for name in named if not (PACKAGE / name).is_file() and not (ROOT / name).is_file())
    assert not stale, f"docs/architecture.md names modules that are not there: {', '.join(stale)}"


def test_the_architecture_page_lists_the_reactions_in_the_composition_roots_order() -> None:
    from qualify.bootstrap import REACTIONS, default_pipeline

    text = _read("docs/architecture.md")
    rows = re.findall(r"^\| (\d) \| `([a-z_]+)` \|", text, flags=re.MULTILINE)
    assert [name for _, name in rows] == list(REACTIONS) == default_pipeline().names
    assert [int(n) for n, _ in rows] == list(range(1, len(REACTIONS) + 1))


def test_the_architecture_page_describes_every_layer_contract() -> None:
    text = _read("docs/architecture.md")
    names = re.findall(r"^name = (.+)$", _read(".importlinter"), flags=re.MULTILINE)
    assert len(names) >= 5
    for name in names:
        short = name.split(":")[0].strip()
        assert short in text, f"docs/architecture.md does not describe the contract {name!r}"


def test_the_traits_mapping_of_the_integrations_page_is_a_valid_leads_mapping() -> None:
    from qualify.service.imports.mapping import parse_mapping

    example = re.search(r"```yaml\n(.*?)```", _read("docs/integrations.md"), flags=re.DOTALL)
    assert example is not None
    mapping = parse_mapping(example.group(1), "docs/integrations.md")
    assert mapping.kind == "leads" and {r.column for r in mapping.fields} >= {"givenName", "address.country"}
