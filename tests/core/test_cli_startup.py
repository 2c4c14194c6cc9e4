"""Start-up cost: `newsletter --help` imports no command module, and nothing hashes at import."""

from __future__ import annotations

import json
import subprocess
import sys

import click
from click.testing import CliRunner

from newsletter.cli import COMMANDS, main

HEAVY = [
    "argon2",
    "sqlalchemy",
    "premailer",
    "dkim",
    "spectree",
    "pydantic",
    "starlette",
    "aiosmtpd",
    "apscheduler",
    "newsletter.service",
    "newsletter.admin.accounts",
]


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def test_help_imports_no_command_module() -> None:
    out = _run(
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from newsletter.cli import main\n"
        "result = CliRunner().invoke(main, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert json.loads(out) == []


def test_send_help_imports_no_heavy_module() -> None:
    """`send --help` loads the send command's module, but not the Service it builds when it runs."""
    out = _run(
        "import json, sys\n"
        "from click.testing import CliRunner\n"
        "from newsletter.cli import main\n"
        "result = CliRunner().invoke(main, ['send', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "assert 'newsletter.cli.sending' in sys.modules\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert json.loads(out) == []


def test_importing_the_accounts_computes_no_hash() -> None:
    """The dummy hash that evens out sign-in timing is made at the first unknown address."""
    out = _run(
        "import argon2\n"
        "calls = []\n"
        "real = argon2.PasswordHasher.hash\n"
        "argon2.PasswordHasher.hash = lambda self, *a, **k: calls.append(a) or real(self, *a, **k)\n"
        "import newsletter.admin.accounts, newsletter.cli.admin\n"
        "print(len(calls))\n"
    )
    assert out.strip() == "0"


def test_the_help_table_says_what_each_command_says() -> None:
    ctx = click.Context(main)
    for name, entry in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None
        assert entry.summary == command.get_short_help_str(1000), name
    listed = CliRunner().invoke(main, ["--help"]).output
    assert all(f"  {name} " in listed for name in COMMANDS)
