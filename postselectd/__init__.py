"""postselectd: rates photos as they arrive and writes XMP sidecars editors read."""

import os

__version__ = "0.1.0"

# onnxruntime's official builds send usage telemetry to Microsoft over HTTPS and write a
# persistent device id and an event store to ~/.cache/Microsoft/DeveloperTools/.onnxruntime
# and $TMPDIR/.ses, from the moment the module is imported. postselectd works offline and
# writes only to the folders it watches, its state folder and its config folder: turn the
# telemetry off before any postselectd module can import onnxruntime (workers inherit it).
# tests/test_reliability_daemon.py::test_no_port_no_foreign_writes_and_the_users_umask
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
