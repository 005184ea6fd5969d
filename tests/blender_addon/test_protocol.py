"""The wire protocol: round trips, limits and schema checks, with a clear code for every violation."""

from __future__ import annotations

import io
import json

import pytest

from blender_addon.core import protocol


def png(width=4, height=3) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def header(**fields) -> bytes:
    return json.dumps({"v": protocol.PROTOCOL_VERSION, **fields}).encode()


def test_submit_round_trip():
    frames = protocol.encode("submit", [protocol.png_payload(png())], kind="preview", settings={"steps": 3}, request="r1")
    message = protocol.decode(frames, "client")
    assert message.type == "submit" and message.get("settings") == {"steps": 3} and message.get("request") == "r1"
    assert message.payloads == [png()]


def test_mesh_round_trip_and_shape_checks():
    import numpy as np

    vertices = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    faces = np.array([[0, 1, 2], [2, 3, 4]], dtype="<i4")
    colours = np.full((5, 3), 200, np.uint8)
    payloads = [
        protocol.array_payload("<f4", [5, 3], vertices.tobytes()),
        protocol.array_payload("<i4", [2, 3], faces.tobytes()),
        protocol.array_payload("|u1", [5, 3], colours.tobytes()),
    ]
    message = protocol.decode(protocol.encode("mesh", payloads, job="j", step=3, final=False), "server")
    from blender_addon.core.client import decode_array

    assert np.array_equal(decode_array(message, 0), vertices)
    assert np.array_equal(decode_array(message, 1), faces)
    with pytest.raises(protocol.ProtocolError, match="colours"):
        short_colours = protocol.array_payload("|u1", [4, 3], colours[:4].tobytes())
        protocol.encode("mesh", payloads[:2] + [short_colours], job="j", step=1, final=False)


def test_a_finished_mesh_carries_corner_uvs_and_its_texture():
    import numpy as np

    from blender_addon.core.client import decode_array

    vertices = np.zeros((5, 3), np.float32)
    faces = np.array([[0, 1, 2], [2, 3, 4]], dtype="<i4")
    uvs = np.random.default_rng(1).random((2, 3, 2), dtype=np.float32)
    mesh = [
        protocol.array_payload("<f4", [5, 3], vertices.tobytes()),
        protocol.array_payload("<i4", [2, 3], faces.tobytes()),
        protocol.array_payload("|u1", [5, 3], bytes(15)),
    ]
    textured = mesh + [protocol.array_payload("<f4", [2, 3, 2], uvs.tobytes()), protocol.png_payload(png(8, 8))]
    message = protocol.decode(protocol.encode("mesh", textured, job="j", step=0, final=True, level=2), "server")
    assert message.get("level") == 2 and np.array_equal(decode_array(message, 3), uvs)
    assert protocol.png_size(message.payloads[4]) == (8, 8)
    wrong_uvs = mesh + [protocol.array_payload("<f4", [3, 3, 2], bytes(72)), protocol.png_payload(png())]
    with pytest.raises(protocol.ProtocolError, match="corner UVs"):
        protocol.encode("mesh", wrong_uvs, job="j", step=0, final=True)
    with pytest.raises(protocol.ProtocolError, match="optionally corner UVs"):  # UVs without the texture
        protocol.encode("mesh", textured[:4], job="j", step=0, final=True)


def test_only_a_finish_job_is_submitted_without_an_image():
    message = protocol.decode(protocol.encode("submit", [], kind="finish", settings={"source": "a" * 16}), "client")
    assert message.payloads == []
    with pytest.raises(protocol.ProtocolError, match="finish job carries no image"):
        protocol.encode("submit", [protocol.png_payload(png())], kind="finish", settings={})
    with pytest.raises(protocol.ProtocolError, match="exactly one PNG"):
        protocol.encode("submit", [], kind="generate", settings={})


@pytest.mark.parametrize(
    "frames, code",
    [
        ([], "bad_frames"),
        ([b"{}"] * 30, "bad_frames"),
        ([b"\xff\xfe"], "bad_header"),
        ([b"[1, 2]"], "bad_header"),
        ([b'{"v": 99, "type": "ping"}'], "bad_version"),
        ([header(type="launch_missiles")], "unknown_type"),
        ([header(type="welcome", server="x", model="m", device="d", trained=True)], "unknown_type"),
        ([header(type="cancel")], "bad_schema"),
        ([header(type="cancel", job=5)], "bad_schema"),
        ([header(type="ping", token="t", extra=1)], "bad_schema"),
        ([header(type="submit", kind="preview", settings={})], "bad_payload"),
        ([header(type="submit", kind="preview", settings={}, payloads=[{"kind": "png"}]), b"not a png"], "bad_payload"),
        ([header(type="submit", kind="teleport", settings={}, payloads=[{"kind": "png"}]), png()], "bad_schema"),
        ([header(type="ping", payloads=[{"kind": "png"}]), png()], "bad_payload"),
        ([b"x" * (protocol.MAX_HEADER_BYTES + 1)], "too_large"),
    ],
)
def test_violations_are_refused_with_a_code(frames, code):
    with pytest.raises(protocol.ProtocolError) as error:
        protocol.decode(frames, "client")
    assert error.value.code == code
    assert str(error.value)


def test_huge_image_is_refused_from_its_header_alone():
    fake = bytearray(png())
    fake[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")  # claims 20000 x 20000 pixels
    frames = [header(type="submit", kind="preview", settings={}, payloads=[{"kind": "png"}]), bytes(fake)]
    with pytest.raises(protocol.ProtocolError) as error:
        protocol.decode(frames, "client")
    assert error.value.code == "too_large"


def test_version_mismatch_names_both_versions():
    with pytest.raises(protocol.ProtocolError, match=f"version 7 .* version {protocol.PROTOCOL_VERSION}"):
        protocol.decode([b'{"v": 7, "type": "ping"}'], "client")


@pytest.mark.integration
def test_protocol_module_needs_only_the_standard_library():
    from tests.helpers.paths import REPO_ROOT
    from tests.helpers.processes import python, run

    code = (
        "import sys, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('protocol', 'blender_addon/core/protocol.py')\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['protocol'] = module\n"
        "spec.loader.exec_module(module)\n"
        "bad = [m for m in ('numpy', 'torch', 'zmq', 'bpy', 'PIL') if m in sys.modules]\n"
        "print(bad)\n"
    )
    result = run(python("-c", code), cwd=REPO_ROOT, timeout=600)
    assert result.stdout.strip() == "[]", result.stderr
