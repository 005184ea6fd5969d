"""Draws docs/images/data_path.png: the path from an image to a mesh in the Blender scene, one box a step.

The boxes name the modules that do each step (docs/architecture.md describes them); the input box shows the bundled
example image. Run: .venv/bin/python docs/images/make_data_path.py
"""

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "example.png"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

WIDTH, HEIGHT = 1600, 440
BACKGROUND = (250, 250, 248)
INK = (40, 40, 48)
MUTED = (110, 110, 120)
BACKEND = (225, 236, 250)  # steps that run in the GPU backend
WIRE = (250, 236, 214)  # the ZeroMQ wire
BLENDER = (226, 244, 228)  # steps inside Blender

STEPS = [
    ("image", "your image,\non white,\n256 x 256", BLENDER, "backend/imaging"),
    ("CLIP", "ViT-H/14 image\nembedding\n[1, 1024]", BACKEND, "image_encoder"),
    ("4 views", "multi-view DDIM\nwith guidance\n(seconds)", BACKEND, "diffusion/preview"),
    ("SDS loop", "hash-grid NeRF\noptimised by score\ndistillation", BACKEND, "nerf/trainer"),
    ("mesh", "marching cubes,\nvertex colours;\nfinish: UVs, texture", BACKEND, "mesh, finishing/"),
    ("wire", "one event,\none ZeroMQ\nmessage", WIRE, "service, protocol"),
    ("scene", "mesh updated\nin place in the\nBlender object", BLENDER, "blender_addon/"),
]


def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), size)


def main() -> None:
    sheet = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    title, body, small = font("DejaVuSans-Bold.ttf", 26), font("DejaVuSans.ttf", 17), font("DejaVuSansMono.ttf", 14)
    draw.text((40, 28), "Isotropic3D for Blender: from an image to a mesh in the scene", font=title, fill=INK)

    margin, gap = 40, 36
    box_width = (WIDTH - 2 * margin - gap * (len(STEPS) - 1)) // len(STEPS)
    top, bottom = 100, 370
    for index, (name, text, colour, module) in enumerate(STEPS):
        left = margin + index * (box_width + gap)
        draw.rounded_rectangle((left, top, left + box_width, bottom), radius=14, fill=colour, outline=INK, width=2)
        draw.text((left + box_width / 2, top + 22), name, font=title, fill=INK, anchor="mt")
        if index == 0:
            thumb = Image.open(EXAMPLE).convert("RGBA")
            thumb.thumbnail((box_width - 100, box_width - 100))
            white = Image.new("RGBA", thumb.size, (255, 255, 255, 255))
            thumb = Image.alpha_composite(white, thumb).convert("RGB")
            sheet.paste(thumb, (int(left + (box_width - thumb.width) / 2), top + 64))
            text_top = top + 76 + thumb.height
        else:
            text_top = top + 90
        draw.multiline_text((left + 14, text_top), text, font=body, fill=INK, spacing=6)
        draw.text((left + box_width / 2, bottom - 18), module, font=small, fill=MUTED, anchor="mb")
        if index < len(STEPS) - 1:
            y = (top + bottom) / 2
            x0, x1 = left + box_width + 5, left + box_width + gap - 5
            draw.line((x0, y, x1 - 8, y), fill=INK, width=4)
            draw.polygon([(x1, y), (x1 - 12, y - 9), (x1 - 12, y + 9)], fill=INK)

    legend = [(BLENDER, "Blender (bpy + pyzmq, no torch)"), (BACKEND, "GPU backend (iso3d serve)"), (WIRE, "ZeroMQ")]
    x = margin
    for colour, label in legend:
        draw.rounded_rectangle((x, 395, x + 26, 417), radius=5, fill=colour, outline=INK, width=1)
        draw.text((x + 36, 406), label, font=body, fill=INK, anchor="lm")
        x += 60 + int(draw.textlength(label, font=body))
    sheet.save(HERE / "data_path.png", optimize=True)


if __name__ == "__main__":
    main()
