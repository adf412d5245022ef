"""What each channel's energy counts towards, and how a shared package is split among its devices.

Roles (from the channel metadata only; the file says what each channel measures):

- ``device``: a rank-level channel measuring the rank's own device (a GPU, a GCD with its own sensor,
  the CPU-time estimate). Added to the device total of the rank's windows.
- ``package``: a rank-level channel (scope ``package``) whose reading includes several devices, named in
  ``shared_with`` (MI250X: both GCDs of the package). It is recorded once, by one rank, and added to
  the device total once.
- ``placeholder``: a device whose consumption is inside another channel (an MI250X secondary GCD: scope
  ``gpu`` with ``shared_with`` set, or ``included_in`` set). Never added.
- one device, several ranks: every rank bound to one device records it (several ranks with
  ``CUDA_VISIBLE_DEVICES=0``; MIG, where NVML has no counter per instance and every rank on a slice
  records the whole GPU, with ``shared_with`` = the GPU's MIG instances or, depending on how the
  device was looked up, none). Copies are recognised by host and stable device id
  (:func:`device_key`), never by ``shared_with``. :func:`channel_roles` counts the lowest rank's copy
  once, as a ``package`` shared by the ranks that recorded it (its ``sharers``), reduced over the
  union of their windows, and makes the other copies placeholders.
- ``module``: a rank-level channel of scope ``module`` (a GH200 read at NVML module scope: GPU + Grace
  CPU + memory, where the GPU scope does not answer). Never added to the GPU-only device total: the
  table gives it its own column (``module_energy_J``) and takes it as the row's figure only where no
  rank has a GPU-scope channel. Copies recorded by several ranks count once, like a device's.
- ``view``: the same quantity read another way (``view_of`` set, e.g. NVML's 1 s average). Never added.
- ``node`` / ``node_cpu`` / ``node_memory`` / ``node_accel`` / ``node_other``: node-level channels
  (``node_level`` = 1, recorded by the node leader). Whole-node energy goes to its own column; cpu
  and memory to theirs; they are never added to the device total. One ``included_in`` a channel of
  the same role (pm_counters ``cpu0`` in ``cpu``) is a placeholder; of two backends measuring one
  role on one host (pm_counters and RAPL) one is added, the other's channels are ``skip``.

MI250X split (per-device figures): a package window's energy is split **equally** among the devices of
``shared_with`` that a rank of this run was bound to. Why equal: the hardware reports only the sum; the
two GCDs of a package run the same SPMD inference in lock step, so their busy times are equal to
within the window edges, and a split proportional to busy time would equal the equal split while
adding the noise of the secondary's window edges; an idle GCD still draws its static power, which is
part of the package and no more one GCD's than the other's. When only one GCD of a package is used by
the run, the whole package goes to it, flagged ``includes idle partner GCD``: the idle die's draw is a
cost of the job and of nobody else. Totals add each package channel once, so nothing is counted twice
and nothing is lost. A device recorded by several ranks is split the same way: equally among the
recording ranks that ran the case (docs/analysis.md, "One device, several ranks").
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from energy_hpc.telemetry.base import bus_id_key


class Role(str, Enum):
    """What one channel's energy counts towards (the module docstring says how each is recognised). The
    values are the names the tables and notes have always used; a role compares equal to its value."""

    DEVICE = "device"
    PACKAGE = "package"
    PLACEHOLDER = "placeholder"
    MODULE = "module"
    VIEW = "view"
    SKIP = "skip"
    NODE = "node"
    NODE_CPU = "node_cpu"
    NODE_MEMORY = "node_memory"
    NODE_ACCEL = "node_accel"
    NODE_OTHER = "node_other"

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # as its value's, so that a role and its name are one key in a dict or set
        return hash(self.value)

    @property
    def node_level(self) -> bool:
        return self in NODE_ROLES


NEVER_ADDED = (Role.PLACEHOLDER, Role.VIEW, Role.SKIP)
NODE_ROLES = (Role.NODE, Role.NODE_CPU, Role.NODE_MEMORY, Role.NODE_ACCEL, Role.NODE_OTHER)
# rank-level channels whose energy is the device total, each once (a package or a shared device's copy)
DEVICE_ROLES = (Role.DEVICE, Role.PACKAGE)


def normalize_device(dev: str) -> str:
    """PCI bus ids compared without domain or case: '0000:C1:00.0' -> 'c1:00.0'."""
    return bus_id_key(dev)


def shared_devices(meta: dict[str, Any]) -> list[str]:
    return [normalize_device(s) for s in str(meta.get("shared_with", "") or "").split(",") if s.strip()]


# node-level channels by scope
_NODE_ROLE_OF_SCOPE = {
    "node": Role.NODE,
    "cpu": Role.NODE_CPU,
    "memory": Role.NODE_MEMORY,
    "package": Role.NODE_ACCEL,
    "gpu": Role.NODE_ACCEL,
}


def channel_role(meta: dict[str, Any]) -> Role:
    """The role of one channel seen alone. What needs the other channels of the run (copies of one
    device, ``included_in`` at node level, two backends of one scope) is :func:`channel_roles`'."""
    if str(meta.get("view_of", "") or ""):
        return Role.VIEW
    # Files of schema 1.0 do not store view_of: NVML's average-power view is named "<main>:avg".
    if str(meta.get("backend", "")) == "nvml" and str(meta.get("name", "")).endswith(":avg"):
        return Role.VIEW
    scope = str(meta.get("scope", ""))
    if int(meta.get("node_level", 0) or 0):
        return _NODE_ROLE_OF_SCOPE.get(scope, Role.NODE_OTHER)
    if str(meta.get("included_in", "") or ""):
        return Role.PLACEHOLDER
    if scope == "module":
        return Role.MODULE
    if scope == "package":
        return Role.PACKAGE
    shared = shared_devices(meta)
    if scope == "gpu" and shared and not all(d.startswith("mig-") for d in shared):
        return Role.PLACEHOLDER  # an MI250X secondary GCD: inside its package's channel
    return Role.DEVICE


