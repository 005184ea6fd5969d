"""The ZeroMQ backend service: ROUTER loop (server), job queue and persistence (jobs), what each job kind runs and
its settings (job_kinds), event -> message conversion (messages), CURVE authentication and key checks (auth), the
service's own limits and name sanitising (options), input images prepared off the loop (inputs), disk usage and
pruning (retention), one server per data folder (data_lock). The wire protocol itself is blender_addon/core/protocol.py."""
