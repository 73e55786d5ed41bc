"""The README's generated tables, from the code that defines what they list.

    .venv/bin/python scripts/readme_tables.py          rewrite the tables in README.md
    .venv/bin/python scripts/readme_tables.py --check  exit 1 when README.md is out of step

Each table stands between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``:

- ``gateway settings``: the gateway's environment variables, from the fields of `gateway.config.Settings`;
- ``check options``: the options of a check declaration, from the "Options:" section of the docstring of
  `tasks.registry.check` and the defaults in its signature.

tests/test_readme_tables.py runs the check, so a change to either source fails the suite until the README
follows.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_OPTION_RE = re.compile(r"(?P<name>\w+)\((?P<type>[^)]*)\): (?P<text>.*)")


def settings_table() -> list[str]:
    """The gateway's environment variables: variable, default, what it holds and its form."""
    from gateway.config import Settings

    rows = ["| variable | default | what |", "|---|---|---|"]
    rows += [f"| `{name}` | {default} | {what} |" for name, default, what in Settings.documented()]
    return rows


def check_options() -> list[tuple[str, str, str]]:
    """(option, type, text) from the "Options:" section of `tasks.registry.check`'s docstring."""
    from tasks.registry import check

    doc = inspect.getdoc(check) or ""
    section = doc.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    options: list[tuple[str, str, str]] = []
    for line in section.splitlines():
        match = None if line.startswith("    ") else _OPTION_RE.fullmatch(line.strip())
        if match is not None:
            options.append((match["name"], match["type"], match["text"]))
        elif options:  # a continuation line (indented deeper) of the option above
            name, kind, text = options[-1]
            options[-1] = (name, kind, f"{text} {line.strip()}")
    return options


def options_table() -> list[str]:
    """The options of a check declaration: option, type, default, meaning."""
    from tasks.registry import check

    defaults = inspect.signature(check).parameters
    rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
    for name, kind, text in check_options():
        default = defaults[name].default
        shown = "–" if default is None else f"`{default!r}`"
        rows.append(f"| `{name}` | {kind} | {shown} | {_markdown(text)} |")
    return rows


TABLES: dict[str, Callable[[], list[str]]] = {"gateway settings": settings_table, "check options": options_table}


def _markdown(text: str) -> str:
    """Docstring markup as README markup: ``code`` → `code`; `name` stays as it is."""
    return text.replace("``", "`").replace("|", "\\|")


def render(readme: str) -> str:
    """`readme` with every generated table replaced by what its source says now."""
    for name, table in TABLES.items():
        begin, end = f"<!-- generated: {name} -->", f"<!-- end generated: {name} -->"
        if begin not in readme or end not in readme:
            raise SystemExit(f"README.md has no {begin} … {end} block")
        head, rest = readme.split(begin, 1)
        _, tail = rest.split(end, 1)
        readme = head + begin + "\n" + "\n".join(table()) + "\n" + end + tail
    return readme


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if "--check" in argv:
        if wanted != current:
            print("README.md is out of step: run .venv/bin/python scripts/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
