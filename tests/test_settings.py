"""One definition per setting (issue 15, part 1): every job kind's settings dataclass declares each setting's
default, bounds and help once; the CLI, the service and ``welcome`` all read that declaration."""

from __future__ import annotations

import math

import pytest

from backend.diffusion.preview import PreviewSettings
from backend.errors import SettingsError
from backend.finishing.pipeline import FinishOptions
from backend.nerf.presets import PRESETS, GenerateConfig, preset
from backend.service.job_kinds import finish_settings, generate_config, preview_settings
from backend.service.options import ServiceOptions
from backend.settings import describe, setting_specs, settings_from_dict

KINDS = [PreviewSettings, GenerateConfig, FinishOptions, ServiceOptions]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.__name__)
def test_every_number_has_bounds_and_every_setting_a_help(kind):
    for key, spec in setting_specs(kind).items():
        assert spec.help, key
        if spec.type in (int, float):
            assert spec.min is not None and spec.max is not None, f"{key} has no bounds"
        if spec.type is str and not spec.optional:
            assert spec.choices, f"{key} takes any text"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_within_the_bounds(name):
    preset(name).validate()


@pytest.mark.parametrize("values, fragment", [
    ({"mesh.resolution": math.inf}, "setting 'mesh.resolution' must be a finite number"),
    ({"mesh.resolution": 2048}, "setting 'mesh.resolution' must be between 8 and 1024 (got 2048)"),
    ({"run.steps": 10**400}, "setting 'run.steps' must be between 1 and 100000 (got a 401-digit number)"),
    ({"guidance.guidance_scale": 10**400}, "setting 'guidance.guidance_scale' must be a finite number"),
    ({"field.normals": "magic"}, "setting 'field.normals' must be one of analytic, finite_difference, autograd"),
    ({"cameras.fovy_range": [60, 15]}, "setting 'cameras.fovy_range' must be (low, high)"),
    ({"cameras.fovy_range": [1, 2, 3]}, "setting 'cameras.fovy_range' needs 2 values (got 3)"),
    ({"run.mixed_precision": "perhaps"}, "setting 'run.mixed_precision' must be true or false"),
    ({"run.seed": 1.5}, "setting 'run.seed' must be a whole number"),
    ({"run.seed": True}, "setting 'run.seed' must be a number"),
    ({"mesh.resolutions": 64}, "unknown setting 'mesh.resolutions'"),
    ({"x" * 5000: 1}, "unknown setting 'xxxxxxxx"),
])
def test_bad_values_are_refused_naming_the_setting(values, fragment):
    with pytest.raises(SettingsError) as error:
        settings_from_dict(preset("fast"), values)
    assert fragment in str(error.value) and len(str(error.value)) < 300


def test_text_and_json_give_the_same_settings():
    from_text = settings_from_dict(preset("tiny"), {"cameras.fovy_range": "20,50", "run.steps": "12",
                                                    "run.mixed_precision": "false", "guidance.camera_encoding": "none"})
    from_json = settings_from_dict(preset("tiny"), {"cameras.fovy_range": [20, 50], "run.steps": 12.0,
                                                    "run.mixed_precision": False, "guidance.camera_encoding": None})
    assert from_text == from_json and from_text.cameras.fovy_range == (20.0, 50.0)
    assert GenerateConfig.from_dict(from_text.to_dict()) == from_text  # a saved config.json reads back


def test_the_service_reads_todays_and_earlier_keys_alike():
    assert preview_settings({"views": 2, "guidance": 5, "azimuth": 30}) == \
        preview_settings({"num_views": 2, "guidance_scale": 5.0, "azimuth_start": 30.0})
    assert generate_config({"preset": "tiny", "steps": 5, "options": {"mesh.resolution": 32}}) == \
        generate_config({"preset": "tiny", "run.steps": 5, "mesh.resolution": 32})
    with pytest.raises(SettingsError, match="same setting"):
        preview_settings({"views": 2, "num_views": 3})
    source, options = finish_settings({"source": "0" * 16, "lods": "500,100", "formats": ["glb", "obj"]})
    assert options.lods == (500, 100) and options.formats == ("glb", "obj")
    with pytest.raises(SettingsError, match="setting 'texture': the service streams textures up to 4096"):
        finish_settings({"source": "0" * 16, "texture": 8192})


def test_described_defaults_are_the_dataclass_defaults():
    described = describe(PreviewSettings())
    assert {key: entry["default"] for key, entry in described.items()} == {
        "num_views": 4, "steps": 50, "guidance_scale": 10.0, "eta": 1.0, "seed": 22, "elevation": 15.0,
        "azimuth_start": 0.0, "camera_encoding": None, "reference_frame": False}
    assert described["camera_encoding"]["type"] == "choice"
    assert describe(FinishOptions())["lods"]["type"] == "str"  # a sequence travels as comma-separated text


