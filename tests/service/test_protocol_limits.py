"""The protocol's own limits (blender_addon/core/protocol.py): nesting refused before parsing, texts cut to the limit, and
the fetch/chunk messages."""

from __future__ import annotations

import pytest

from blender_addon.core import protocol


@pytest.mark.parametrize("text, depth", [
    ('{"a": 1}', 1), ('{"a": [1, {"b": "[[[{{{"}]}', 3), ('"\\"[\\""', 0), ("[" * 900 + "]" * 900, 900),
])
def test_json_depth_counts_brackets_outside_strings(text, depth):
    assert protocol.json_depth(text) == depth


def test_a_deep_header_is_refused_before_it_is_parsed():
    # 20,000 levels (40 KB, under the header limit): json.loads would raise RecursionError from about 1,000
    deep = '{"v":1,"type":"ping","token":' + "[" * 20_000 + "]" * 20_000 + "}"
    with pytest.raises(protocol.ProtocolError, match="nested deeper than 16") as error:
        protocol.decode([deep.encode()], "client")
    assert error.value.code == "bad_header"
    fine = '{"v":1,"type":"submit","kind":"finish","settings":{"options":{"mesh.resolution":64}}}'
    assert protocol.decode([fine.encode()], "client").get("settings") == {"options": {"mesh.resolution": 64}}


def test_error_texts_are_cut_to_the_limit_so_the_reply_stays_valid():
    frames = protocol.error_frames("bad_settings", "unknown setting " + "x" * 10_000, None)
    message = protocol.decode(frames, "server")
    assert len(message.get("message")) == protocol.MAX_TEXT and message.get("message").endswith("...")


def test_fetch_and_chunk():
    fetch = protocol.decode(protocol.encode("fetch", job="a" * 16, name="asset.glb", offset=4), "client")
    assert (fetch.get("name"), fetch.get("offset")) == ("asset.glb", 4)
    chunk = protocol.encode("chunk", [({"kind": "bytes"}, b"glTF")], job="a" * 16, name="asset.glb", offset=0,
                            size=4, final=True)
    assert protocol.decode(chunk, "server").payloads == [b"glTF"]
    with pytest.raises(protocol.ProtocolError, match="one bytes payload"):
        protocol.encode("chunk", [({"kind": "bytes"}, b"\0" * (protocol.FETCH_CHUNK_BYTES + 1))], job="a" * 16,
                        name="x", offset=0, size=1, final=False)
    with pytest.raises(protocol.ProtocolError, match="carries no payloads"):
        protocol.decode([b'{"v":1,"type":"ping","payloads":[{"kind":"bytes"}]}', b"x"], "client")