def sharer_ranks(meta: dict[str, Any]) -> list[int]:
    """The ranks that recorded a device :func:`channel_roles` counts once (``meta["sharers"]``); []
    for any other channel."""
    return [int(x) for x in str(meta.get("sharers", "") or "").split(",") if x.strip()]


def is_mig_gpu(meta: dict[str, Any]) -> bool:
    """A whole-GPU channel recorded for a rank bound to a MIG instance of it, as far as the channel
    says (NVML does not always fill ``shared_with``: :func:`channel_roles` does not rely on it)."""
    shared = shared_devices(meta)
    return (
        str(meta.get("scope", "")) == "gpu"
        and not int(meta.get("node_level", 0) or 0)
        and not str(meta.get("included_in", "") or "")
        and bool(shared)
        and all(d.startswith("mig-") for d in shared)
    )


def device_key(meta: dict[str, Any]) -> tuple[str, ...] | None:
    """What makes two rank-level channels copies of one device: host (and node), backend, scope and
    the stable device id (PCI bus id, UUID); None when the channel names no device."""
    dev = normalize_device(str(meta.get("device", "") or ""))
    if not dev:
        return None
    return (
        str(meta.get("host", "")),
        str(int(meta.get("node", 0) or 0)),
        str(meta.get("backend", "")),
        str(meta.get("scope", "")),
        dev,
    )


# node-level backends in the order the analysis prefers when two measure one scope on one host:
# pm_counters reads the node's own controller (the node figure includes the others), RAPL only the CPUs
NODE_BACKEND_PREFERENCE = ("pm_counters", "rapl")


def _backend_rank(backend: str) -> tuple[int, str]:
    try:
        return NODE_BACKEND_PREFERENCE.index(backend), backend
    except ValueError:
        return len(NODE_BACKEND_PREFERENCE), backend


