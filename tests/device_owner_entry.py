"""Run under mpiexec by test_device_owner.py: ``python device_owner_entry.py OUT BUS_0 BUS_1 ...``.

Rank r is bound to the device with PCI bus id ``BUS_r`` ("-": a rank whose device is unknown). It asks
the run's rule which rank of its node applies the device's settings, opens the device's control on the
NVML stand-in (a privileged H100 with that bus id, 700 W limit), applies a 300 W cap, reads the limit,
restores it and reads it again, and writes what it saw to ``OUT/rank-R.json``. The stand-in is the
rank's own, so what one rank saw tells what that rank set."""

import json
import sys
from pathlib import Path

from energy_hpc.context import detect

ctx, comm = detect()

from energy_hpc.run import _owns_device  # noqa: E402
from energy_hpc.telemetry.base import SensorContext  # noqa: E402
from energy_hpc.telemetry.control import open_control  # noqa: E402
from energy_hpc.telemetry.emulated.pynvml_api import FakeGpu, make_pynvml  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    bus = sys.argv[2 + comm.rank]
    bus = "" if bus == "-" else bus
    owner = _owns_device(comm, ctx, bus)
    gpu = FakeGpu(uuid=f"GPU-rank{comm.rank}", bus_id=bus or "00000000:3B:00.0", privileged=True)
    lib = make_pynvml([gpu])
    control = open_control("nvml", SensorContext(device_bus_id=bus), owner=owner, library=lib)
    control.check([{"power_cap_W": 300.0}])
    control.apply({"power_cap_W": 300.0})
    during_W = gpu.power_limit_mW / 1000
    control.restore()
    after_W = gpu.power_limit_mW / 1000
    control.close()
    record = {"node": ctx.node_index, "owner": owner, "during_W": during_W, "after_W": after_W}
    (out / f"rank-{comm.rank}.json").write_text(json.dumps(record))


main()
