"""Detection rules, one module per family; importing this package registers them all."""

from vigil.server.detect.rules import (  # noqa: F401
    bruteforce,
    decoys,
    injection,
    log_clearing,
    persistence,
    privesc,
    remote_access,
    reverse_shell,
    sensor_silence,
)