def channel_roles(metas: Sequence[dict[str, Any]]) -> list[Role]:
    """:func:`channel_role` of every channel of one run, with what needs the others:

    - **one device, several ranks.** Rank-level channels that are copies of one device
      (:func:`device_key`: ranks bound to one GPU, MIG instances of one GPU with or without
      ``shared_with``, ...) count once: the lowest rank's copy becomes a ``package`` with
      ``meta["sharers"]`` (the recording ranks, comma-separated) and ``meta["copies"]`` (the channels'
      ``index``, lowest rank first); the other copies are placeholders. The reduction takes that
      channel over the union of the sharers' windows (:mod:`energy_hpc.analysis.reduce`). A MIG
      GPU recorded by one rank is a package of one sharer (its label says what else is inside).
    - **included_in at node level.** A node-level channel ``included_in`` a channel of the run with
      the same role (pm_counters ``cpu0`` in ``cpu``) is a placeholder; one included in a channel of
      another role (``cpu`` in ``node``) keeps its own column; one whose container is absent counts.
    - **two backends, one scope, one host.** Node-level channels of one role on one host are added
      from one backend only (:data:`NODE_BACKEND_PREFERENCE`); the others' get the role ``skip`` and
      ``meta["not_added"]`` names the backend that counts instead.
    """
    roles = [channel_role(m) for m in metas]
    # one device, several ranks
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, m in enumerate(metas):
        m.pop("sharers", None), m.pop("copies", None), m.pop("not_added", None)  # set below, afresh
        if roles[i] in (Role.DEVICE, Role.PACKAGE, Role.MODULE):
            key = device_key(m)
            if key is not None:
                groups.setdefault(key, []).append(i)
    for key in list(groups):
        ranks = [int(metas[i].get("rank", 0)) for i in groups[key]]
        if len(set(ranks)) != len(ranks):  # one rank with two channels of one device: tell them by name
            for i in groups.pop(key):
                groups.setdefault((*key, str(metas[i].get("name", ""))), []).append(i)
    for idxs in groups.values():
        idxs.sort(key=lambda i: (int(metas[i].get("rank", 0)), i))
        ranks = [int(metas[i].get("rank", 0)) for i in idxs]
        if len(set(ranks)) != len(ranks):
            continue  # still two channels of one rank: not copies of each other, leave them be
        if len(idxs) == 1 and not is_mig_gpu(metas[idxs[0]]):
            continue
        kept_role = Role.MODULE if roles[idxs[0]] == Role.MODULE else Role.PACKAGE
        for i in idxs:
            roles[i] = Role.PLACEHOLDER
        rep = metas[idxs[0]]
        roles[idxs[0]] = kept_role
        rep["sharers"] = ",".join(str(r) for r in ranks)
        rep["copies"] = [int(metas[i].get("index", i)) for i in idxs]
    # included_in at node level
    by_name = {
        (str(m.get("host", "")), str(m.get("name", ""))): i
        for i, m in enumerate(metas)
        if roles[i].node_level
    }
    for i, m in enumerate(metas):
        if not roles[i].node_level:
            continue
        host, seen, inside = str(m.get("host", "")), {i}, str(m.get("included_in", "") or "")
        while inside:
            j = by_name.get((host, inside))
            if j is None or j in seen:
                break
            if channel_role(metas[j]) == channel_role(m):
                roles[i] = Role.PLACEHOLDER
                break
            seen.add(j)
            inside = str(metas[j].get("included_in", "") or "")
    # two backends, one scope, one host
    backends: dict[tuple[str, Role], set[str]] = {}
    for i, m in enumerate(metas):
        if roles[i].node_level:
            backends.setdefault((str(m.get("host", "")), roles[i]), set()).add(str(m.get("backend", "")))
    for i, m in enumerate(metas):
        found = backends.get((str(m.get("host", "")), roles[i]), set()) if roles[i].node_level else set()
        if len(found) > 1:
            kept = min(found, key=_backend_rank)
            if str(m.get("backend", "")) != kept:
                m["not_added"] = kept
                roles[i] = Role.SKIP
    return roles


