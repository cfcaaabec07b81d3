"""vigil: real-world-evidence pipeline for post-authorisation safety studies."""

import os

# No telemetry from the stack, and room for Prefect's temporary server to start on a busy machine.
for _name, _value in {
    "GX_ANALYTICS_ENABLED": "False",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_name, _value)
