"""The add-on's bpy-free core: what the Blender UI, the backend and training share, importable without Blender.

The wire protocol and its ZeroMQ client, the render-record format and staging, job settings, the connection rule,
the local backend process, the image downscale child, atomic writes, and children that die with their parent. Its
modules import only the standard library, numpy, pyzmq (the client) and each other (tests/test_architecture.py);
``backend/`` and ``training/`` import nothing else of the add-on.
"""