_NODE_WHAT = {
    Role.NODE: "node",
    Role.NODE_CPU: "node CPU",
    Role.NODE_MEMORY: "node memory",
    Role.NODE_ACCEL: "accelerator",
    Role.NODE_OTHER: "other node-level",
}


def role_notes(metas: Sequence[dict[str, Any]], roles: Sequence[Role]) -> list[str]:
    """Sentences for the table's notes about channels :func:`channel_roles` left out and why
    (one per kind of channel and pair of backends, with the number of hosts)."""
    hosts: dict[tuple[str, str, str], set[str]] = {}
    for m, role in zip(metas, roles, strict=False):
        if role == Role.SKIP and str(m.get("not_added", "")):
            what = _NODE_WHAT.get(channel_role(m), "node-level")
            hosts.setdefault((what, str(m["not_added"]), str(m.get("backend", ""))), set()).add(
                str(m.get("host", ""))
            )
    return [
        f"{what} energy from {kept}; {other}'s channels of the same scope on the same host "
        f"({len(h)} host(s)) not added: both measure it"
        for (what, kept, other), h in sorted(hosts.items())
    ]


def package_shares(
    meta: dict[str, Any],
    bus_to_rank: dict[str, int],
    recording_rank: int,
    ranks_in_case: Sequence[int] | None = None,
) -> tuple[dict[int, float], str]:
    """Ranks that get a share of a package channel, with the share, and the label of the rule.

    ``bus_to_rank`` maps the normalised bus ids of the devices bound to ranks on the channel's host.
    ``ranks_in_case`` restricts the sharers to ranks that ran the case. A channel with
    ``meta["sharers"]`` (a device recorded by several ranks, or a MIG GPU: see :func:`channel_roles`)
    is split equally among its sharers; an MI250X package among the ranks bound to its GCDs.
    """
    sharers = sharer_ranks(meta)
    shared = shared_devices(meta)
    if sharers and (not shared or is_mig_gpu(meta)):
        return _sharer_shares(meta, sharers, recording_rank, ranks_in_case)
    users = [bus_to_rank[d] for d in shared if d in bus_to_rank] + sharers
    if ranks_in_case is not None:
        users = [r for r in users if r in set(ranks_in_case)]
    users = list(dict.fromkeys(users))
    what = "ranks" if len(sharers) > 1 else "devices"
    if len(users) >= 2:
        return {r: 1.0 / len(users) for r in users}, f"equal split of package among {len(users)} {what}"
    if len(users) == 1:
        label = "includes idle partner GCD" if len(shared) > 1 else "whole package"
        return {users[0]: 1.0}, label
    return {recording_rank: 1.0}, "whole package (devices not matched to ranks)"


def _sharer_shares(
    meta: dict[str, Any], sharers: Sequence[int], recording_rank: int, ranks_in_case: Sequence[int] | None
) -> tuple[dict[int, float], str]:
    """A device recorded by several ranks, split equally among those of them that ran the case: the
    same reasoning as for a package (the hardware gives only the sum). For a MIG GPU with instances
    no rank of this run used, what they drew (another job's work, or idle slices) is inside the
    figure: said."""
    users = [r for r in sharers if ranks_in_case is None or r in set(ranks_in_case)] or [recording_rank]
    what = "GPU" if str(meta.get("scope", "")) == "gpu" else "device"
    if is_mig_gpu(meta):
        n_instances = len(shared_devices(meta))
        label = (
            f"equal split of GPU among {len(users)} MIG instances" if len(users) > 1 else "whole GPU (MIG)"
        )
        if n_instances > len(sharers):
            label += f"; includes {n_instances - len(sharers)} MIG instance(s) this run did not use"
    else:
        label = f"equal split of {what} among {len(users)} ranks" if len(users) > 1 else f"whole {what}"
    return {r: 1.0 / len(users) for r in users}, label
