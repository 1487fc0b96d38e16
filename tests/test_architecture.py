"""The shape of the code, as the architecture asks and the README's layout section describes it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dtbundle"
MODULES = sorted(SRC.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_every_module_says_what_it_is_for() -> None:
    missing = [str(p.relative_to(ROOT)) for p in MODULES if ast.get_docstring(ast.parse(p.read_text())) is None]
    assert missing == []


def test_only_the_registry_package_talks_to_httpx() -> None:
    outside = [
        str(p.relative_to(ROOT))
        for p in MODULES
        if "httpx" in _imports(p) and not ({"registry", "sandbox"} & set(p.relative_to(SRC).parts))
    ]
    assert outside == []


def test_every_error_class_lives_in_errors_py() -> None:
    defined = []
    for path in MODULES:
        if path.name == "errors.py" or "sandbox" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                re.search(r"(Error|Exception)$", ast.unparse(base)) for base in node.bases
            ):
                defined.append(f"{path.relative_to(ROOT)}:{node.name}")
    assert defined == []


def test_the_cli_loads_neither_the_sandbox_nor_pytest() -> None:
    code = "import sys, dtbundle.cli; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    modules = set(loaded.stdout.split())
    assert not {m for m in modules if m.startswith("dtbundle.sandbox")}
    assert "pytest" not in modules


def test_no_test_module_imports_another() -> None:
    offenders = [
        f"{p.name}: {name}"
        for p in sorted((ROOT / "tests").glob("*.py"))
        for name in _imports(p)
        if re.fullmatch(r"tests\.(test_\w+|conftest)", name)
    ]
    assert offenders == []


def test_the_readme_layout_lists_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") :]
    for path in MODULES:
        relative = path.relative_to(SRC)
        if path.name == "__init__.py" or relative.parts[0] == "sandbox":
            continue
        name = path.stem if len(relative.parts) == 1 else path.name
        assert re.search(rf"\b{re.escape(path.stem)}\b", layout), f"README layout does not mention {name}"
