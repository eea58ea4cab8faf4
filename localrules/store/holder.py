"""Who holds a lock, and whether that holder is still alive.

A lock's owner string names its holder as JSON: ``role``, ``host``, ``boot`` (the kernel's boot
id, ``/proc/sys/kernel/random/boot_id``; elsewhere the boot time), ``ns`` (the pid namespace:
two containers given the same hostname on one kernel share its boot id but not their pids),
``pid``, ``start`` (the process's start time in clock ticks after boot, ``/proc/<pid>/stat``
field 22) and ``id`` (a random nonce, so two holders never share an owner string). A bare pid is
not an identity: in a container every controller is pid 1 (or another small number), and after
a crash the pid is soon reused; (pid, start time) within one boot of one host names one process.

``is_dead`` answers "is this holder certainly gone?": only for a holder on this host, in this
boot and pid namespace, whose (pid, start time) names no running process (or a zombie). Anything
else (another host, an owner string of an older localrules, a platform without ``/proc``) is
taken as alive, and its lock is left to expire. Imports nothing heavy (no TensorFlow): the
controller uses it.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Holder", "boot_id", "is_dead", "pid_namespace", "process_start", "this_process"]


@dataclass(frozen=True)
class Holder:
    """A lock holder's identity (see the module docstring)."""

    role: str
    host: str
    boot: str
    ns: str
    pid: int
    start: int | None
    id: str

    def owner(self) -> str:
        """The owner string a store keeps for this holder."""
        return json.dumps({"role": self.role, "host": self.host, "boot": self.boot,
                           "ns": self.ns, "pid": self.pid, "start": self.start, "id": self.id},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, owner: str) -> Holder | None:
        """The holder an owner string names; None for any other string (an older localrules's
        ``controller:host:pid:nonce``, a worker's name, garbage)."""
        try:
            data = json.loads(owner)
        except (TypeError, ValueError, RecursionError):  # RecursionError: a nesting bomb
            return None
        if not isinstance(data, dict):
            return None
        role, host, boot, ns, pid = (data.get(k) for k in ("role", "host", "boot", "ns", "pid"))
        start, nonce = data.get("start"), data.get("id")
        if not (all(isinstance(v, str) for v in (role, host, boot, ns, nonce))
                and _is_int(pid) and pid > 0 and (start is None or _is_int(start))):
            return None
        return cls(role, host, boot, ns, pid, start, nonce)

    def describe(self) -> str:
        """For messages: ``role pid N on host H``."""
        return f"{self.role} pid {self.pid} on {self.host}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def boot_id() -> str:
    """This boot of this host: the kernel's boot id, else the boot time (to the minute, so
    two readings agree), else "" (unknown: never matches, so nothing is taken over)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        pass
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return "btime:" + line.split()[1]
    except OSError:
        pass
    import time

    try:
        boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return ""
    return f"boot:{round(boot / 60)}"


def pid_namespace() -> str:
    """The calling process's pid namespace ("" when it cannot be read)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot, ``/proc/<pid>/stat`` field 22);
    None when there is no such process or no ``/proc`` to ask."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # Field 2 (the command) is in parentheses and may hold spaces or parentheses itself.
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 overall: the 20th after the command
    except (IndexError, ValueError):
        return None


def _zombie(pid: int) -> bool:
    """Killed but not yet reaped by its parent (state Z or X): it will never act again."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat[stat.rfind(")") + 2:][:1] in ("Z", "X")


def this_process(role: str) -> Holder:
    """The holder identity of the calling process."""
    pid = os.getpid()
    return Holder(role, socket.gethostname(), boot_id(), pid_namespace(), pid,
                  process_start(pid),
                  uuid.uuid4().hex[:12])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists (another user's), or we cannot tell
    return True


def is_dead(owner: str, here: Holder | None = None) -> bool:
    """True only when ``owner`` names a holder that certainly no longer runs: same host, boot
    and pid namespace as ``here`` (this process by default), and its pid is gone, a zombie, or
    now names a process started at another time (the pid was reused). False when in doubt."""
    holder = Holder.parse(owner)
    if holder is None:
        return False
    here = here or this_process("check")
    if (holder.host, holder.boot, holder.ns) != (here.host, here.boot, here.ns) \
            or not holder.boot:
        return False
    if holder.pid == here.pid and holder.start == here.start:
        return False  # this very process
    if not _pid_alive(holder.pid) or _zombie(holder.pid):
        return True
    if holder.start is None:
        return False  # no start time recorded: a live pid may still be it
    started = process_start(holder.pid)
    return started is not None and started != holder.start
