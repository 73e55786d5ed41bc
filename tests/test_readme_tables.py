"""The README's generated tables are in step with the code they come from (scripts/readme_tables.py)."""

from __future__ import annotations

import importlib.util
import inspect
from types import ModuleType

from tasks.registry import check
from tests.support.stack import ROOT


def readme_tables() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "scripts" / "readme_tables.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_option_of_check_is_documented_in_its_docstring() -> None:
    documented = [name for name, _, _ in readme_tables().check_options()]
    assert sorted(documented) == sorted(inspect.signature(check).parameters)


def test_the_readme_tables_are_in_step_with_the_code() -> None:
    tables = readme_tables()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert tables.render(readme) == readme, "README.md is out of step: run .venv/bin/python scripts/readme_tables.py"
