"""What each channel's energy counts towards, and how a shared package is split among its devices.

Roles (from the channel metadata only; the file says what each channel measures):

- ``device``: a rank-level channel measuring the rank's own device (a GPU, a GCD with its own sensor,
  the CPU-time estimate). Added to the device total of the rank's windows.
- ``package``: a rank-level channel (scope ``package``) whose reading includes several devices, named in
  ``shared_with`` (MI250X: both GCDs of the package). It is recorded once, by one rank, and added to
  the device total once.
- ``placeholder``: a device whose consumption is inside another channel (an MI250X secondary GCD: scope
  ``gpu`` with ``shared_with`` set, or ``included_in`` set). Never added.
- MIG: NVML has no counter per MIG instance, so every rank on a slice of one GPU records the whole
  GPU (scope ``gpu``, ``shared_with`` = the GPU's MIG instances). :func:`channel_roles` counts the
  lowest such rank's copy once, as a ``package`` shared by the ranks that recorded it (its
  ``sharers``), and makes the other copies placeholders.
- ``view``: the same quantity read another way (``view_of`` set, e.g. NVML's 1 s average). Never added.
- ``node`` / ``node_cpu`` / ``node_memory`` / ``node_accel`` / ``node_other``: node-level channels
  (``node_level`` = 1, recorded by the node leader). Whole-node energy goes to its own column; cpu
  and memory to theirs; they are never added to the device total.

MI250X split (per-device figures): a package window's energy is split **equally** among the devices of
``shared_with`` that a rank of this run was bound to. Why equal: the hardware reports only the sum; the
two GCDs of a package run the same SPMD inference in lock step, so their busy times are equal to
within the window edges, and a split proportional to busy time would equal the equal split while
adding the noise of the secondary's window edges; an idle GCD still draws its static power, which is
part of the package and no more one GCD's than the other's. When only one GCD of a package is used by
the run, the whole package goes to it, flagged ``includes idle partner GCD``: the idle die's draw is a
cost of the job and of nobody else. Totals add each package channel once, so nothing is counted twice
and nothing is lost.
"""

from __future__ import annotations

from typing import Any, Sequence

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
    if str(meta.get("view_of", "") or ""):
        return "view"
    # Files of schema 1.0 do not store view_of: NVML's average-power view is named "<main>:avg".
    if str(meta.get("backend", "")) == "nvml" and str(meta.get("name", "")).endswith(":avg"):
        return "view"
    scope = str(meta.get("scope", ""))
    if int(meta.get("node_level", 0) or 0):
        return {"node": "node", "cpu": "node_cpu", "memory": "node_memory", "package": "node_accel",
                "gpu": "node_accel"}.get(scope, "node_other")
    if str(meta.get("included_in", "") or ""):
        return "placeholder"
    if scope == "package":
        return "package"
    if scope == "gpu" and shared_devices(meta):
        return "placeholder"
    return "device"


def is_mig_gpu(meta: dict[str, Any]) -> bool:
    """A whole-GPU channel recorded for a rank bound to a MIG instance of it."""
    shared = shared_devices(meta)
    return str(meta.get("scope", "")) == "gpu" and not int(meta.get("node_level", 0) or 0) \
        and not str(meta.get("included_in", "") or "") and bool(shared) and all(d.startswith("mig-") for d in shared)


def channel_roles(metas: Sequence[dict[str, Any]]) -> list[str]:
    """:func:`channel_role` of every channel of one run, with what needs the others: of the copies of
    one MIG GPU (same host and device) the lowest rank's becomes the ``package`` and gets
    ``meta["sharers"]`` (the recording ranks, comma-separated); the other copies are placeholders."""
    roles = [channel_role(m) for m in metas]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, m in enumerate(metas):
        if is_mig_gpu(m):
            groups.setdefault((str(m.get("host", "")), str(m.get("device", ""))), []).append(i)
    for idxs in groups.values():
        idxs.sort(key=lambda i: int(metas[i].get("rank", 0)))
        for i in idxs:
            roles[i] = "placeholder"
        roles[idxs[0]] = "package"
        metas[idxs[0]]["sharers"] = ",".join(str(int(metas[i].get("rank", 0))) for i in idxs)
    return roles


def package_shares(meta: dict[str, Any], bus_to_rank: dict[str, int], recording_rank: int,
                   ranks_in_case: Sequence[int] | None = None) -> tuple[dict[int, float], str]:
    """Ranks that get a share of a package channel, with the share, and the label of the rule.

    ``bus_to_rank`` maps the normalised bus ids of the devices bound to ranks on the channel's host.
    ``ranks_in_case`` restricts the sharers to ranks that ran the case.
    """
    if str(meta.get("sharers", "")):  # a MIG GPU (see channel_roles)
        return _mig_shares(meta, recording_rank, ranks_in_case)
    shared = shared_devices(meta)
    users = [bus_to_rank[d] for d in shared if d in bus_to_rank]
    if ranks_in_case is not None:
        users = [r for r in users if r in set(ranks_in_case)]
    users = list(dict.fromkeys(users))
    if len(users) >= 2:
        return {r: 1.0 / len(users) for r in users}, f"equal split of package among {len(users)} devices"
    if len(users) == 1:
        label = "includes idle partner GCD" if len(shared) > 1 else "whole package"
        return {users[0]: 1.0}, label
    return {recording_rank: 1.0}, "whole package (devices not matched to ranks)"


def _mig_shares(meta: dict[str, Any], recording_rank: int,
                ranks_in_case: Sequence[int] | None) -> tuple[dict[int, float], str]:
    """A MIG GPU's energy split equally among the ranks on its instances that ran the case: the same
    reasoning as for a package (the hardware gives only the sum). When the GPU has instances no rank
    of this run used, what they drew (another job's work, or idle slices) is inside the figure: said."""
    sharers = [int(x) for x in str(meta["sharers"]).split(",") if x.strip()]
    users = [r for r in sharers if ranks_in_case is None or r in set(ranks_in_case)] or [recording_rank]
    n_instances = len(shared_devices(meta))
    label = f"equal split of GPU among {len(users)} MIG instances" if len(users) > 1 else "whole GPU (MIG)"
    if n_instances > len(sharers):
        label += f"; includes {n_instances - len(sharers)} MIG instance(s) this run did not use"
    return {r: 1.0 / len(users) for r in users}, label
