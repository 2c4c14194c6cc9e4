"""The README stays true: every command and every configuration key is documented and has help."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from newsletter.cli import main
from newsletter.config import describe_keys

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
TOML = (Path(__file__).resolve().parents[1] / "newsletter.toml").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # loads the CLI's lazy commands too
        command = group.get_command(ctx, name)
        assert command is not None
        path = prefix + (name,)
        found.append(path)
        if isinstance(command, click.Group):
            found.extend(_commands(command, path))
    return found


COMMANDS = _commands(main)


def test_the_cli_has_the_commands_the_issues_name() -> None:
    names = {" ".join(c) for c in COMMANDS}
    for expected in (
        "send",
        "preview",
        "demo",
        "sink",
        "editions",
        "subscribers add",
        "subscribers import",
        "subscribers export",
        "subscribers reactivate",
        "bounces",
        "worker",
        "db upgrade",
    ):
        assert expected in names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p))
def test_every_command_is_in_the_readme_and_has_help(path: tuple[str, ...]) -> None:
    assert f"newsletter {' '.join(path)}" in README, f"README does not mention 'newsletter {' '.join(path)}'"
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


@pytest.mark.parametrize("key,variable", [(k, v) for k, v, _ in describe_keys()])
def test_every_configuration_key_is_documented(key: str, variable: str) -> None:
    section, name = key.split(".")
    assert f"`{key}`" in README or f"`{section}.{name}` /" in README or f"/ `{key}`" in README, (
        f"README does not document {key}"
    )
    if variable not in ("NEWSLETTER_SECRET_KEY", "NEWSLETTER_SMTP_PASSWORD"):
        assert f"{name} =" in TOML or f"# {name} =" in TOML, f"newsletter.toml does not show {key}"


PACKAGE = Path(__file__).resolve().parents[1] / "newsletter"


def _module_table() -> list[str]:
    """The rows of README's module table (the lines after its `| module | owns |` header)."""
    lines = README.splitlines()
    start = lines.index("| module | owns |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _modules() -> list[tuple[str, ...]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__") or "migrations" in parts:
            continue
        found.append(parts)
    return found


@pytest.mark.parametrize("parts", _modules(), ids=lambda parts: "/".join(parts))
def test_every_module_is_in_the_readme_module_table(parts: tuple[str, ...]) -> None:
    """A module is named in the row of its package: top-level modules by their own row
    (`config`), the others as `pkg/name`, or as `name` in a row whose first cell names `pkg/`."""
    rows = _module_table()
    name, top = parts[-1], parts[0]
    if len(parts) == 1:
        assert any(row.split("|")[1].strip() == f"`{name}`" for row in rows), f"{name} has no row"
        return
    named = [row for row in rows if f"`{top}/" in row.split("|")[1]]
    assert any(f"`{name}`" in row or f"/{name}`" in row for row in named), (
        f"{'/'.join(parts)} is not in README's module table (a row whose first cell names `{top}/`)"
    )


MAX_MODULE_LINES = 450


def test_no_module_is_over_450_lines() -> None:
    """Small modules with one owner: a module that outgrows the limit is split by what it serves."""
    sizes = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}
