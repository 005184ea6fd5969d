"""THE wire protocol between the Blender add-on and the backend (standard library only; both sides import it).

ZeroMQ multipart messages: the backend binds a ROUTER, each Blender instance connects a DEALER. Frame 0 is a UTF-8
JSON header ``{"v": PROTOCOL_VERSION, "type": ..., ...}``; the frames after it are the binary payloads that the
header's ``payloads`` list describes, in order: ``{"kind": "png"}`` (PNG bytes) or ``{"kind": "array", "dtype":
"<f4"|"<i4"|"|u1", "shape": [...]}`` (little-endian, C order).

Client -> backend: hello, submit (job spec + input image PNG; a ``finish`` job, which works on an earlier
generate job's field, carries no image), cancel, attach, resume (a cancelled generate job, which saved its state:
back into the queue, on from its saved step; answered like a submit: ``accepted`` with its ``request``), list,
ping, fetch (a job's result file by name, from ``offset``), prune (admin: delete finished jobs older than
``keep_days`` and/or the oldest until the jobs take ``max_data_gb``; answered with ``jobs``, the jobs that remain).
Backend -> client: welcome, accepted, progress, views (PNG per view + cameras), mesh (vertices f4 [V,3], faces
i4 [F,3], vertex colours u1 [V,3]; a finished asset adds corner UVs f4 [F,3,2] (v up) and its baked texture as
PNG, and ``level``: 0 main, i the i-th LOD), done (artifacts by ``name`` and ``size`` in bytes; ``path`` only
from a loopback backend, where the client shares the file system; ``note``: what was adapted, in words), error,
jobs (the answer to list; a job that cannot be read or resumed has status ``damaged`` or ``needs_model`` and a
``reason``; ``resumable`` says whether ``resume`` would take it), pong, chunk (one piece of a
fetched file: ``offset``, ``size`` = the file's total bytes, ``final``; one ``bytes`` payload of at most
FETCH_CHUNK_BYTES; fetch again from ``offset + len(payload)`` until ``final``).

``welcome`` may carry ``settings``: the backend's defaults and bounds of each job kind,
``{kind: {wire_key: {"type": "int"|"float"|"bool"|"str"|"choice", "default": v, "min": v|null, "max": v|null,
"choices": [..]|null, "help": "short text"}}}`` for kind preview/generate/finish. Wire keys are the field names
of the backend's settings dataclasses, dotted for nested ones (``mesh.resolution``); a sequence setting is "str"
(comma-separated, e.g. ``"15,60"``; a JSON list is accepted too); a null default means "decided by the backend"
(e.g. the model's own camera encoding). A client sends only what the user changed; the rest takes these defaults.
A generate job's ``preset`` picks the base the other generate defaults come from. ``welcome`` may carry ``warmup``:
``off``, ``running`` (jobs wait behind it and see ``progress`` with phase ``warmup: generate``, a few SDS steps,
then ``warmup``, the preview path), ``ready`` or ``failed``.

``decode`` checks every limit and the header schema and raises ``ProtocolError`` (with a short ``code``) on any
violation, so a receiver can answer with an ``error`` message and go on. Angles are degrees; camera matrices are
camera-to-world, row-major 16 floats, Blender Z-up.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field

PROTOCOL_VERSION = 1

MAX_FRAMES = 20
MAX_HEADER_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16  # nesting of objects/lists in a header (a deeper one is refused before it is parsed)
MAX_TEXT = 4096  # characters of any string field; error messages are cut to this
FETCH_CHUNK_BYTES = 4 * 1024 * 1024  # one ``chunk`` payload, far under the frame limit
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024  # one frame
MAX_MESSAGE_BYTES = 192 * 1024 * 1024  # all frames
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_ARRAY_ELEMENTS = 3 * 8_000_000  # 8 M vertices or faces
JOB_KINDS = ("preview", "generate", "finish")
IMAGELESS_JOB_KINDS = ("finish",)  # jobs that work on an earlier job's result, not on an input image
ARRAY_DTYPES = {"<f4": 4, "<i4": 4, "|u1": 1}
PAYLOAD_KINDS = ("png", "array", "bytes")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_STR, _INT, _NUM, _BOOL, _DICT, _LIST = str, int, (int, float), bool, dict, list
# type -> (required fields, optional fields), each field -> accepted Python type(s)
SCHEMA: dict[str, tuple[dict, dict]] = {
    # client -> backend
    "hello": ({"client": _STR}, {"version": _STR}),
    "submit": ({"kind": _STR, "settings": _DICT}, {"request": _STR, "name": _STR}),
    "cancel": ({"job": _STR}, {}),
    "attach": ({"job": _STR}, {}),
    "resume": ({"job": _STR}, {"request": _STR}),
    "list": ({}, {}),
    "ping": ({}, {"token": _STR}),
    "fetch": ({"job": _STR, "name": _STR}, {"offset": _INT, "request": _STR}),
    "prune": ({}, {"keep_days": _NUM, "max_data_gb": _NUM}),
    # backend -> client
    "welcome": ({"server": _STR, "model": _STR, "device": _STR, "trained": _BOOL},
                {"free_memory": _INT, "jobs": _LIST, "settings": _DICT, "warmup": _STR}),
    "accepted": ({"job": _STR, "kind": _STR, "position": _INT}, {"request": _STR}),
    "progress": ({"job": _STR, "phase": _STR, "step": _INT, "total": _INT},
                 {"elapsed": _NUM, "eta": _NUM, "losses": _DICT, "position": _INT}),
    "views": ({"job": _STR, "kind": _STR, "elevations": _LIST, "azimuths": _LIST, "c2w": _LIST}, {"step": _INT}),
    "mesh": ({"job": _STR, "step": _INT, "final": _BOOL}, {"level": _INT}),
    "done": ({"job": _STR, "artifacts": _LIST}, {"note": _STR}),
    "error": ({"code": _STR, "message": _STR}, {"job": (str, type(None))}),
    "jobs": ({"jobs": _LIST}, {}),
    "pong": ({}, {"token": _STR}),
    "chunk": ({"job": _STR, "name": _STR, "offset": _INT, "size": _INT, "final": _BOOL}, {"request": _STR}),
}
CLIENT_TYPES = ("hello", "submit", "cancel", "attach", "resume", "list", "ping", "fetch", "prune")
SERVER_TYPES = ("welcome", "accepted", "progress", "views", "mesh", "done", "error", "jobs", "pong", "chunk")
# Payloads each type carries: None = none allowed.
_PAYLOAD_RULES = {"submit": "one png", "views": "pngs", "mesh": "mesh", "chunk": "one bytes"}


class ProtocolError(ValueError):
    """A message that breaks the protocol. ``code``: bad_frames, too_large, bad_header, bad_version,
    unknown_type, bad_schema, bad_payload."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Message:
    type: str
    fields: dict = field(default_factory=dict)
    payloads: list[bytes] = field(default_factory=list)
    payload_specs: list[dict] = field(default_factory=list)

    def get(self, key, default=None):
        return self.fields.get(key, default)


