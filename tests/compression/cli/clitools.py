"""Calling the CLI in-process from tests, and what a refusal must look like."""
from __future__ import annotations

from compression.cli import main


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m compression ARGV`, run in this process."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, out: str, err: str, phrase: str) -> None:
    """Exit status 2, nothing on stdout, one 'error:' line on stderr that contains `phrase`."""
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and phrase in lines[0], err
