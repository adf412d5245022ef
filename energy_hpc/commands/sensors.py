"""energy-hpc sensors: which telemetry backends this node offers, what they would record, and why not."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from energy_hpc.telemetry.base import SensorContext

HELP = "list every sensor backend: usable here or not (and why), and the channels it would record"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--probe",
        action="store_true",
        help="run each backend's start-up counter probe (slower; reports counter faults)",
    )


def sensor_context(env: Mapping[str, str] | None = None, probe: bool = False) -> SensorContext:
    """A SensorContext for this process from the environment alone (no MPI is started). Without
    ``probe`` the backends' start-up counter probes are left out (``probe_reads = 0``)."""
    import os
    import socket

    from energy_hpc.context import LOCAL_RANK_VARS, env_int, visible_devices
    from energy_hpc.telemetry import registry

    env = os.environ if env is None else env
    var, entries = visible_devices(env)
    options = {} if probe else {b: {"probe_reads": 0} for b in registry.probe_backends()}
    return SensorContext(
        hostname=socket.gethostname().split(".")[0],
        local_rank=env_int(env, LOCAL_RANK_VARS, 0),
        node_leader=True,
        visible_devices=entries,
        visible_env=var,
        options=options,
    )


def rows(ctx: SensorContext) -> list[dict[str, Any]]:
    from energy_hpc.telemetry import registry

    return registry.describe(ctx)


def run(args: argparse.Namespace) -> int:
    ctx = sensor_context(probe=args.probe)
    table = rows(ctx)
    if args.json:
        print(
            json.dumps(
                {
                    "host": ctx.hostname,
                    "visible_env": ctx.visible_env,
                    "visible_devices": list(ctx.visible_devices),
                    "backends": table,
                },
                indent=2,
            )
        )
        return 0
    print(
        f"sensors on {ctx.hostname}"
        + (f" ({ctx.visible_env}={','.join(ctx.visible_devices)})" if ctx.visible_env else "")
    )
    width = max(len(r["backend"]) for r in table)
    for r in table:
        state = "usable" if r["usable"] else "no"
        level = "node" if r["node_level"] else "rank"
        print(f"  {r['backend']:<{width}}  {state:<6}  {level:<4}  {r['what']}")
        if r.get("parts"):  # emulated: one sensor name per part, and where each is recorded
            for lvl in ("rank", "node"):
                names = [p["sensor"] for p in r["parts"] if p["node_level"] == (lvl == "node")]
                if names:
                    print(
                        f"  {'':<{width}}    {lvl}-level parts: {', '.join(names)}"
                        + (" (node leader only)" if lvl == "node" else "")
                    )
            if r["usable"]:
                print(f"  {'':<{width}}    channels of {r['channels_of']} (EMULATED, not a measurement):")
        if r["usable"]:
            for c in r["channels"]:
                extra = f", shares {'+'.join(c['shared_with'])}" if c["shared_with"] else ""
                print(
                    f"  {'':<{width}}    - {c['name']}  [{c['scope']}, {c['method']}, "
                    f"every {c['update_period_s']:g} s{extra}]"
                )
        else:
            print(f"  {'':<{width}}    why: {r['reason']}")
    return 0