def png_payload(data: bytes) -> tuple[dict, bytes]:
    return {"kind": "png"}, data


def array_payload(dtype: str, shape: list[int], data: bytes) -> tuple[dict, bytes]:
    """An array payload from raw little-endian C-order bytes (numpy: ``array.astype(dtype).tobytes()``)."""
    return {"kind": "array", "dtype": dtype, "shape": [int(s) for s in shape]}, bytes(data)


def encode(message_type: str, payloads: list[tuple[dict, bytes]] = (), **fields) -> list[bytes]:
    """Frames of one message. Fields are validated against the schema as a receiver would."""
    header = {"v": PROTOCOL_VERSION, "type": message_type, **fields}
    specs = [spec for spec, _ in payloads]
    if specs:
        header["payloads"] = specs
    frames = [json.dumps(header, separators=(",", ":")).encode("utf-8"), *[data for _, data in payloads]]
    decode(frames, message_type in CLIENT_TYPES and "client" or "server")  # never send what we would refuse
    return frames


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, without decoding it."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ProtocolError("bad_payload", "a PNG payload is not a PNG")
    return struct.unpack(">II", data[16:24])


def _check_fields(message_type: str, header: dict) -> None:
    required, optional = SCHEMA[message_type]
    for name, kind in required.items():
        if name not in header:
            raise ProtocolError("bad_schema", f"'{message_type}' needs the field '{name}'")
    for name, value in header.items():
        if name in ("v", "type", "payloads"):
            continue
        kind = required.get(name) or optional.get(name)
        if kind is None:
            raise ProtocolError("bad_schema", f"'{message_type}' has an unknown field '{name}'")
        if isinstance(value, bool) and kind in (_INT, _NUM):
            raise ProtocolError("bad_schema", f"field '{name}' of '{message_type}' must be a number")
        if not isinstance(value, kind):
            raise ProtocolError("bad_schema", f"field '{name}' of '{message_type}' has the wrong type")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ProtocolError("bad_schema", f"field '{name}' of '{message_type}' is too long")


