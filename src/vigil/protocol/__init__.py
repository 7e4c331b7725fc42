"""The wire protocol shared by sensors and server.

This package's ``__init__`` is standard library only, so the guest sensor (stdlib + psutil)
can import the constants below. The pydantic models that the server validates every request
with live in :mod:`vigil.protocol.models`; a contract test checks that what the guest sensor
sends validates against them.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1

#: Paths of the sensor API, relative to the server URL.
ENROLL_PATH = "/api/v1/sensors/enroll"
HEARTBEAT_PATH = "/api/v1/sensors/heartbeat"
INGEST_PATH = "/api/v1/sensors/ingest"
TASK_RESULT_PATH = "/api/v1/sensors/tasks/{task_id}/result"

#: Limits of one ingest request. The server answers 413 above ``MAX_BATCH_BYTES``.
MAX_BATCH_BYTES = 16 * 1024 * 1024
MAX_BATCH_EVENTS = 20_000
MAX_BATCH_SNAPSHOTS = 200
MAX_SNAPSHOT_ITEMS = 100_000
MAX_MESSAGE_CHARS = 8192

#: Default intervals of the guest sensor, in seconds.
HEARTBEAT_INTERVAL = 10.0
FAST_INTERVAL = 2.0  # connection table, security logs, persistence and log integrity
PROCESS_INTERVAL = 5.0
INVENTORY_INTERVAL = 300.0  # services, packages, logged-in users
FULL_SNAPSHOT_EVERY = 600.0  # a full snapshot of each kind now and then, between diffs

SENSOR_KINDS = ("guest", "host")
SNAPSHOT_KINDS = ("processes", "connections", "listening", "services", "packages", "users")

#: Security event kinds, with what each means.
EVENT_KINDS: dict[str, str] = {
    "ssh_login_failed": "an SSH authentication failure (src_ip, user)",
    "ssh_invalid_user": "an SSH attempt for a user that does not exist (src_ip, user)",
    "ssh_login_success": "an SSH login (src_ip, user, data.method)",
    "sudo_command": "a command run through sudo (user, data.target_user, data.command)",
    "sudo_failed": "a failed sudo authentication or a refused sudo command (user)",
    "su_session": "a su session opened (user = target, data.by = who)",
    "su_failed": "a failed su (user = target, data.by)",
    "user_added": "a local user created (user)",
    "user_deleted": "a local user deleted (user)",
    "user_modified": "a local user changed (user, data.change)",
    "group_changed": "a group created, deleted or changed (data.group)",
    "password_changed": "a password changed (user)",
    "auth_other": "another authentication-related log line",
    "persistence_created": "a file appeared under a watched persistence path (path, data.sha256)",
    "persistence_modified": "a watched persistence file changed (path, data.sha256, data.diff)",
    "persistence_deleted": "a watched persistence file was deleted (path)",
    "log_truncated": "a log or history file shrank or was emptied (path, data.old_size, data.new_size)",
    "log_deleted": "a log or history file disappeared (path)",
    "log_replaced": "a log or history file was replaced by another file (path)",
    "log_rotated": "a log file was rotated the usual way (path)",
    "log_linked_devnull": "a log or history file became a link to /dev/null (path)",
    "decoy_connection": "a connection to a decoy listener (src_ip, data.decoy, data.port, data.payload)",
    "decoy_login": "credentials tried on a decoy (src_ip, user, data.decoy, data.port, data.password)",
    "canary_accessed": "a canary file was opened, changed or deleted "
    "(path, data.how, data.pid, data.process)",
    "sensor_started": "the sensor started (data.version, data.privileged, data.unreadable)",
    "sensor_stopping": "the sensor is shutting down cleanly",
    "collector_error": "a collector failed or cannot read what it needs (data.collector, data.error)",
}

#: Environment variables a process item reports (``ProcessItem.env``) when they are set: the
#: ones attackers use to inject code or silence shell history. No other variable leaves the VM.
SECURITY_ENV_VARS = (
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "HISTFILE",
    "HISTSIZE",
    "HISTFILESIZE",
    "HISTCONTROL",
    "HISTIGNORE",
)

USER_ROLES = ("admin", "csp", "cirt", "viewer")
TASK_KINDS = ("live_query",)
