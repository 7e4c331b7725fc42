"""The guest sensor: collectors, spool and main loop that run inside a watched VM.

Everything under this package imports only the standard library, psutil and
:mod:`vigil.protocol` (whose ``__init__`` is standard library only), so the sensor runs on a
distribution's own ``python3`` with ``python3-psutil``.
"""
