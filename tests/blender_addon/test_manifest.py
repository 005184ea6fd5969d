"""The extension manifest against extensions.blender.org's rules, read with tomllib (no bpy): the fields Blender's
validator requires (blender_ext.py: tagline and permission reasons at most 64 characters ending in a letter, digit
or closing bracket; a ``Name <contact>`` maintainer; tags from the platform's list; SPDX licence ids) plus the
platform's style for a tagline (no leading article). build_addon.py also runs Blender's own validator on the zips
(tests/blender_addon/test_build_addon.py)."""

from __future__ import annotations

import ast
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

from tests.helpers.paths import REPO_ROOT

ADDON_DIR = REPO_ROOT / "blender_addon"
TERSE_MAX = 64  # blender_ext.py TERSE_DESCRIPTION_MAX_LENGTH: taglines and permission reasons
# The platform's add-on tags (Blender 5.0's _bpy_internal/extensions/tags.py, "addons"; "All" is for legacy add-ons).
PLATFORM_ADDON_TAGS = {
    "3D View", "Add Curve", "Add Mesh", "Animation", "Bake", "Camera", "Compositing", "Development", "Game Engine",
    "Geometry Nodes", "Grease Pencil", "Import-Export", "Lighting", "Material", "Mesh", "Modeling", "Node", "Object",
    "Paint", "Physics", "Pipeline", "Render", "Rigging", "Scene", "Sculpt", "Sequencer", "System", "Text Editor",
    "Tracking", "User Interface", "UV",
}
PERMISSIONS = {"files", "network", "clipboard", "camera", "microphone"}


def manifest() -> dict:
    return tomllib.loads((ADDON_DIR / "blender_manifest.toml").read_text())


def terse_problem(text: str) -> str | None:
    """Blender's rule for a tagline or a permission's reason (blender_ext.py, strict): None when it holds."""
    if not text or text != text.strip() or any(ord(c) < 32 for c in text):
        return "empty, padded or with control characters"
    if len(text) > TERSE_MAX:
        return f"{len(text)} characters, more than {TERSE_MAX}"
    if not (text[-1].isalnum() or text[-1] in ")]}"):
        return f"ends with {text[-1]!r}: no closing punctuation"
    return None


def test_terse_rule_refuses_what_blenders_validator_refuses():
    assert terse_problem("Image to 3D") is None and terse_problem("Exports FBX (binary)") is None
    assert terse_problem("Image to 3D.") and terse_problem("x" * 65) and terse_problem(" padded")


def test_tagline_is_short_without_closing_punctuation_or_leading_article():
    tagline = manifest()["tagline"]
    assert terse_problem(tagline) is None, terse_problem(tagline)
    assert not re.match(r"(a|an|the)\b", tagline, re.IGNORECASE), "no leading article"
    assert manifest()["name"].lower() not in tagline.lower(), "the tagline does not repeat the name"


def test_maintainer_names_a_contact():
    match = re.fullmatch(r"(?P<name>[^<>]+\S) <(?P<address>[^<>@\s]+@[^<>@\s]+\.[a-z]+)>", manifest()["maintainer"])
    assert match, manifest()["maintainer"]
    assert match["name"] == "Isotropic3D for Blender contributors"


def test_licence_is_gpl3_or_later_with_its_text_in_the_extension():
    data = manifest()
    assert data["license"] == ["SPDX:GPL-3.0-or-later"]  # extensions.blender.org takes GPL-compatible add-ons
    assert (ADDON_DIR / "LICENSE").read_text().split()[:5] == ["GNU", "GENERAL", "PUBLIC", "LICENSE", "Version"]
    assert "Version 3, 29 June 2007" in (ADDON_DIR / "LICENSE").read_text()[:200]
    root = (REPO_ROOT / "LICENSE").read_text()
    assert root.startswith("MIT License") and "blender_addon/LICENSE" in root  # the rest of the repository: MIT
    for line in data["copyright"]:
        assert re.fullmatch(r"\d{4}(-\d{4})? \S.*", line), line  # "YEAR[-YEAR] Name", as the validator reads it


def test_tags_are_the_platforms_and_permissions_say_why_in_terse_words():
    data = manifest()
    assert data["tags"] and set(data["tags"]) <= PLATFORM_ADDON_TAGS, set(data["tags"]) - PLATFORM_ADDON_TAGS
    assert set(data["permissions"]) <= PERMISSIONS and {"files", "network"} <= set(data["permissions"])
    for key, reason in data["permissions"].items():
        assert terse_problem(reason) is None, (key, terse_problem(reason))
    assert data["permissions"]["network"] == "Talk to the Isotropic3D backend"
    if "website" in data:
        assert re.fullmatch(r"https://\S+", data["website"])


def test_platform_tags_match_the_installed_blenders_list_when_there_is_one():
    """The copy above stays in step with Blender's list (read as data from the bpy package, never imported)."""
    spec = importlib.util.find_spec("bpy")
    files = [path for location in (spec.submodule_search_locations or [] if spec else [])
             for path in Path(location).glob("*/scripts/modules/_bpy_internal/extensions/tags.py")]
    if not files:
        pytest.skip("bpy is not installed")
    tree = ast.parse(sorted(files)[-1].read_text())
    addons = next(node.value for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id == "addons")
    assert ast.literal_eval(addons) - {"All"} == PLATFORM_ADDON_TAGS
