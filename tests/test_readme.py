"""The README's two set-up commands stay true, and CI runs the test command as written."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^    (python3 -m venv .+)$", section, flags=re.M)


def test_readme_has_exactly_two_setup_commands():
    commands = setup_commands()
    assert len(commands) == 2
    assert commands[0].endswith("streamlit run app.py")
    assert "pytest" in commands[1]
    assert "torch==2.13.0" in (ROOT / "requirements.txt").read_text()


def test_ci_extracts_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"sed -n '(.+?)' README.md", script).group(1)
    out = subprocess.run(["sed", "-n", pattern, str(ROOT / "README.md")], capture_output=True, text=True)
    assert out.stdout.splitlines()[0] == setup_commands()[1]