def test_cli_flags_are_generated_from_the_dataclasses():
    from backend.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["generate", "x.png", "--mesh.resolution", "384", "--steps", "7",
                              "--cameras.fovy-range", "20,50", "--faces", "900", "--format", "glb,obj"])
    from backend.commands.generate import build_config
    from backend.commands.export import finish_options

    args.resume = None
    config = build_config(args)
    assert (config.mesh.resolution, config.run.steps, config.cameras.fovy_range) == (384, 7, (20.0, 50.0))
    assert finish_options(args).faces == 900 and finish_options(args).formats == ("glb", "obj")
    preview = parser.parse_args(["preview", "x.png", "--views", "2", "--guidance", "4", "--reference-frame"])
    from backend.settings import overrides_from_args

    settings = settings_from_dict(PreviewSettings(), overrides_from_args(preview))
    assert (settings.num_views, settings.guidance_scale, settings.reference_frame) == (2, 4.0, True)


def test_a_preview_at_its_step_bound_runs(tiny_model):
    """The bound is real: 1000 DDIM steps failed with an IndexError (the schedule's offset reaches t = 1000)."""
    import torch

    from backend.diffusion.preview import run_preview
    from backend.events import Progress

    bound = setting_specs(PreviewSettings)["steps"].max
    events = run_preview(tiny_model, torch.zeros(1, 3, 256, 256), PreviewSettings(steps=bound, num_views=1))
    assert isinstance(next(events), Progress) and isinstance(next(events), Progress)
    events.close()


def addon_property_defaults() -> dict[tuple[str, str], object]:
    """(scene property group, property) -> its ``default=`` in blender_addon/properties.py, read from the source (bpy
    does not load next to torch in this process)."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).resolve().parents[1] / "blender_addon" / "properties.py").read_text())
    by_class, groups = {}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.annotation, ast.Call):  # name: XProperty(..)
                    for keyword in item.annotation.keywords:
                        if keyword.arg == "default":
                            by_class[(node.name, item.target.id)] = ast.literal_eval(keyword.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):  # bpy.types.Scene.NAME = Pointer..
            for keyword in node.value.keywords:
                if keyword.arg == "type" and isinstance(node.targets[0], ast.Attribute):
                    groups[keyword.value.id] = node.targets[0].attr
    return {(groups[cls], name): value for (cls, name), value in by_class.items() if cls in groups}


def addon_defaults_differing_from_the_backends(shared: bool) -> list[str]:
    """Where a property's starting value (shown before a backend answers) differs from the backend's default of the
    setting it is sent as; ``shared``: only the properties sent as settings of several job kinds, else the others."""
    from collections import Counter

    from backend.service.job_kinds import describe_job_settings
    from blender_addon.core.job_settings import FIELDS, ZERO_MEANS_PRESET

    finish = (("iso3d_finish", "faces", "faces"), ("iso3d_finish", "texture", "texture"),
              ("iso3d_finish", "size", "size"))  # what job_settings.finish_settings sends
    kinds = {**FIELDS, "finish": finish}
    uses = Counter((group, name) for fields in kinds.values() for group, name, _ in fields)
    backend, addon = describe_job_settings(), addon_property_defaults()
    differing = []
    for kind, fields in kinds.items():
        for group, name, key in fields:
            if (uses[(group, name)] > 1) != shared:
                continue
            if (kind, key) in ZERO_MEANS_PRESET:
                assert addon[(group, name)] == 0, name  # 0 = the preset's
                continue
            wanted = backend[kind][key]["default"]
            if (group, name) not in addon:
                differing.append(f"{kind} {key}: the add-on's property has no default (backend {wanted!r})")
                continue
            shown = addon[(group, name)]
            if isinstance(shown, str) and not isinstance(wanted, str):
                shown = type(wanted)(shown)  # an enum's item names are text (texture "1024")
            if shown != wanted:
                differing.append(f"{kind} {key}: add-on {shown!r}, backend {wanted!r}")
    return differing


def test_the_addon_starts_with_the_backends_defaults():
    """The add-on takes its defaults from ``welcome`` (blender_addon/core/job_settings.py); the values its properties
    start with are those same defaults, not a second set (the preview's guidance 5 and elevation 0 were)."""
    differing = addon_defaults_differing_from_the_backends(shared=False)
    assert not differing, differing


def test_a_property_sent_to_several_job_kinds_has_one_backend_default():
    differing = addon_defaults_differing_from_the_backends(shared=True)
    assert not differing, differing
