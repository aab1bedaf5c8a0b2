"""Every command line in the README and docs/ exists, and every relative link leads somewhere.

A conference team follows the README without a developer at hand: a command that was renamed,
an option that is gone or a link to a file that is not in the repository stops them.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from bot.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = ".venv/bin/voucher-bot"
CODE_BLOCK = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


@dataclass(frozen=True)
class Example:
    """One command line as a document shows it."""

    where: str
    words: list[str]

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.words)}"


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def command_lines(document: Path) -> list[Example]:
    """`.venv/bin/voucher-bot …` in ```sh blocks and code spans, and `make bot ARGS="…"`."""
    text = document.read_text(encoding="utf-8")
    found: list[Example] = []
    for match in CODE_BLOCK.finditer(text):
        language, body = match.groups()
        line_no = text.count("\n", 0, match.start()) + 2
        for offset, line in enumerate(line.strip() for line in body.splitlines()):
            shown = language == "sh" and line.startswith((SCRIPT + " ", "make bot "))
            words = shlex.split(line, comments=True) if shown else []
            where = f"{relative(document)}:{line_no + offset}"
            if words[:1] == [SCRIPT]:
                found.append(Example(where, words[1:]))
            elif words[:2] == ["make", "bot"]:
                found.extend(
                    Example(where, shlex.split(word.removeprefix("ARGS=")))
                    for word in words[2:]
                    if word.startswith("ARGS=")
                )
    outside = CODE_BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for match in CODE_SPAN.finditer(outside):
        span = match.group(1).replace(r"\|", "|")
        where = f"{relative(document)}:{outside.count(chr(10), 0, match.start()) + 1}"
        if span.startswith(SCRIPT + " "):
            found.append(Example(where, span.split()[1:]))
        elif span.startswith('make bot ARGS="'):
            found.append(Example(where, span.split('"')[1].split()))
    return found


def command_table(document: Path) -> list[Example]:
    """The first cell of each row of the table under `## Command line` (`serve`, `check` …)."""
    text = document.read_text(encoding="utf-8")
    start = text.index("\n## Command line\n")
    end = text.index("\n## ", start + 1)
    rows = [line for line in text[start:end].splitlines() if line.startswith("| `")]
    examples = []
    for row in rows:
        cell = row.split(" | ")[0].removeprefix("| ")
        examples += [
            Example(f"README.md table: {cell}", span.split()) for span in CODE_SPAN.findall(cell)
        ]
    return examples


ALL_EXAMPLES = [example for doc in DOCUMENTS for example in command_lines(doc)]
TABLE = command_table(ROOT / "README.md")


def resolve(words: list[str]) -> tuple[list[str], Any, list[str]]:
    """The subcommand path of a command line, its (click) command, and the words after it."""
    command: Any = typer.main.get_command(app)
    path: list[str] = []
    rest = list(words)
    # A word in capitals is a placeholder (COMMAND, FILE, TARGET), as in `--help` output.
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        if rest[0].isupper():
            break
        name = rest.pop(0)
        sub = command.commands.get(name)
        assert sub is not None, f"no command {' '.join([*path, name])!r} in voucher-bot"
        command, path = sub, [*path, name]
    return path, command, rest


def options_of(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts, param.secondary_opts)
    return names


def test_the_documents_show_the_command_line() -> None:
    assert len(ALL_EXAMPLES) >= 10, [str(example) for example in ALL_EXAMPLES]
    assert len(TABLE) >= 10, [str(example) for example in TABLE]


@pytest.mark.parametrize("example", ALL_EXAMPLES + TABLE, ids=str)
def test_every_documented_command_exists_with_its_options(example: Example) -> None:
    path, command, rest = resolve(example.words)

    for word in rest:
        option = word.strip("[]").split("=")[0]
        if option.startswith("-"):
            assert option in options_of(command), f"{example}: {shlex.join(path)} has no {option}"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"{example}: {result.output}"
    assert "Usage:" in result.output


def test_the_console_script_is_what_make_install_puts_in_the_venv() -> None:
    script = Path(sys.executable).parent / "voucher-bot"
    assert script.exists(), f"{script} is missing: is pyproject's [project.scripts] renamed?"

    done = subprocess.run(
        [str(script), "grants", "import", "--help"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )

    assert done.returncode == 0, done.stderr
    assert "Usage: voucher-bot grants import" in done.stdout


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(document: Path) -> set[str]:
    text = CODE_BLOCK.sub("", document.read_text(encoding="utf-8"))
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def links() -> list[tuple[Path, str]]:
    found = []
    for document in DOCUMENTS:
        text = CODE_BLOCK.sub("", document.read_text(encoding="utf-8"))
        found += [(document, target) for target in LINK.findall(text)]
    return found


@pytest.mark.parametrize(
    ("document", "target"),
    [(d, t) for d, t in links() if not re.match(r"^[a-z]+:", t)],
    ids=lambda value: relative(value) if isinstance(value, Path) else value,
)
def test_every_relative_link_points_into_the_repository(document: Path, target: str) -> None:
    file_part, _, anchor = target.partition("#")
    linked = (document.parent / file_part).resolve() if file_part else document

    assert linked.is_relative_to(ROOT), f"{relative(document)}: {target} leaves the repository"
    assert linked.exists(), f"{relative(document)}: {target} does not exist"
    if anchor and linked.suffix == ".md":
        assert anchor in anchors(linked), f"{relative(document)}: no heading #{anchor} in {target}"


def test_documents_spell_commands_the_one_way_that_works() -> None:
    # `python -m bot …` fails outside the virtual environment: `.venv/bin/voucher-bot …`.
    wrong = re.compile(r"python -m bot \w")
    found = [
        f"{relative(document)}:{text.count(chr(10), 0, match.start()) + 1}"
        for document in DOCUMENTS
        for text in [document.read_text(encoding="utf-8")]
        for match in wrong.finditer(text)
    ]
    assert found == []


def test_a_command_line_broken_over_two_lines_is_still_checked() -> None:
    # A code span cut by a line break escapes the --help check of every command line.
    for document in DOCUMENTS:
        text = CODE_BLOCK.sub("", document.read_text(encoding="utf-8"))
        cut = re.findall(r"`\.venv/bin/voucher-bot [^`]*\n[^`]*`", text)
        assert cut == [], (relative(document), cut)
