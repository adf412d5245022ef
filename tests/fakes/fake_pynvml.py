"""The stand-in for ``pynvml`` lives in the product (energy_hpc.telemetry.emulated.pynvml_api), where the
emulated sensors build on it; this name is kept for the tests that import it."""

import sys

from energy_hpc.telemetry.emulated import pynvml_api as _api

sys.modules[__name__] = _api
