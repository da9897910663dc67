"""One trainer per run directory: ``RUN/.lock``.

The lock is a file created with ``O_CREAT | O_EXCL`` (atomic on local and
network filesystems alike) holding the owner's host name and process id.  It is
removed on every exit of the trainer: normal, error, preemption, or a second
signal (``trainers/preemption.py``).  A lock left by a process that was killed
outright (SIGKILL, power loss) is **stale**: a trainer on the same host finds
that its process no longer exists, says so and takes the lock over.  A lock
from another host cannot be checked from here and is refused like a live one;
the message says which file to remove once that trainer is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import time

from absl import logging

__all__ = ["LOCK_FILE", "RunLockedError", "RunLock"]

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another live trainer holds the run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # Exists, owned by someone else.
    try:  # A zombie (exited, not yet reaped) holds nothing.
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class RunLock:
    """Context manager holding ``output_dir/.lock``; raises ``RunLockedError`` if held."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, LOCK_FILE)
        self.owner = dict(host=socket.gethostname(), pid=os.getpid())
        self._held = False

    def _read(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if not self._stale(holder):
                    who = (f"process {holder.get('pid')} on host {holder.get('host')}"
                           if holder else "a trainer that is still starting")
                    raise RunLockedError(
                        f"{os.path.dirname(self.path)!r} is in use by {who} (lock file "
                        f"{self.path}). Wait for it to finish or stop it, or use another "
                        "--output_dir; if that process is gone, delete the lock file.") from None
                logging.warning("Removing the stale lock %s of process %s on %s, which no "
                                "longer runs.", self.path, holder.get("pid"), holder.get("host"))
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({**self.owner, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime())}, f)
            self._held = True
            return
        raise RunLockedError(f"Could not take the lock {self.path}: other trainers are "
                             "starting in the same directory.")

    def _stale(self, holder: dict) -> bool:
        if not holder:  # Empty or half-written: its writer may be between open and write.
            try:
                return time.time() - os.path.getmtime(self.path) > 60
            except OSError:
                return True
        if holder.get("host") != self.owner["host"]:
            return False
        return not _alive(int(holder.get("pid", -1)))

    def release(self) -> None:
        if self._held and self._read().get("pid") == self.owner["pid"]:
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass
        self._held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
