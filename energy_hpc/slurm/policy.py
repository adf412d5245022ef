"""What a system allows a job, from its profile: node counts, time limits per job-size bin, where
a job may write, and how many cores each rank gets.

Used by :mod:`.render` before a script is written. A request the machine cannot satisfy at all
(more nodes than it has, absurd numbers) is refused; one that breaks a published policy (a time
limit longer than its job-size bin allows) is refused unless the user passes ``--force``, and then
warned about; results under a path the compute nodes cannot (or should not) write are warned about.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from energy_hpc.errors import SlurmError
from energy_hpc.slurm.systems import LimitBin, SystemProfile

# Where a profile does not say how big the system is: more nodes than any Slurm cluster has.
NODE_CEILING = 100_000
# More ranks on one node than any node has CPUs for.
RANKS_CEILING = 4096


def _n(value: int) -> str:
    """A count with thousands separators; a number too long to read is cut to its first digits."""
    text = f"{value:,}"
    return text if len(text) <= 20 else f"{str(value)[:12]}... ({len(str(value))} digits)"


def check_size(profile: SystemProfile, nodes: int, ranks_per_node: int) -> None:
    """Refuse a node or rank count the system cannot give (one line)."""
    if nodes < 1:
        raise SlurmError(f"--nodes must be at least 1, not {_n(nodes)}")
    if profile.max_nodes and nodes > profile.max_nodes:
        raise SlurmError(
            f"--nodes {_n(nodes)}: {profile.name} has {_n(profile.max_nodes)} compute nodes; ask for fewer"
        )
    if nodes > NODE_CEILING:
        raise SlurmError(
            f"--nodes {_n(nodes)} is more nodes than any Slurm cluster has; the {profile.name} profile "
            f"states no size, and energy-hpc takes at most {_n(NODE_CEILING)}"
        )
    if ranks_per_node < 1:
        raise SlurmError(f"--ranks-per-node must be at least 1, not {_n(ranks_per_node)}")
    most = profile.cores_per_node or RANKS_CEILING
    if ranks_per_node > most:
        raise SlurmError(
            f"--ranks-per-node {_n(ranks_per_node)}: a {profile.name} node has room for at most {_n(most)} "
            f"rank(s) ({'one per core' if profile.cores_per_node else 'a ceiling for any node'})"
        )


def cores_per_rank(profile: SystemProfile, ranks_per_node: int, enable: Sequence[str]) -> int:
    """``--cpus-per-task``: the profile's cores per rank, or, where an enabled optional setting gives
    the node more cores (Frontier's ``all-cores``: ``-S 0``), those cores shared among the ranks."""
    cores = 0
    for name in enable:
        cores = max(cores, profile.optional[name].cores_per_node)
    if not cores:
        return profile.cores_per_rank
    if ranks_per_node > cores:
        raise SlurmError(
            f"{ranks_per_node} ranks per node exceed the {cores} cores of a {profile.name} node; "
            "lower --ranks-per-node"
        )
    return cores // ranks_per_node


def _bin_scope(b: LimitBin) -> str:
    where = []
    if b.partition:
        where.append(f"partition {b.partition}")
    if b.qos:
        where.append(f"QOS {b.qos}")
    return " and ".join(where) or "any partition"


def limit_breaches(
    profile: SystemProfile, nodes: int, seconds: int, time: str, partition: str, qos: str
) -> list[str]:
    """The published limits a request breaks, one sentence each (empty: none).

    The bins that apply to the request's partition and QOS are grouped by the partition and QOS
    they name; in each group the node count must fall into a bin, and the time limit must not be
    longer than that bin's. Bins for another partition or QOS do not apply; a system whose profile
    has no bins has no policy to break."""
    groups: dict[tuple[str, str], list[LimitBin]] = {}
    for b in profile.limits:
        if b.applies_to(partition, qos):
            groups.setdefault((b.partition, b.qos), []).append(b)
    out = []
    for bins in groups.values():
        scope = _bin_scope(bins[0])
        hit = next((b for b in bins if b.nodes_min <= nodes <= b.nodes_max), None)
        if hit is None:
            lo, hi = min(b.nodes_min for b in bins), max(b.nodes_max for b in bins)
            out.append(f"{profile.name} takes jobs of {_n(lo)}-{_n(hi)} nodes in {scope}, not {_n(nodes)}")
        elif seconds > hit.seconds:
            out.append(
                f"--time {time} is longer than the {hit.time} {profile.name} allows jobs of "
                f"{_n(hit.nodes_min)}-{_n(hit.nodes_max)} nodes in {scope} ({hit.name})"
            )
    return out


def _under(path: Path, prefix: str) -> bool:
    """``path`` is ``prefix`` or below it, as written or with links resolved on this machine."""
    candidates = {Path(prefix)}
    try:
        candidates.add(Path(prefix).resolve())
    except OSError:
        pass
    return any(path == c or c in path.parents for c in candidates)


def _expand(text: str, environ: Mapping[str, str]) -> str:
    """``$NAME``/``${NAME}`` from ``environ``; unknown names are left as they are."""
    return re.sub(
        r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))",
        lambda m: environ.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def storage_warning(
    profile: SystemProfile,
    folder: Path,
    account: str = "",
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """One sentence when ``folder`` lies where the profile says compute nodes cannot write (or the
    centre asks jobs not to), saying where to write instead; None otherwise."""
    env = os.environ if environ is None else environ
    st = profile.storage
    folder = Path(folder)
    paths = {folder}
    try:
        paths.add(folder.resolve())
    except OSError:
        pass
    read_only = next((p for p in st.read_only if any(_under(f, p) for f in paths)), None)
    discouraged = next((p for p in st.not_for_jobs if any(_under(f, p) for f in paths)), None)
    if read_only:
        what = f"is under {read_only}, which {profile.name}'s compute nodes cannot write: the job would fail"
    elif discouraged:
        what = f"is under {discouraged}, which {profile.name}'s centre asks jobs not to write to"
    else:
        return None
    hint = ""
    if st.write_to:
        target = st.write_to.replace("{account}", account.lower() or "<account>")
        expanded = _expand(target, env)
        shown = target if expanded == target else f"{target} ({expanded})"
        hint = f"; write under {shown} instead, e.g. -o {expanded.rstrip('/')}/{folder.name}"
    return f"results folder {folder} {what}{hint}"