def _check_payloads(message_type: str, specs: list, frames: list[bytes], header: dict) -> None:
    if len(specs) != len(frames):
        raise ProtocolError("bad_payload", f"the header describes {len(specs)} payloads but {len(frames)} came")
    rule = _PAYLOAD_RULES.get(message_type)
    if message_type == "submit" and header.get("kind") in IMAGELESS_JOB_KINDS:
        rule = "none"
    kinds = [spec.get("kind") if isinstance(spec, dict) else None for spec in specs]
    if rule is None and specs:
        raise ProtocolError("bad_payload", f"'{message_type}' carries no payloads")
    if rule == "one png" and kinds != ["png"]:
        raise ProtocolError("bad_payload", f"'{message_type}' carries exactly one PNG image")
    if rule == "pngs" and (not kinds or any(k != "png" for k in kinds)):
        raise ProtocolError("bad_payload", f"'{message_type}' carries one PNG per view")
    if rule == "none" and specs:
        raise ProtocolError("bad_payload", "a finish job carries no image")
    if rule == "one bytes" and (kinds != ["bytes"] or len(frames[0]) > FETCH_CHUNK_BYTES):
        raise ProtocolError("bad_payload", f"'{message_type}' carries one bytes payload of at most {FETCH_CHUNK_BYTES}")
    if any(kind not in PAYLOAD_KINDS for kind in kinds):
        raise ProtocolError("bad_payload", "unknown payload kind")
    if rule == "mesh" and kinds not in (["array"] * 3, ["array"] * 4 + ["png"]):
        raise ProtocolError("bad_payload", "'mesh' carries three arrays (vertices, faces, vertex colours), then "
                                           "optionally corner UVs and the texture PNG")
    for spec, data in zip(specs, frames):
        if spec["kind"] == "bytes":
            continue
        if spec["kind"] == "png":
            width, height = png_size(data)
            if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
                raise ProtocolError("too_large", f"a {width}x{height} image is over the {MAX_IMAGE_PIXELS} pixel limit")
            continue
        dtype, shape = spec.get("dtype"), spec.get("shape")
        if dtype not in ARRAY_DTYPES or not isinstance(shape, list) or not shape or len(shape) > 4:
            raise ProtocolError("bad_payload", "an array payload needs a known dtype and a shape")
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_ARRAY_ELEMENTS for s in shape):
            raise ProtocolError("bad_payload", "an array payload has an impossible shape")
        elements = 1
        for size in shape:
            elements *= size
        if elements > MAX_ARRAY_ELEMENTS:
            raise ProtocolError("too_large", "an array payload is over the element limit")
        if elements * ARRAY_DTYPES[dtype] != len(data):
            raise ProtocolError("bad_payload", "an array payload's size does not match its shape")
    if rule == "mesh":
        vertices, faces, colours = specs[:3]
        if (
            vertices["dtype"] != "<f4" or faces["dtype"] != "<i4" or colours["dtype"] != "|u1"
            or len(vertices["shape"]) != 2 or vertices["shape"][1] != 3 or len(faces["shape"]) != 2
            or faces["shape"][1] != 3 or colours["shape"] != vertices["shape"]
        ):
            raise ProtocolError("bad_payload",
                                "'mesh' arrays must be vertices <f4 [V,3], faces <i4 [F,3], colours |u1 [V,3]")
        if len(specs) == 5 and (specs[3]["dtype"] != "<f4" or specs[3]["shape"] != [faces["shape"][0], 3, 2]):
            raise ProtocolError("bad_payload", "'mesh' corner UVs must be <f4 [F,3,2] for its F faces")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """The deepest nesting of objects and lists in JSON ``text`` (brackets inside strings do not count), found
    without parsing it, so that a hostile header cannot exhaust the parser's recursion."""
    depth = deepest = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def truncate_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters (with a marker), so that a message built from it stays valid."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode(frames: list[bytes], sender: str) -> Message:
    """Validate and parse one message. ``sender``: 'client' (what a backend receives) or 'server'."""
    if not isinstance(frames, (list, tuple)) or not frames:
        raise ProtocolError("bad_frames", "an empty message")
    if len(frames) > MAX_FRAMES:
        raise ProtocolError("bad_frames", f"{len(frames)} frames; at most {MAX_FRAMES}")
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise ProtocolError("too_large", f"the header is over {MAX_HEADER_BYTES} bytes")
    if any(len(f) > MAX_PAYLOAD_BYTES for f in frames[1:]) or sum(len(f) for f in frames) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", "the message is over the size limit")
    try:
        text = bytes(frames[0]).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad_header", "the header is not UTF-8 JSON") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise ProtocolError("bad_header", f"the header is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_header", "the header is not UTF-8 JSON") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad_header", "the header is not a JSON object")
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "bad_version",
            f"protocol version {version!r} is not supported: this side speaks version {PROTOCOL_VERSION}; "
            "update the add-on and the backend to the same release",
        )
    message_type = header.get("type")
    allowed = CLIENT_TYPES if sender == "client" else SERVER_TYPES
    if message_type not in allowed:
        raise ProtocolError("unknown_type", f"unknown message type {str(message_type)[:40]!r}")
    _check_fields(message_type, header)
    specs = header.get("payloads", [])
    if not isinstance(specs, list) or not all(isinstance(s, dict) and "kind" in s for s in specs):
        raise ProtocolError("bad_payload", "'payloads' must be a list of payload descriptions")
    _check_payloads(message_type, specs, [bytes(f) for f in frames[1:]], header)
    if message_type == "submit" and header["kind"] not in JOB_KINDS:
        raise ProtocolError("bad_schema", f"unknown job kind {header['kind'][:40]!r}; one of {', '.join(JOB_KINDS)}")
    fields = {k: v for k, v in header.items() if k not in ("v", "type", "payloads")}
    return Message(message_type, fields, [bytes(f) for f in frames[1:]], specs)


def error_frames(code: str, message: str, job: str | None = None) -> list[bytes]:
    """An ``error`` message; ``message`` is cut to the protocol's text limit."""
    return encode("error", code=truncate_text(code, 64), message=truncate_text(str(message)), job=job)
