"""Per-scene settings of a generation (``scene.iso3d_generate``), of finishing a generated object
(``scene.iso3d_finish``) and the state of the scene's job (``scene.iso3d_job``).

The job state lives in the scene so that it is saved with the file: reopening the file (or reloading the add-on)
finds the job id and re-attaches to the backend.
"""

import bpy

PRESETS = [
    ("fast", "Fast", "Fewer steps, good results (the default)"),
    ("draft", "Draft", "The quickest rough result"),
    ("reference", "Reference", "The paper's settings (slow)"),
    ("tiny", "Tiny", "CPU-sized settings for tests and the tiny model"),
]


class Isotropic3DGenerateProperties(bpy.types.PropertyGroup):
    image_source: bpy.props.EnumProperty(
        name="Image",
        items=[
            ("FILE", "File", "An image file on disk"),
            ("IMAGE", "Image", "An Image datablock of this file"),
            ("EMPTY", "Active image empty", "The image shown by the active image empty"),
        ],
        default="FILE",
    )
    image_path: bpy.props.StringProperty(name="File", description="The input image", subtype="FILE_PATH")
    image: bpy.props.PointerProperty(name="Image", type=bpy.types.Image, description="The input image")
    preset: bpy.props.EnumProperty(name="Preset", items=PRESETS, default="fast")
    steps: bpy.props.IntProperty(name="Steps", description="SDS steps of a generation; 0 = the preset's",
                                 default=0, min=0, max=100_000)
    preview_steps: bpy.props.IntProperty(name="Preview steps", description="Denoising steps of the preview",
                                         default=50, min=1, max=1000)
    seed: bpy.props.IntProperty(name="Seed", description="Same seed, same result", default=22, min=0)
    guidance: bpy.props.FloatProperty(name="Guidance", description="Classifier-free guidance scale of the preview",
                                      default=10.0, min=0.0, max=100.0)
    sds_guidance: bpy.props.FloatProperty(name="SDS guidance",
                                          description="Guidance scale of the generation; 0 = the preset's",
                                          default=0.0, min=0.0, max=200.0)
    elevation: bpy.props.FloatProperty(name="Elevation", description="Elevation of the preview views (degrees)",
                                       default=15.0, min=-89.0, max=89.0)
    mesh_every: bpy.props.IntProperty(name="Mesh every",
                                      description="Stream an intermediate mesh every N steps; 0 = the preset's",
                                      default=0, min=0, max=100_000)
    options: bpy.props.StringProperty(
        name="Options",
        description='Advanced settings as JSON, {"section.name": value} (see backend/nerf/presets.py)',
        default="",
    )
    result_object: bpy.props.PointerProperty(
        name="Result object", type=bpy.types.Object,
        description="The object whose mesh the generation replaces; empty = a new object",
    )


TEXTURE_SIZES = [(str(size), f"{size} px", f"A {size}x{size} baked albedo texture") for size in
                 (256, 512, 1024, 2048, 4096)]


class Isotropic3DFinishProperties(bpy.types.PropertyGroup):
    """Settings of the Finish section (face budget, texture, LODs); the backend re-runs them from the saved field."""

    faces: bpy.props.IntProperty(name="Faces", description="Face budget of the finished mesh", default=20000,
                                 min=1, soft_min=100, max=10_000_000)
    texture: bpy.props.EnumProperty(name="Texture", description="Size of the baked albedo texture",
                                    items=TEXTURE_SIZES, default="1024")
    lods: bpy.props.StringProperty(
        name="LODs", description="Further face budgets, comma-separated (e.g. 5000,1000); empty = none", default="")
    lod_layout: bpy.props.EnumProperty(
        name="LODs as",
        items=[("CHILDREN", "Children", "Hidden child objects of the finished object"),
               ("COLLECTION", "Collection", "Visible objects side by side in a '<object> LODs' collection")],
        default="CHILDREN",
    )
    size: bpy.props.FloatProperty(name="Size", description="Largest side of the finished mesh (object space)",
                                  default=1.0, min=0.001, max=1000.0, subtype="DISTANCE")
    after_generate: bpy.props.BoolProperty(
        name="Finish after Generate", default=False,
        description="When a generation is done, finish its object at once with these settings")


class Isotropic3DJobState(bpy.types.PropertyGroup):
    connection: bpy.props.EnumProperty(
        name="Connection",
        items=[
            ("OFFLINE", "Not connected", "", "UNLINKED", 0),
            ("CONNECTING", "Connecting", "", "TIME", 1),
            ("CONNECTED", "Connected", "", "LINKED", 2),
            ("LOST", "Connection lost", "", "ERROR", 3),
        ],
        default="OFFLINE",
    )
    server: bpy.props.StringProperty(name="Server", description="What the backend said about itself")
    job_id: bpy.props.StringProperty(name="Job", description="The backend's id of the current job")
    job_kind: bpy.props.StringProperty(name="Kind")
    request: bpy.props.StringProperty(name="Request", description="Id of a submission not yet accepted")
    state: bpy.props.StringProperty(name="State", description="queued, running, done, failed or cancelled")
    phase: bpy.props.StringProperty(name="Phase")
    step: bpy.props.IntProperty(name="Step")
    total: bpy.props.IntProperty(name="Total")
    position: bpy.props.IntProperty(name="Queue position")
    eta: bpy.props.FloatProperty(name="ETA", description="Seconds left; negative = unknown", default=-1.0)
    last_error: bpy.props.StringProperty(name="Last error")
    note: bpy.props.StringProperty(name="Note", description="What the finished job adapted, in words (e.g. a face "
                                   "budget above the surface: kept whole)")
    object_name: bpy.props.StringProperty(name="Object", description="The object the job's meshes go to")
    target: bpy.props.FloatVectorProperty(name="Target", description="Where the preview views are placed around",
                                          size=3, subtype="TRANSLATION")
    mesh_updates: bpy.props.IntProperty(name="Mesh updates")
    lod_levels: bpy.props.IntProperty(name="LOD levels", description="LODs the current finish job delivered")
    artifacts: bpy.props.StringProperty(name="Artifacts", description="Result files (JSON name -> path)")
    seed: bpy.props.IntProperty(name="Seed", description="The seed the job was sent with (Generate from this seed)")

    @property
    def active(self) -> bool:
        return bool(self.job_id) and self.state in ("", "queued", "running")


CLASSES = (Isotropic3DGenerateProperties, Isotropic3DFinishProperties, Isotropic3DJobState)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.iso3d_generate = bpy.props.PointerProperty(type=Isotropic3DGenerateProperties)
    bpy.types.Scene.iso3d_finish = bpy.props.PointerProperty(type=Isotropic3DFinishProperties)
    bpy.types.Scene.iso3d_job = bpy.props.PointerProperty(type=Isotropic3DJobState)


def unregister():
    del bpy.types.Scene.iso3d_job
    del bpy.types.Scene.iso3d_finish
    del bpy.types.Scene.iso3d_generate
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
