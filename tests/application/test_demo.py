"""The ledger demo that ``make run`` shows runs end to end on a real SQLite file."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from fedcoin.application.cli import main
from fedcoin.application.demo import run_demo


def test_demo_runs_and_conserves(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_demo(tmp_path, Console(file=out, width=120)) == 0
    text = out.getvalue()
    assert "conserved after every block" in text
    assert "height 4" in text
    assert (tmp_path / "demo-chain.sqlite").exists()


def test_cli_help_lists_commands(capsys) -> None:
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "demo" in capsys.readouterr().out
