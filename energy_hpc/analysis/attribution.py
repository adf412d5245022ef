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
from typing import Any

NEVER_ADDED = ("placeholder", "view", "skip")
NODE_ROLES = ("node", "node_cpu", "node_memory", "node_accel", "node_other")


def normalize_device(dev: str) -> str:
    """PCI bus ids compared without domain or case: '0000:C1:00.0' -> 'c1:00.0'."""
    d = str(dev).strip().lower()
    parts = d.split(":")
    if len(parts) == 3 and "." in parts[2]:
        return ":".join(parts[1:])
    return d


def shared_devices(meta: dict[str, Any]) -> list[str]:
    return [normalize_device(s) for s in str(meta.get("shared_with", "") or "").split(",") if s.strip()]


def channel_role(meta: dict[str, Any]) -> str:
    """The role of one channel seen alone. What needs the other channels of the run (copies of one
    device, ``included_in`` at node level, two backends of one scope) is :func:`channel_roles`'."""
    if str(meta.get("view_of", "") or ""):
        return "view"
    # Files of schema 1.0 do not store view_of: NVML's average-power view is named "<main>:avg".
    if str(meta.get("backend", "")) == "nvml" and str(meta.get("name", "")).endswith(":avg"):
        return "view"
    scope = str(meta.get("scope", ""))
    if int(meta.get("node_level", 0) or 0):
        return {
            "node": "node",
            "cpu": "node_cpu",
            "memory": "node_memory",
            "package": "node_accel",
            "gpu": "node_accel",
        }.get(scope, "node_other")
    if str(meta.get("included_in", "") or ""):
        return "placeholder"
    if scope == "module":
        return "module"
    if scope == "package":
        return "package"
    shared = shared_devices(meta)
    if scope == "gpu" and shared and not all(d.startswith("mig-") for d in shared):
        return "placeholder"  # an MI250X secondary GCD: inside its package's channel
    return "device"


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


def channel_roles(metas: Sequence[dict[str, Any]]) -> list[str]:
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
        if roles[i] in ("device", "package", "module"):
            key = device_key(m)
            if key is not None:
                groups.setdefault(key, []).append(i)
    for key in list(groups):
        ranks = [int(metas[i].get("rank", 0)) for i in groups[key]]
        if len(set(ranks)) != len(ranks):  # one rank with two channels of one device: tell them by name
            for i in groups.pop(key):
                groups.setdefault(key + (str(metas[i].get("name", "")),), []).append(i)
    for idxs in groups.values():
        idxs.sort(key=lambda i: (int(metas[i].get("rank", 0)), i))
        ranks = [int(metas[i].get("rank", 0)) for i in idxs]
        if len(set(ranks)) != len(ranks):
            continue  # still two channels of one rank: not copies of each other, leave them be
        if len(idxs) == 1 and not is_mig_gpu(metas[idxs[0]]):
            continue
        kept = "module" if roles[idxs[0]] == "module" else "package"
        for i in idxs:
            roles[i] = "placeholder"
        rep = metas[idxs[0]]
        roles[idxs[0]] = kept
        rep["sharers"] = ",".join(str(r) for r in ranks)
        rep["copies"] = [int(metas[i].get("index", i)) for i in idxs]
    # included_in at node level
    by_name = {
        (str(m.get("host", "")), str(m.get("name", ""))): i
        for i, m in enumerate(metas)
        if roles[i].startswith("node")
    }
    for i, m in enumerate(metas):
        if not roles[i].startswith("node"):
            continue
        host, seen, inside = str(m.get("host", "")), {i}, str(m.get("included_in", "") or "")
        while inside:
            j = by_name.get((host, inside))
            if j is None or j in seen:
                break
            if channel_role(metas[j]) == channel_role(m):
                roles[i] = "placeholder"
                break
            seen.add(j)
            inside = str(metas[j].get("included_in", "") or "")
    # two backends, one scope, one host
    backends: dict[tuple[str, str], set[str]] = {}
    for i, m in enumerate(metas):
        if roles[i].startswith("node"):
            backends.setdefault((str(m.get("host", "")), roles[i]), set()).add(str(m.get("backend", "")))
    for i, m in enumerate(metas):
        found = (
            backends.get((str(m.get("host", "")), roles[i]), set()) if roles[i].startswith("node") else set()
        )
        if len(found) > 1:
            kept = min(found, key=_backend_rank)
            if str(m.get("backend", "")) != kept:
                m["not_added"] = kept
                roles[i] = "skip"
    return roles


_NODE_WHAT = {
    "node": "node",
    "node_cpu": "node CPU",
    "node_memory": "node memory",
    "node_accel": "accelerator",
    "node_other": "other node-level",
}


def role_notes(metas: Sequence[dict[str, Any]], roles: Sequence[str]) -> list[str]:
    """Sentences for the table's notes about channels :func:`channel_roles` left out and why
    (one per kind of channel and pair of backends, with the number of hosts)."""
    hosts: dict[tuple[str, str, str], set[str]] = {}
    for m, role in zip(metas, roles):
        if role == "skip" and str(m.get("not_added", "")):
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
    sharers = [int(x) for x in str(meta.get("sharers", "") or "").split(",") if x.strip()]
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
