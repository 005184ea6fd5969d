"""The renderer's bpy-free plan: cameras equal the model core's, views and lighting are seeded, settings checked."""

import numpy as np
import pytest

from backend.diffusion.cameras import camera_to_world as backend_camera_to_world
from blender_addon.core.render_plan import (
    RenderSettings,
    RenderSettingsError,
    camera_to_world,
    expected_files,
    plan_object,
)

HDRIS = ["forest.exr", "city.exr", "studio.exr"]


@pytest.mark.parametrize("distance", [1.0, 1.5, 3.7])
def test_camera_to_world_equals_the_model_core(distance):
    for elevation in (-60.0, -10.0, 0.0, 12.5, 30.0, 89.0):
        for azimuth in (0.0, 22.5, 90.0, 137.0, 180.0, 270.0, 359.0, -45.0):
            ours = camera_to_world(elevation, azimuth, distance)
            theirs = backend_camera_to_world(elevation, azimuth, distance)[0].numpy()
            np.testing.assert_allclose(ours, theirs, atol=1e-12)


def test_azimuth_zero_looks_from_minus_y_and_ninety_from_plus_x():
    np.testing.assert_allclose(camera_to_world(0.0, 0.0, 1.5)[:3, 3], [0.0, -1.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(camera_to_world(0.0, 90.0, 2.0)[:3, 3], [2.0, 0.0, 0.0], atol=1e-12)
    c2w = camera_to_world(30.0, 45.0, 1.5)
    # The camera looks along its local -Z, towards the origin.
    np.testing.assert_allclose(-c2w[:3, 2], -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-12)


def test_plan_has_the_papers_view_sets_and_is_seeded():
    settings = RenderSettings()
    plan = plan_object(settings, "chair", HDRIS)
    fixed = [v for v in plan.views if v.view_set == "fixed"]
    random = [v for v in plan.views if v.view_set == "random"]
    assert [v.azimuth_deg for v in fixed] == pytest.approx([k * 22.5 for k in range(16)])
    assert all(v.elevation_deg == 30.0 and v.distance == 1.5 for v in fixed)
    assert len(random) == 16 and all(-10.0 <= v.elevation_deg <= 40.0 for v in random)
    assert len({round(v.elevation_deg, 6) for v in random}) == 16
    assert plan == plan_object(settings, "chair", list(reversed(HDRIS)))  # order of the HDRI list is irrelevant
    assert plan != plan_object(settings, "table", HDRIS)
    assert plan != plan_object(RenderSettings(seed=1), "chair", HDRIS)
    assert settings.hdri_strength_min <= plan.hdri_strength <= settings.hdri_strength_max
    assert expected_files(settings)[:2] == ["fixed_000.png", "fixed_001.png"]
    assert expected_files(settings)[-1] == "cameras.json" and len(expected_files(settings)) == 33


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"resolution": 0}, "resolution"),
        ({"fixed_views": 0, "random_views": 0}, "fixed_views + random_views"),
        ({"random_elevation_min_deg": 50.0}, "random elevation range"),
        ({"fixed_elevation_deg": 90.0}, "fixed_elevation_deg"),
        ({"background": "green"}, "background"),
        ({"engine": "workbench"}, "engine"),
        ({"distance": -1.0}, "distance"),
    ],
)
def test_bad_settings_are_refused_with_the_settings_name(changes, named):
    with pytest.raises(RenderSettingsError, match=named.replace("+", r"\+")):
        RenderSettings(**changes)
    with pytest.raises(RenderSettingsError, match="unknown render setting"):
        RenderSettings.from_dict({"resolutoin": 64})
