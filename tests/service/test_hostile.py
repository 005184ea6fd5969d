"""The service holds against any message (issue 14, item 1 and 3): every reported trigger and a generated hostile
corpus get an ``error`` reply, and the service answers a ``ping`` after each, quickly, against an in-process
server on a real loopback ZeroMQ socket."""

from __future__ import annotations

import io
import json
import random
import statistics
import time
import zlib
import struct

import pytest
from PIL import Image

from blender_addon.core import protocol
from tests.helpers.backend import EXAMPLE_PNG

pytestmark = pytest.mark.integration


def raw_header(fields: dict | str) -> list[bytes]:
    """A client message built by hand (not through ``protocol.encode``, which refuses what a hostile client sends)."""
    text = fields if isinstance(fields, str) else json.dumps({"v": 1, **fields})
    return [text.encode("utf-8")]


def submit_frames(settings_json: str, kind: str = "preview", image: bytes | None = EXAMPLE_PNG) -> list[bytes]:
    payloads = ',"payloads":[{"kind":"png"}]' if image is not None else ""
    header = f'{{"v":1,"type":"submit","kind":"{kind}","settings":{settings_json}{payloads}}}'
    return [header.encode("utf-8")] + ([image] if image is not None else [])


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG of ``width`` x ``height`` black pixels, a few KB of zlib (a decompression bomb)."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(height)), 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return protocol.PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def answer(client, timeout: float = 60.0):
    """The direct answer to the last request (an error, accepted, welcome, jobs or pong)."""
    return client.wait_for(lambda m: m.type in ("error", "accepted", "welcome", "jobs", "pong"), timeout)


def ping_time(client, token: str, timeout: float = 30.0) -> float:
    """Seconds until the server answers a ping (other messages arriving meanwhile are skipped)."""
    started = time.monotonic()
    client.ping(token)
    client.wait_for(lambda m: m.type == "pong" and m.get("token") == token, timeout)
    return time.monotonic() - started


REPORTED_TRIGGERS = [  # issue 14, item 1: each ended the service (exit 1) before
    ("header nested 1,000 levels", raw_header('{"v":1,"type":"ping","token":' + "[" * 1000 + "]" * 1000 + "}"),
     "bad_header"),
    ("400-digit preview guidance", submit_frames('{"guidance_scale":' + "9" * 400 + "}"), "bad_settings"),
    ("400-digit legacy preview guidance", submit_frames('{"guidance":' + "9" * 400 + "}"), "bad_settings"),
    ("400-digit finish size", submit_frames('{"source":"0123456789abcdef","size":' + "9" * 400 + "}", "finish", None),
     "bad_settings"),
    ("Infinity mesh.resolution", submit_frames('{"mesh.resolution":Infinity}', "generate"), "bad_settings"),
    ("NaN generate option", submit_frames('{"options":{"mesh.resolution":NaN}}', "generate"), "bad_settings"),
    ("steps 10**400", submit_frames('{"steps":1' + "0" * 400 + "}"), "bad_settings"),
    ("4,100-character setting name", submit_frames(json.dumps({"x" * 4100: 1})), "bad_settings"),
    ("huge mesh.resolution", submit_frames('{"mesh.resolution":2048}', "generate"), "bad_settings"),
    ("rays per step", submit_frames('{"phases.resolution_after":1024,"phases.objects_after":8}', "generate"),
     "bad_settings"),
]


@pytest.fixture
def hostile_server(serve_in_process, connect):
    server = serve_in_process()
    client = connect(server.address)
    client.hello()
    welcome = client.wait_for(lambda m: m.type == "welcome", 120)
    return server, client, welcome


def test_welcome_carries_every_setting_with_its_default_and_bounds(hostile_server):
    _, _, welcome = hostile_server
    settings = welcome.get("settings")
    assert set(settings) == {"preview", "generate", "finish"}
    resolution = dict(settings["generate"]["mesh.resolution"])
    assert resolution.pop("help").startswith("final mesh: marching-cubes grid cells per axis")
    assert resolution == {"type": "int", "default": 256, "min": 8, "max": 1024, "choices": None}
    assert settings["preview"]["guidance_scale"]["default"] == 10.0
    assert settings["generate"]["preset"]["choices"] == ["reference", "fast", "draft", "tiny"]
    assert settings["finish"]["texture"]["max"] == 4096  # the service streams textures up to this
    for kind in settings.values():
        for entry in kind.values():
            assert set(entry) == {"type", "default", "min", "max", "choices", "help"}
            assert entry["type"] in ("int", "float", "bool", "str", "choice")


@pytest.mark.parametrize("name, frames, code", REPORTED_TRIGGERS, ids=[t[0] for t in REPORTED_TRIGGERS])
def test_each_reported_trigger_is_answered_and_the_service_goes_on(hostile_server, name, frames, code):
    server, client, _ = hostile_server
    client.send(frames)
    error = answer(client)
    assert error.type == "error" and error.get("code") == code, error.fields
    assert len(error.get("message")) <= protocol.MAX_TEXT
    assert ping_time(client, "after") < 30  # answered at all: the loop survived
    assert server.thread.is_alive()
    assert not list((server.data / "jobs").iterdir())  # refused at submit: nothing stored


def test_an_oversized_frame_is_answered_too_large(hostile_server):
    _, client, _ = hostile_server
    client.send([protocol.encode("ping")[0], b"\0" * (protocol.MAX_PAYLOAD_BYTES + 1)])
    error = answer(client)
    assert error.get("code") == "too_large"
    assert ping_time(client, "after") < 30


