"""View3D sidebar tab "Isotropic3D". This file holds the tab's panels; "Render training views" is one of them."""

import bpy

from .preferences import output_folder


class ISO3D_PT_render_training_views(bpy.types.Panel):
    bl_label = "Render training views"
    bl_idname = "ISO3D_PT_render_training_views"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Isotropic3D"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        properties = context.scene.iso3d_render
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(properties, "grouping")
        column = layout.column(align=True)
        column.prop(properties, "resolution")
        column.prop(properties, "fixed_views")
        column.prop(properties, "fixed_elevation")
        column.prop(properties, "random_views")
        row = column.row(align=True)
        row.prop(properties, "random_elevation_min")
        row.prop(properties, "random_elevation_max")
        column.prop(properties, "distance")
        column.prop(properties, "fov")
        column = layout.column(align=True)
        column.prop(properties, "background")
        column.prop(properties, "engine")
        column.prop(properties, "device")
        column.prop(properties, "samples")
        column.prop(properties, "denoise")
        column.prop(properties, "seed")
        layout.label(text=f"Output: {output_folder(context)}", icon="FILE_FOLDER")
        layout.operator("iso3d.render_training_views", icon="RENDER_STILL")


def register():
    bpy.utils.register_class(ISO3D_PT_render_training_views)


def unregister():
    bpy.utils.unregister_class(ISO3D_PT_render_training_views)
