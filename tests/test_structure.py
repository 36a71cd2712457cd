"""The package stays one a reader can hold in their head: no module of recbole_sae/ over 600 lines,
no function over 80 (counted from its ``def`` line to its last line, decorators left out)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

PACKAGE = Path(__file__).resolve().parents[1] / "recbole_sae"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def modules() -> List[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> List[str]:
    """``"name:line (n lines)"`` of every function and method of ``source`` longer than ``limit`` lines."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append(f"{node.name}:{node.lineno} ({length} lines)")
    return found


def test_the_checker_counts_from_def_to_last_line():
    def body(indent: str) -> str:
        return "".join(f"{indent}x{i} = {i}\n" for i in range(79))

    fits = f"@decorator\ndef fits():\n{body('    ')}"  # 80 lines from def to last line: at the limit
    method = f"class C:\n    async def too_long(self):\n{body('        ')}        pass\n"  # 81 lines
    assert long_functions(fits) == []
    assert long_functions(fits + method) == ["too_long:83 (81 lines)"]


def test_every_module_is_checked():
    names = {path.relative_to(PACKAGE).as_posix() for path in modules()}
    assert {"__init__.py", "analysis/interpretation.py", "intents/vocabulary.py", "sae/training.py"} <= names
    assert {"benchmark/spec.py", "benchmark/runner.py", "benchmark/report.py"} <= names


def test_no_module_over_600_lines():
    too_long = {}
    for path in modules():
        n_lines = len(path.read_text(encoding="utf-8").splitlines())
        if n_lines > MAX_MODULE_LINES:
            too_long[path.relative_to(PACKAGE).as_posix()] = n_lines
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by concern): {too_long}"


def test_no_function_over_80_lines():
    too_long = {}
    for path in modules():
        found = long_functions(path.read_text(encoding="utf-8"))
        if found:
            too_long[path.relative_to(PACKAGE).as_posix()] = found
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {too_long}"
