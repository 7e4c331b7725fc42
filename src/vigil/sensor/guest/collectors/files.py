"""File-system helpers for the collectors that watch files: homes and rotated logs."""

from __future__ import annotations

import glob
import os

#: Names logrotate gives a rotated log: auth.log.1, auth.log.0, auth.log-20261127.
ROTATED_SUFFIXES = (".1", ".0")
ROTATED_PATTERNS = ("-[0-9]*", ".[0-9]*")


class HomeDirs:
    """The home directory of every account in a passwd file, re-read only when it changes."""

    def __init__(self, passwd_path: str = "/etc/passwd") -> None:  # noqa: S107
        self.passwd_path = passwd_path
        self._stamp: tuple[int, int, int] | None = None
        self._homes: list[str] = []

    def homes(self) -> list[str]:
        """Distinct absolute home directories, root's included, in passwd order."""
        try:
            st = os.stat(self.passwd_path)
        except OSError:
            return self._homes
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            homes: list[str] = []
            try:
                with open(self.passwd_path, encoding="utf-8", errors="replace") as handle:
                    for line in handle:
                        fields = line.rstrip("\n").split(":")
                        home = fields[5] if len(fields) > 6 else ""
                        if home.startswith("/") and home not in ("/", "/nonexistent"):
                            home = os.path.normpath(home)
                            if home not in homes:
                                homes.append(home)
            except OSError:
                return self._homes
            self._homes, self._stamp = homes, stamp
        return self._homes


def rotation_candidates(path: str) -> list[str]:
    """Where logrotate may have moved ``path``, likeliest first."""
    found = [path + suffix for suffix in ROTATED_SUFFIXES]
    escaped = glob.escape(path)
    for pattern in ROTATED_PATTERNS:
        for candidate in sorted(glob.glob(escaped + pattern), reverse=True):
            if candidate not in found:
                found.append(candidate)
    return found


def find_rotated(path: str, dev: int, inode: int) -> str | None:
    """The path where the file that was ``path`` (device, inode) now lives, after a rotation."""
    for candidate in rotation_candidates(path):
        try:
            st = os.lstat(candidate)
        except OSError:
            continue
        if st.st_ino == inode and st.st_dev == dev:
            return candidate
    return None
