"""The layers of docs/architecture.json hold in the code: no file of a part imports a part its "never" list forbids
(read from the import statements, lazy imports inside functions included), and the shared bpy-free helpers import
only the standard library."""

import ast
import functools
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


@functools.cache
def import_statements(path: Path) -> tuple[ast.Import | ast.ImportFrom, ...]:
    """A file's import statements, those inside functions included: each file parsed and walked once for every test
    here (the tests read ~30 parts' files, most of them several times)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return tuple(node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


@functools.cache
def imported_modules(path: Path) -> frozenset[str]:
    """Modules a file imports (absolute names; relative imports resolved against its package)."""
    package = path.relative_to(REPO).parent.as_posix().replace("/", ".")
    modules = set()
    for node in import_statements(path):
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
    return frozenset(modules)


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


# -- the add-on's bpy-free core (blender_addon/core) ------------------------------------------------------------
ADDON = REPO / "blender_addon"
CORE = ADDON / "core"
# What the core may import besides the standard library and itself: numpy (the client's arrays, PNG encoding) and
# pyzmq (the client's transport, bundled with the extension as wheels); never bpy or anything else of ours.
CORE_THIRD_PARTY = {"numpy", "zmq"}
# training/render_workers.py and render_ray.py run TrainingViewRenderer inside Blender processes (iso3d-render's
# workers): the one bpy module that code outside the add-on may import, and only there.
OUTSIDE_ADDON_MAY_IMPORT = {"training": {"blender_addon.dataset_render"}, "backend": set()}


def module_name(path: Path) -> str:
    return path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")


def addon_module(imported: str) -> str | None:
    """The add-on module (a file of blender_addon/) that an imported name is or lies in; None outside the add-on."""
    parts = imported.split(".")
    for end in range(len(parts), 0, -1):
        path = REPO.joinpath(*parts[:end])
        if parts[0] == "blender_addon" and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
            return ".".join(parts[:end])
    return None


def test_the_core_imports_only_the_standard_library_numpy_pyzmq_and_itself():
    files = sorted(CORE.rglob("*.py"))
    assert {path.stem for path in files} >= {"protocol", "client", "atomic_files", "addresses", "face_budgets",
                                             "job_settings", "render_plan", "render_staging", "local_backend"}
    broken = []
    for path in files:
        for module in imported_modules(path):
            top = module.split(".")[0]
            if module.startswith("blender_addon."):
                if not module.startswith("blender_addon.core."):
                    broken.append(f"{path.relative_to(REPO)} imports {module}")
            elif top not in sys.stdlib_module_names | CORE_THIRD_PARTY | {"__future__"}:
                broken.append(f"{path.relative_to(REPO)} imports {module}")
    assert not broken, broken


@pytest.mark.parametrize("package", sorted(OUTSIDE_ADDON_MAY_IMPORT))
def test_the_backend_and_training_use_only_the_core_of_the_addon(package):
    broken = []
    for path in sorted((REPO / package).rglob("*.py")):
        for module in imported_modules(path):
            if module.split(".")[0] != "blender_addon":
                continue
            target = addon_module(module) or module  # a name that is no file (moved into the core?) counts too
            if not (target == "blender_addon.core" or target.startswith("blender_addon.core.")
                    or target in OUTSIDE_ADDON_MAY_IMPORT[package]):
                broken.append(f"{path.relative_to(REPO)} imports {module}")
    assert not broken, broken


def import_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as [a, b, ..., a], or [] when it has none (depth-first search)."""
    done, path = set(), []

    def visit(node: str) -> list[str]:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return []
        path.append(node)
        for target in sorted(graph.get(node, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return []


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert import_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert import_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_addon_modules_import_each_other_without_a_cycle():
    """Lazy imports inside functions count: a cycle hidden in them is still two modules that cannot be understood,
    tested or moved one without the other (the session once reached into the preferences and the Finish operator,
    which both import it)."""
    graph = {}
    for path in sorted(ADDON.rglob("*.py")):
        name = module_name(path)
        graph[name] = {target for module in imported_modules(path)
                       if (target := addon_module(module)) not in (None, name, "blender_addon")}
    assert "blender_addon.session" in graph and "blender_addon.panels" in graph
    cycle = import_cycle(graph)
    assert not cycle, " -> ".join(cycle)


@pytest.mark.integration
def test_importing_the_whole_core_loads_no_bpy():
    from tests.helpers.processes import python, run

    modules = [module_name(path) for path in sorted(CORE.glob("*.py")) if path.stem != "__init__"]
    code = f"import sys\nfor name in {modules!r}: __import__(name)\nprint(sorted({{'bpy', 'mathutils'}} & set(sys.modules)))"
    result = run(python("-c", code), cwd=REPO, timeout=120)  # a Python start and numpy: seconds on a loaded machine
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


PROJECT_PACKAGES = ("backend", "training", "blender_addon", "tests")


def test_no_private_name_is_imported_from_another_module():
    """A leading underscore means "this module's own": another module of the project imports only public names
    (third-party private names, e.g. open_clip's ``_build_vision_tower``, are outside this rule)."""
    imported = []
    for folder in (*PROJECT_PACKAGES, "bench", "scripts", "examples"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in import_statements(path):
                if not isinstance(node, ast.ImportFrom):
                    continue
                if node.level == 0 and (node.module or "").split(".")[0] not in PROJECT_PACKAGES:
                    continue
                imported += [f"{path.relative_to(REPO)}:{node.lineno} imports {alias.name} from {node.module}"
                             for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not imported, imported
