"""Asset finishing: a finished (or intermediate) job's saved field -> a game-ready asset, without redoing SDS.

Stages, one module each, run in this order by ``pipeline.finish_job``:
``job_field`` (load the field) -> ``surface`` (marching cubes at a chosen grid and density threshold) ->
``cleanup`` (floaters, small holes, outward normals) -> ``decimate`` (quadric error to a face budget) ->
``uv_unwrap`` (xatlas) -> ``texture_bake`` (albedo per texel, dilated) -> ``placement`` (Blender upright, at the
origin, chosen size) -> ``asset_export`` (GLB with PBR material, OBJ+MTL+PNG, PLY). LODs repeat the last four
stages for several face budgets. Geometry is in Blender's Z-up world until export.
"""