def hostile_value(rng: random.Random, depth: int = 0):
    """Extreme numbers, deep nesting, long and non-ASCII strings, wrong types."""
    choice = rng.randrange(9)
    if choice == 0:
        return rng.choice([10**400, -(10**400), 2**63, -1, 0, 1e308, -1e308, 5e-324])
    if choice == 1:
        return rng.choice([float("inf"), float("-inf"), float("nan")])
    if choice == 2:
        return "é" * rng.choice([1, 300, 4000]) + "\u202e\x00"
    if choice == 3 and depth < 30:
        return [hostile_value(rng, depth + 1)]
    if choice == 4 and depth < 30:
        return {"k": hostile_value(rng, depth + 1)}
    return rng.choice([None, True, False, "", "1e999", "nan", "15,60,90", [1, 2], {}, 3.5, 7])


def hostile_messages(rng: random.Random, count: int):
    kinds = ("preview", "generate", "finish")
    keys = ("steps", "guidance_scale", "num_views", "seed", "mesh.resolution", "run.steps", "cameras.fovy_range",
            "faces", "texture", "lods", "size", "formats", "source", "preset", "options", "ü" * 50, "")
    small_bomb = bomb_png(3000, 3000)  # 9 MP: within the cap, decoded and downscaled off the loop
    big_bomb = bomb_png(6000, 6000)  # 36 MP: over the service's cap, refused from its header
    truncated = EXAMPLE_PNG[: len(EXAMPLE_PNG) // 2]
    for index in range(count):
        kind = rng.choice(kinds)
        settings = {rng.choice(keys): hostile_value(rng) for _ in range(rng.randint(1, 3))}
        if kind == "finish":
            settings.setdefault("source", "0123456789abcdef")
        header = {"v": 1, "type": "submit", "kind": kind, "settings": settings, "name": hostile_value(rng)}
        image = None if kind == "finish" else rng.choice([EXAMPLE_PNG, truncated, small_bomb, big_bomb,
                                                          b"\x89PNG\r\n\x1a\n" + b"\xff" * 40])
        if image is not None:
            header["payloads"] = [{"kind": "png"}]
        text = json.dumps(header, allow_nan=True)
        if rng.random() < 0.1:
            text = text[: rng.randrange(len(text))]  # truncated header
        yield index, [text.encode("utf-8"), *([image] if image is not None else [])]


def test_hostile_corpus_gets_errors_and_pings_stay_fast(hostile_server):
    server, client, _ = hostile_server
    rng = random.Random(14)
    latencies = []
    for index, frames in hostile_messages(rng, 150):
        client.send(frames)
        reply = answer(client)
        assert reply.type in ("error", "accepted"), reply.fields
        if reply.type == "accepted":  # a valid job slipped through: cancel it so the queue stays short
            client.cancel(reply.get("job"))
        else:
            assert len(reply.get("message")) <= protocol.MAX_TEXT
        latencies.append(ping_time(client, str(index)))
    assert server.thread.is_alive()
    # A ping is answered by the loop between messages; a loaded 2-core machine adds scheduling delays, so the
    # median is held to the 100 ms target and the slowest to 1 s (one stalled decode took 5.9 s before the fix).
    print(f"ping: median {statistics.median(latencies) * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms")
    assert statistics.median(latencies) < 0.1, latencies
    assert max(latencies) < 1.0, sorted(latencies)[-5:]


def test_a_bomb_image_within_the_protocol_is_refused_from_its_header(hostile_server):
    server, client, _ = hostile_server
    client.submit("preview", bomb_png(8000, 8000), {"steps": 1})
    error = answer(client)
    assert error.get("code") == "too_large" and "8000x8000" in error.get("message")
    assert not list((server.data / "jobs").iterdir())


def test_ping_is_answered_fast_while_a_large_image_is_decoded(hostile_server):
    server, client, _ = hostile_server
    image = Image.new("RGBA", (4000, 4000), (200, 30, 30, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    client.submit("preview", buffer.getvalue(), {"steps": 1})
    latencies = [ping_time(client, f"p{i}") for i in range(10)]
    accepted = client.wait_for(lambda m: m.type in ("accepted", "error"), 120)
    assert accepted.type == "accepted", accepted.fields
    stored = Image.open(server.data / "jobs" / accepted.get("job") / "input.png")
    assert stored.size == (1024, 1024)  # stored downscaled to --stored_input_side
    # the decode runs in a worker thread; the loop still answers (median under the 100 ms target; see above)
    print(f"ping: median {statistics.median(latencies) * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms")
    assert statistics.median(latencies) < 0.1, latencies


def test_ping_is_answered_fast_during_a_generate_job(hostile_server):
    server, client, _ = hostile_server
    client.submit("generate", EXAMPLE_PNG, {"preset": "tiny", "run.steps": 500, "run.mesh_every": 0,
                                            "run.views_every": 0, "phases.resolution_before": 24,
                                            "phases.resolution_after": 24})
    job = client.wait_for(lambda m: m.type in ("accepted", "error"), 60).get("job")
    client.wait_for(lambda m: m.type == "progress" and m.get("job") == job and m.get("step", 0) >= 1, 300)
    latencies = [ping_time(client, f"g{i}") for i in range(20)]
    client.cancel(job)
    cancelled = client.wait_for(lambda m: m.type == "error" and m.get("job") == job, 300)
    # "state saved in <data>/jobs/...": no absolute server path in what a client reads
    assert cancelled.get("code") == "cancelled" and "<data>/jobs/" in cancelled.get("message")
    assert str(server.data.resolve()) not in cancelled.get("message")
    # the job runs in the same process (its own thread), so the GIL is shared: still the median under 100 ms
    print(f"ping: median {statistics.median(latencies) * 1e3:.1f} ms, max {max(latencies) * 1e3:.1f} ms")
    assert statistics.median(latencies) < 0.1, latencies
