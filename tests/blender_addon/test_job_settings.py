"""Jobs send only what the artist changed: the backend's defaults (from its ``welcome``, or its own when it sends
none) apply to everything else; the panel shows the backend's defaults once they are known (real bpy)."""

import pytest

pytestmark = pytest.mark.blender
bpy = pytest.importorskip("bpy")

from blender_addon.core.job_settings import DEFAULTS_PROPERTY, apply_backend_defaults, changed_settings  # noqa: E402
from blender_addon.operators_generate import generate_settings  # noqa: E402

# the shape of the backend's welcome ``settings`` (type, default, bounds, help per wire key)
WELCOME = {
    "preview": {"steps": {"type": "int", "default": 50, "min": 1, "max": 1000, "choices": None, "help": ""},
                "guidance_scale": {"type": "float", "default": 10.0, "min": 0.0, "max": 100.0, "choices": None,
                                   "help": ""},
                "elevation": {"type": "float", "default": 15.0, "min": -89.0, "max": 89.0, "choices": None,
                              "help": ""},
                "seed": {"type": "int", "default": 0, "min": 0, "max": None, "choices": None, "help": ""}},
    "generate": {"preset": {"type": "choice", "default": "fast", "min": None, "max": None,
                            "choices": ["fast", "draft", "reference", "tiny"], "help": ""},
                 "run.steps": {"type": "int", "default": 2500, "min": 1, "max": 100000, "choices": None, "help": ""}},
}


def test_untouched_settings_are_not_sent_without_welcome_defaults(registered_addon):
    scene = bpy.context.scene
    assert changed_settings(scene, "preview") == {} and generate_settings(scene) == {}
    scene.iso3d_generate.guidance = 7.5
    scene.iso3d_generate.preset = "draft"
    scene.iso3d_generate.sds_guidance = 50.0
    assert changed_settings(scene, "preview") == {"guidance_scale": 7.5}
    assert generate_settings(scene) == {"preset": "draft", "guidance.guidance_scale": 50.0}


def test_welcome_defaults_are_shown_and_only_changes_are_sent(registered_addon):
    scene = bpy.context.scene
    settings = scene.iso3d_generate
    settings.seed = 4  # the artist's own value survives a welcome
    apply_backend_defaults(scene, WELCOME)
    assert (settings.preview_steps, settings.guidance, settings.elevation) == (50, 10.0, 15.0)
    assert settings.seed == 4 and scene[DEFAULTS_PROPERTY]["preview:elevation"] == 15.0
    assert settings.steps == 0  # a generation's steps stay "the preset's": the default preset's 2500 is not shown
    assert changed_settings(scene, "preview") == {"seed": 4}
    settings.elevation = 30.0
    assert changed_settings(scene, "preview") == {"seed": 4, "elevation": 30.0}
    settings.elevation = 15.0  # back to the backend's default: not sent again
    assert "elevation" not in changed_settings(scene, "preview")
    apply_backend_defaults(scene, {"preview": {"guidance_scale": {"type": "float", "default": "high"}}})
    assert settings.guidance == 10.0  # a default the property cannot hold is left to the backend
