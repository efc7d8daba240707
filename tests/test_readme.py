"""The README's two commands: CI runs the same test command, and they are well formed."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)[:2]


def test_readme_opens_with_demo_and_test_commands():
    demo, tests = _readme_commands()
    for command in (demo, tests):
        assert "\n" not in command and command.startswith("python3 -m venv .venv && ")
    assert "python -m experiments." in demo
    assert tests.endswith("python -m pytest")


def test_ci_runs_exactly_the_readme_test_command():
    _, tests = _readme_commands()
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines
