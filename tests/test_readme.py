"""The README's promises that can drift: the test command CI runs, the settings table."""

from pathlib import Path

from pideai_otel._config import settings_table_markdown

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command() -> None:
    marker = README.index("<!-- test-command")
    command = README[marker:].split("```bash\n", 1)[1].split("\n", 1)[0]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_settings_table_matches_the_code() -> None:
    assert settings_table_markdown() in README
