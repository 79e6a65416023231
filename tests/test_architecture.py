"""The import rules that keep the engines free of Pulumi and the cloud, read from the source itself.

provisioner/ is layered, bottom up: the recipe engine, access (keys, host keys, ssh), the
checker engine, then the local VM and the Google edge side by side, then the driver of the Pulumi
CLI, then the command line. A package imports only from the packages below it and from the shared
modules (`errors`, `paths`, `stack`; the general helpers `files`, `parallel`, `terminal`). Pulumi lives
in the Google edge and in the driver alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS: dict[str, set[str]] = {
    "recipe": set(),
    "access": {"recipe"},
    "checker": {"recipe", "access"},
    "local": {"recipe", "access", "checker"},
    "gcp": {"recipe", "access", "checker"},
    "driver": {"recipe", "access", "checker", "gcp"},
    "cli": {"recipe", "access", "checker", "local", "gcp", "driver"},
}
"""Each package, and the packages it may import from."""
SHARED = {"errors", "paths", "stack", "files", "parallel", "terminal"}
"""Modules at the top that every package may use; they import no package."""
TOP_LEVEL = {"__init__.py", "__main__.py", *(f"{name}.py" for name in SHARED)}
ENGINES = {"recipe", "access", "checker"}
"""The engines and what they stand on: nothing in them knows Pulumi or Google."""
CLOUD = ("pulumi", "pulumi_gcp", "google")
"""No engine imports these: Pulumi's SDK, Google's provider, Google's client libraries."""
MAY_IMPORT_PULUMI = ("provisioner.gcp", "provisioner.driver")
MAY_IMPORT_PULUMI_GCP = ("provisioner.gcp",)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in TREE, function-level ones too, made absolute."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.append((node.lineno, base))
            # `from provisioner import cli` imports the package provisioner.cli.
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if base == "provisioner"]
    return found


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(root: Path) -> list[str]:
    """Every broken import rule in the package at ROOT (a directory named provisioner), one line each."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root.parent)
        parts = module.split(".")
        room = parts[1] if len(parts) > 1 and parts[1] in LAYERS else None
        where = f"{path.relative_to(root.parent)}"
        for line, name in imported(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            top = name.split(".")[0]
            if top in CLOUD and room in ENGINES:
                problems.append(f"{where}:{line} imports {name}: {room} uses no Pulumi and no cloud")
            elif top == "pulumi_gcp" and not within(module, MAY_IMPORT_PULUMI_GCP):
                problems.append(f"{where}:{line} imports {name}: only {', '.join(MAY_IMPORT_PULUMI_GCP)} may")
            elif top == "pulumi" and not within(module, MAY_IMPORT_PULUMI):
                problems.append(f"{where}:{line} imports {name}: only {', '.join(MAY_IMPORT_PULUMI)} may")
            if top != "provisioner" or len(name.split(".")) < 2:
                continue
            target = name.split(".")[1]
            if target in SHARED or target == room or module == "provisioner.__main__":
                continue
            if room is None:
                problems.append(f"{where}:{line} imports {name}: the shared modules import no package")
            elif target not in LAYERS[room]:
                allowed = ", ".join(sorted(LAYERS[room] | SHARED))
                problems.append(f"{where}:{line} imports {name}: {room} may import only from {allowed}")
    return problems


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
"""A module or function longer than this usually holds two ideas (STYLE.md): split it by concern."""


def oversized(root: Path) -> list[str]:
    """Every module of the package at ROOT over MAX_MODULE_LINES lines, and every function (its `def` line to
    its last, docstring included) over MAX_FUNCTION_LINES, one line each."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        where = path.relative_to(root.parent)
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{where}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{where}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_module_and_no_function_is_too_long() -> None:
    assert oversized(ROOT / "provisioner") == []


def test_a_long_module_or_function_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "provisioner"
    root.mkdir()
    body = "".join(f"    x{n} = {n}\n" for n in range(60))
    (root / "long.py").write_text('def f() -> None:\n    """Sixty-two lines with this docstring."""\n' + body)
    (root / "big.py").write_text("x = 1\n" * 501)
    (root / "fine.py").write_text("def g() -> None:\n" + "    pass\n" * 59)
    assert oversized(root) == ["provisioner/big.py: 501 lines", "provisioner/long.py:1 f: 62 lines"]


def test_every_import_keeps_to_the_layers() -> None:
    assert violations(ROOT / "provisioner") == []


def test_the_top_of_provisioner_holds_only_the_packages_and_the_shared_modules() -> None:
    entries = {p.name for p in (ROOT / "provisioner").iterdir() if p.name != "__pycache__"}
    assert entries == TOP_LEVEL | set(LAYERS)
    for package in LAYERS:
        assert (ROOT / "provisioner" / package / "__init__.py").is_file(), package


@pytest.mark.parametrize(
    ("file", "source", "problem"),
    [
        ("recipe/settings.py", "import pulumi\n", "imports pulumi: recipe uses no Pulumi and no cloud"),
        (
            "checker/checks.py",
            "def f():\n    import google.auth\n",
            "checks.py:2 imports google.auth: checker uses no Pulumi",
        ),
        ("local/vm.py", "from pulumi_gcp import compute\n", "imports pulumi_gcp: only provisioner.gcp may"),
        ("cli/check.py", "from pulumi import automation\n", "imports pulumi: only provisioner.gcp, provisioner.driver"),
        ("driver/session.py", "from provisioner.cli import main\n", "driver may import only from"),
        ("driver/plan.py", "from provisioner.local import vm\n", "driver may import only from"),
        ("recipe/user_data.py", "from provisioner.access import ssh\n", "recipe may import only from errors, files"),
        ("checker/checks.py", "from ..cli import main\n", "imports provisioner.cli: checker may import only"),
        ("local/vm.py", "from provisioner.gcp.course_vm import CourseVm\n", "local may import only from"),
        ("gcp/course_vm.py", "from provisioner import cli\n", "imports provisioner.cli: gcp may import only"),
        ("gcp/student_vm.py", "from provisioner.driver import plan\n", "gcp may import only"),
        ("errors.py", "from provisioner.recipe import settings\n", "the shared modules import no package"),
        ("stack.py", "from provisioner.driver import session\n", "the shared modules import no package"),
    ],
)
def test_a_broken_rule_is_reported_with_its_file_and_line(tmp_path: Path, file: str, source: str, problem: str) -> None:
    # The rules above can fail: each of these imports, planted in a copy of the tree, is caught.
    root = tmp_path / "provisioner"
    for path in (ROOT / "provisioner").rglob("*.py"):
        copy = root / path.relative_to(ROOT / "provisioner")
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(path.read_text())
    planted = root / file
    planted.write_text(source + planted.read_text())
    found = violations(root)
    assert len(found) == 1 and problem in found[0], found


def test_allowed_imports_are_not_reported(tmp_path: Path) -> None:
    root = tmp_path / "provisioner"
    (root / "gcp").mkdir(parents=True)
    (root / "cli").mkdir()
    (root / "driver").mkdir()
    (root / "gcp" / "x.py").write_text("import pulumi\nimport pulumi_gcp\nfrom provisioner.checker import checks\n")
    (root / "driver" / "events.py").write_text("def f():\n    from pulumi.automation import events\n")
    (root / "cli" / "y.py").write_text("from provisioner.local import vm\nfrom provisioner.driver import events\n")
    assert violations(root) == []
