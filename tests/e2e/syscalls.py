"""Reading an `strace -f -yy -xx` log of the daemon: PUBACKs against WAL fsyncs, and the files
as a power cut would leave them (only what an fsync made durable).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# What the trace test asks strace for: writes with their data, syncs, truncations.
TRACED = "pwrite64,write,sendto,fsync,fdatasync,ftruncate,unlink"
PUBACK = 0x40  # MQTT fixed header: PUBACK, flags 0

# `1234 pwrite64(7</state/edgeml.db-wal>, "\x37\x7f...", 4120, 32) = 4120` (the path and the
# data in hex: -xx); sockets are decorated `5<TCP:[127.0.0.1:40000->127.0.0.1:1883]>` (-yy),
# hence the lazy match up to `>, `.
_CALL = re.compile(r"^(\d+) +(\w+)\((\d+)<(.*?)>(?:, |\)| <unfinished)(.*)$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>")
_UNLINK = re.compile(r'^(\d+) +unlink\("((?:\\x[0-9a-f]{2})*)"\) = 0')
_DATA = re.compile(r'^"((?:\\x[0-9a-f]{2})*)"(\.\.\.)?, (\d+)(?:, (\d+))?')


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace("\\x", ""))


@dataclass
class Call:
    pid: int
    name: str
    path: str  # what -y shows for the fd: a file's path, or TCP:[...] for a socket
    data: bytes = b""
    offset: int | None = None
    size: int | None = None  # ftruncate's length
    finished: bool = True  # False: `<unfinished ...>`, it ends at its `resumed` line


def calls(log: Path) -> Iterator[Call | tuple[int, str]]:
    """Each traced call as it starts, and (pid, name) for a call that ends later."""
    with log.open(errors="replace") as f:
        for line in f:
            u = _UNLINK.match(line)
            if u is not None:
                yield Call(int(u.group(1)), "unlink", _hex(u.group(2)).decode(errors="replace"))
                continue
            m = _CALL.match(line)
            if m is None:
                r = _RESUMED.match(line)
                if r is not None:
                    yield int(r.group(1)), r.group(2)
                continue
            pid, name, _fd, path, rest = m.groups()
            if path.startswith("\\x"):  # -xx prints paths in hex too
                path = _hex(path).decode(errors="replace")
            call = Call(int(pid), name, path, finished="<unfinished" not in line)
            if name in ("pwrite64", "write", "sendto"):
                d = _DATA.match(rest)
                if d is None:
                    continue
                call.data = _hex(d.group(1))
                call.offset = int(d.group(4)) if d.group(4) is not None else None
            elif name == "ftruncate":
                call.size = int(rest.split(")", 1)[0])
            yield call


def pubacks(c: Call) -> list[int]:
    """The packet ids of the PUBACKs a socket write sends (one write may carry many, and
    predictions among them); a write holds whole packets.
    """
    if c.name not in ("sendto", "write") or not c.path.startswith("TCP:"):
        return []
    ids, pos, data = [], 0, c.data
    while pos + 1 < len(data):
        length, shift, i = 0, 0, pos + 1
        while i < len(data) - 1 and data[i] & 128:
            length |= (data[i] & 127) << shift
            shift, i = shift + 7, i + 1
        length |= (data[i] & 127) << shift
        if data[pos] == PUBACK and length == 2:
            ids.append(int.from_bytes(data[i + 1 : i + 3], "big"))
        pos = i + 1 + length
    return ids


@dataclass
class PowerCut:
    """Replays the trace: every file in `directory` as written (`cache`) and as synced
    (`disk`); `cuts` holds copies of the synced files taken right after chosen PUBACKs.
    """

    directory: str
    cache: dict[str, bytearray] = field(default_factory=dict)
    disk: dict[str, bytes] = field(default_factory=dict)
    acked: list[int] = field(default_factory=list)  # packet ids, in order
    early_acks: int = 0  # PUBACKs sent while a WAL write was not yet synced
    ack_writes: int = 0  # socket writes that carried PUBACKs
    wal_fsyncs: int = 0
    cuts: list[tuple[list[int], dict[str, bytes]]] = field(default_factory=list)
    _dirty: set[str] = field(default_factory=set)
    _syncing: dict[int, str] = field(default_factory=dict)

    def replay(self, log: Path, cut_every: int) -> None:
        for c in calls(log):
            if isinstance(c, tuple):
                if c[1] in ("fsync", "fdatasync") and c[0] in self._syncing:
                    self._synced(self._syncing.pop(c[0]))
            elif ids := pubacks(c):
                self.ack_writes += 1
                for mid in ids:
                    if any(p.endswith("-wal") for p in self._dirty):
                        self.early_acks += 1
                    self.acked.append(mid)
                    if len(self.acked) % cut_every == 0:
                        self.cuts.append((list(self.acked), dict(self.disk)))
            elif c.path.startswith(self.directory + "/"):
                self._file_call(c)

    def _file_call(self, c: Call) -> None:
        if c.name == "unlink":  # SQLite's end of a rollback journal, or of the WAL at close
            self.cache.pop(c.path, None)
            self.disk.pop(c.path, None)
            self._dirty.discard(c.path)
            return
        if c.name in ("fsync", "fdatasync"):
            if c.finished:
                self._synced(c.path)
            else:
                self._syncing[c.pid] = c.path
            return
        image = self.cache.setdefault(c.path, bytearray())
        if c.name == "ftruncate" and c.size is not None:
            del image[c.size :]
            image.extend(b"\0" * (c.size - len(image)))
        elif c.name == "pwrite64" and c.offset is not None:
            end = c.offset + len(c.data)
            if len(image) < end:
                image.extend(b"\0" * (end - len(image)))
            image[c.offset : end] = c.data
        else:
            return
        self._dirty.add(c.path)

    def _synced(self, path: str) -> None:
        if path.endswith("-wal") and path in self._dirty:
            self.wal_fsyncs += 1
        self._dirty.discard(path)
        self.disk[path] = bytes(self.cache.get(path, b""))


def restore(files: dict[str, bytes], into: Path) -> Path:
    """Write the synced files (the database, its WAL) into `into`; the database's path."""
    into.mkdir(parents=True)
    for path, data in files.items():
        name = Path(path).name
        if name.startswith("edgeml.db") and not name.endswith("-shm"):
            (into / name).write_bytes(data)
    return into / "edgeml.db"
