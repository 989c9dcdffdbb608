"""One engine's containers, kept current from its ``/events`` stream. Pure: no I/O.

The fleet (:mod:`gateway.engines.fleet`) fills a :class:`Directory` from a listing and feeds it
the engine's container events (:func:`parse_event`); finding a name is a dictionary lookup, so
resolving costs the same with 900 containers on three engines as with 10 on one. Memory is
bounded: at most ``limit`` containers, each with at most :data:`MAX_LABEL_BYTES` of labels (a
container beyond the limit is not in the directory; the fleet then asks its engine directly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.engines.base import Container

# Labels kept per container (keys and values, UTF-8); the rest are dropped. A grant that names a
# dropped label then does not match in listings (deny): resolving asks the engine for all labels.
MAX_LABEL_BYTES = 16 * 1024
# Docker IDs are 64 hex digits; a prefix must be at least this long (as DockerEngine.resolve).
MIN_ID_PREFIX = 4

# Event actions that change what the directory holds, and the state some of them leave.
_STATE_AFTER = {
    "start": "running",
    "unpause": "running",
    "pause": "paused",
    "die": "exited",
    "kill": None,  # "die" follows
    "stop": None,
    "restart": "running",
    "create": "created",
    "rename": None,
    "destroy": None,
}


@dataclass(frozen=True, slots=True)
class Event:
    """A container event: ``action`` on container ``id`` (``name`` as the event gives it)."""

    action: str
    id: str
    name: str = ""
    image: str = ""


def parse_event(data: Mapping[str, Any]) -> Event | None:
    """An event of the engine's ``/events`` stream, or None when it does not concern the
    directory (other object types, exec events, health checks, malformed)."""
    if data.get("Type") != "container":
        return None
    action = str(data.get("Action") or data.get("status") or "")
    action = action.split(":", 1)[0]  # "exec_start: sh" and the like
    if action not in _STATE_AFTER:
        return None
    actor = data.get("Actor") or {}
    cid = str(actor.get("ID") or data.get("id") or "")
    if not _is_hex_id(cid):
        return None
    attrs = actor.get("Attributes") or {}
    return Event(action, cid, str(attrs.get("name") or ""), str(attrs.get("image") or ""))


def _is_hex_id(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def bounded_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` up to :data:`MAX_LABEL_BYTES` in total (in key order)."""
    out: dict[str, str] = {}
    used = 0
    for key in sorted(labels):
        value = labels[key]
        size = len(key.encode("utf-8", "replace")) + len(value.encode("utf-8", "replace"))
        if used + size > MAX_LABEL_BYTES:
            break
        out[key] = value
        used += size
    return out


class Directory:
    """Containers of one engine by ID and by name (at most ``limit``)."""

    def __init__(self, engine: str, limit: int) -> None:
        self.engine = engine
        self.limit = limit
        self._by_id: dict[str, Container] = {}
        self._by_name: dict[str, str] = {}
        # True once a listing came in: a miss then means "not on this engine" (but for races).
        self.listed = False
        # Containers left out because the directory was full (the fleet asks the engine then).
        self.overflow = False

    def __len__(self) -> int:
        return len(self._by_id)

    def containers(self) -> list[Container]:
        return list(self._by_id.values())

    def replace_all(self, containers: Iterable[Container]) -> None:
        """A fresh listing: what was known before is forgotten."""
        self._by_id.clear()
        self._by_name.clear()
        self.overflow = False
        for c in containers:
            self.put(c)
        self.listed = True

    def put(self, c: Container) -> None:
        """Add or update ``c`` (its engine set to this directory's)."""
        old = self._by_id.get(c.id)
        if old is None and len(self._by_id) >= self.limit:
            self.overflow = True
            return
        c = dataclasses.replace(c, engine=self.engine, labels=bounded_labels(c.labels))
        if old is not None and self._by_name.get(old.name) == old.id:
            del self._by_name[old.name]
        self._by_id[c.id] = c
        if c.name:
            self._by_name[c.name] = c.id

    def remove(self, cid: str) -> None:
        old = self._by_id.pop(cid, None)
        if old is not None and self._by_name.get(old.name) == cid:
            del self._by_name[old.name]

    def apply(self, ev: Event) -> bool:
        """Apply an event; True when the container should be read afresh from the engine
        (a new one: its labels are not in the event)."""
        if ev.action == "destroy":
            self.remove(ev.id)
            return False
        old = self._by_id.get(ev.id)
        if old is None:
            if ev.action == "create" or ev.name:
                first = _STATE_AFTER.get(ev.action) or "created"
                self.put(Container(ev.id, ev.name.lstrip("/"), ev.image, first))
            return True
        changes: dict[str, Any] = {}
        state = _STATE_AFTER.get(ev.action)
        if state is not None:
            changes["state"] = state
        if ev.action == "rename" and ev.name:
            changes["name"] = ev.name.lstrip("/")
        if changes:
            self.put(dataclasses.replace(old, **changes))
        return False

    def by_id(self, cid: str) -> Container | None:
        return self._by_id.get(cid)

    def find(self, ref: str) -> list[Container]:
        """The container named exactly ``ref``, else those whose ID starts with ``ref`` (a hex
        prefix of at least :data:`MIN_ID_PREFIX` digits); at most two are returned."""
        if ref in self._by_id:
            return [self._by_id[ref]]
        cid = self._by_name.get(ref)
        if cid is not None:
            return [self._by_id[cid]]
        if len(ref) < MIN_ID_PREFIX or not all(c in "0123456789abcdef" for c in ref):
            return []
        found: list[Container] = []
        for key, c in self._by_id.items():
            if key.startswith(ref):
                found.append(c)
                if len(found) == 2:
                    break
        return found

    def has_name(self, name: str) -> bool:
        return name in self._by_name
