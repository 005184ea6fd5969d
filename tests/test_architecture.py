"""The layers of docs/architecture.json hold in the code: no file of a part imports a part its "never" list forbids
(read from the import statements, lazy imports inside functions included), and the shared bpy-free helpers import
only the standard library."""

import ast
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARCHITECTURE = json.loads((REPO / "docs" / "architecture.json").read_text())
PARTS = ARCHITECTURE["parts"]


def part_files(part: str) -> list[Path]:
    files = []
    for entry in PARTS[part]["is"]:
        path = REPO / entry
        files += sorted(path.rglob("*.py")) if entry.endswith("/") else [path]
    return files


def module_path(module: str) -> str:
    return module.replace(".", "/")


def imported_modules(path: Path) -> set[str]:
    """Modules a file imports (absolute names; relative imports resolved against its package)."""
    package = path.relative_to(REPO).parent.as_posix().replace("/", ".")
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            modules |= {f"{base}.{alias.name}" for alias in node.names}
            if not (REPO / module_path(base)).is_dir():  # "from package import module" uses the module only
                modules.add(base)
    return modules


def in_part(module: str, part: str) -> bool:
    target = module_path(module)
    for entry in PARTS[part]["is"]:
        entry = entry.removesuffix(".py").rstrip("/")
        if target == entry or target.startswith(entry + "/"):
            return True
    return False


def owner(module: str, candidates: list[str]) -> str | None:
    """The most specific part holding ``module`` (a file named by a part beats its folder's part)."""
    holders = [p for p in candidates if in_part(module, p)]
    return max(holders, key=lambda p: max(len(e) for e in PARTS[p]["is"] if in_part(module, p)), default=None)


@pytest.mark.parametrize("source, target, why", ARCHITECTURE["never"], ids=lambda v: str(v)[:30])
def test_never(source, target, why):
    broken = []
    for path in part_files(source):
        if owner(path.relative_to(REPO).as_posix().removesuffix(".py").replace("/", "."), list(PARTS)) != source:
            continue  # a file named by a more specific part (e.g. protocol.py inside blender_addon/)
        for module in imported_modules(path):
            if owner(module, list(PARTS)) == target:
                broken.append(f"{path.relative_to(REPO)} imports {module}")
    assert not broken, f"{source} must never import {target} ({why}): {broken}"


def test_the_shared_helpers_import_only_the_standard_library():
    for path in part_files("Shared"):
        outside = {m.split(".")[0] for m in imported_modules(path)} - set(sys.stdlib_module_names) - {"__future__"}
        assert not outside, f"{path.relative_to(REPO)} imports {outside}"


PROJECT_PACKAGES = ("backend", "training", "blender_addon", "tests")


def test_no_private_name_is_imported_from_another_module():
    """A leading underscore means "this module's own": another module of the project imports only public names
    (third-party private names, e.g. open_clip's ``_build_vision_tower``, are outside this rule)."""
    imported = []
    for folder in (*PROJECT_PACKAGES, "bench", "scripts", "examples"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom):
                    continue
                if node.level == 0 and (node.module or "").split(".")[0] not in PROJECT_PACKAGES:
                    continue
                imported += [f"{path.relative_to(REPO)}:{node.lineno} imports {alias.name} from {node.module}"
                             for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not imported, imported
