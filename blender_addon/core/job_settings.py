"""The settings a job sends: only what the artist changed; everything else is the backend's default.

The backend owns every default and bound (one definition, in its settings dataclasses). Its ``welcome`` may carry
them as ``settings: {kind: {wire_key: {"type", "default", "min", "max", "choices", "help"}}}``; the add-on then
shows those defaults in the panel (``apply_backend_defaults``) and sends a setting only when its value differs from
the backend's default. With a backend that does not send them, a setting is sent only when the artist set it
(``is_property_set``): untouched ones stay out of the job, so the backend's defaults apply either way.

Wire keys are the backend's names (dotted for nested settings, e.g. ``guidance.guidance_scale``); the properties'
units are the wire's (degrees, steps, faces, pixels, object-space units).
"""

from __future__ import annotations

from .face_budgets import parse_face_budgets

# kind -> (scene property group, property, wire key: the field names of the backend's settings dataclasses,
# ``section.name`` for a generation's).
FIELDS = {
    "preview": (("iso3d_generate", "preview_steps", "steps"), ("iso3d_generate", "seed", "seed"),
                ("iso3d_generate", "guidance", "guidance_scale"), ("iso3d_generate", "elevation", "elevation")),
    "generate": (("iso3d_generate", "preset", "preset"), ("iso3d_generate", "seed", "run.seed"),
                 ("iso3d_generate", "steps", "run.steps"), ("iso3d_generate", "mesh_every", "run.mesh_every"),
                 ("iso3d_generate", "sds_guidance", "guidance.guidance_scale")),
}
# A generation's defaults are its preset's, so these are shown as 0 = "the preset's" (never the default preset's
# value from welcome) and sent only when not 0.
ZERO_MEANS_PRESET = {("generate", "run.steps"), ("generate", "run.mesh_every"), ("generate", "guidance.guidance_scale")}
DEFAULTS_PROPERTY = "iso3d_backend_defaults"  # on the scene: "kind:wire key" -> the default shown in the panel
FLOAT_TOLERANCE = 1e-6  # a float property holds the default through a float32: equal within this is unchanged


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= FLOAT_TOLERANCE * max(1.0, abs(float(b)))
        except (TypeError, ValueError):
            return False
    return a == b


def changed_settings(scene, kind: str) -> dict:
    """wire key -> value for the settings of ``kind`` that the artist changed (see the module docstring)."""
    shown = scene.get(DEFAULTS_PROPERTY, {})
    result = {}
    for group_name, name, key in FIELDS.get(kind, ()):
        group = getattr(scene, group_name)
        value = getattr(group, name)
        if (kind, key) in ZERO_MEANS_PRESET:
            if value:
                result[key] = value
            continue
        default_key = f"{kind}:{key}"
        if default_key in shown:
            if not _same(value, shown[default_key]):
                result[key] = value
        elif group.is_property_set(name):
            result[key] = value
    return result


def apply_backend_defaults(scene, settings: dict) -> None:
    """Show the backend's defaults (from ``welcome``) in the settings the artist has not changed."""
    shown = dict(scene.get(DEFAULTS_PROPERTY, {}))
    changed = {kind: changed_settings(scene, kind) for kind in FIELDS}
    for kind, fields in FIELDS.items():
        specs = settings.get(kind) or {}
        for group_name, name, key in fields:
            spec = specs.get(key)
            if (kind, key) in ZERO_MEANS_PRESET or not isinstance(spec, dict) or "default" not in spec or (
                    key in changed[kind]):
                continue
            group = getattr(scene, group_name)
            prop = group.bl_rna.properties[name]
            default = spec["default"]
            try:
                if prop.type == "ENUM":
                    if default not in prop.enum_items.keys():
                        continue
                elif prop.type == "INT":
                    default = min(max(int(default), prop.hard_min), prop.hard_max)
                elif prop.type == "FLOAT":
                    default = min(max(float(default), prop.hard_min), prop.hard_max)
                setattr(group, name, default)
            except (TypeError, ValueError):
                continue  # a default this property cannot hold: leave it to the backend
            shown[f"{kind}:{key}"] = getattr(group, name)
    scene[DEFAULTS_PROPERTY] = shown


def finish_settings(properties, source_job: str) -> dict:
    """The ``finish`` job's settings from the Finish section's properties (sizes in object-space units);
    ValueError in words for LOD budgets that are not whole numbers."""
    return {"source": source_job, "faces": int(properties.faces), "texture": int(properties.texture),
            "lods": parse_face_budgets(properties.lods), "size": float(properties.size), "formats": ["glb"]}
