"""House limits on the package's size: no module over 400 lines, and no function body over 60
lines (counted from its first statement after the docstring, so that the signature and the
documentation of a function with many options do not count against it)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastdnc"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:] or body
    return node.end_lineno - body[0].lineno + 1


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path):
    text = path.read_text()
    assert text.count("\n") <= 400, f"{path.name} has {text.count(chr(10))} lines (limit 400): split it by concept"
    long = [
        f"{node.name} ({_body_lines(node)} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > 60
    ]
    assert not long, f"functions over 60 lines in {path.name}: {', '.join(long)}"
