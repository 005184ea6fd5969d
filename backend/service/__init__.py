"""The ZeroMQ backend service: ROUTER loop (server), job queue and persistence (jobs), event -> message
conversion (messages), CURVE authentication (auth). The wire protocol itself is blender_addon/protocol.py."""
