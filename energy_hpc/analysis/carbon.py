"""Carbon as a conversion of measured energy: ``co2e_g = energy_J x PUE x intensity / 3.6e6``.

The factor (grid carbon intensity in gCO2e/kWh and the facility's power usage effectiveness) is the
user's statement, not something this tool measures; every output that shows a CO2e figure says so and
states the factor. The uncertainty is the energy's, scaled by the same factor: the factor itself is taken
as exact, since it is stated, not measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from energy_hpc.errors import UserError

J_PER_KWH = 3.6e6
# the columns this adds, in order (CSV header and JSON keys)
CARBON_COLUMNS = (
    "co2e_g",
    "co2e_uncertainty_g",
    "co2e_per_1000_units_g",
    "co2e_per_1000_units_uncertainty_g",
    "carbon_intensity_g_per_kWh",
    "pue",
)


@dataclass(frozen=True)
class CarbonFactor:
    """A stated conversion: grid intensity (gCO2e per kWh drawn by the facility) and PUE (facility energy
    per IT energy, >= 1)."""

    intensity_g_per_kWh: float
    pue: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.intensity_g_per_kWh) and 0 <= self.intensity_g_per_kWh <= 5000):
            raise UserError(
                f"--carbon-intensity {self.intensity_g_per_kWh:g}: give the grid's gCO2e per kWh, "
                "from 0 to 5000 (grids range from about 10 to 1000)"
            )
        if not (math.isfinite(self.pue) and 1.0 <= self.pue <= 5.0):
            raise UserError(
                f"--pue {self.pue:g}: give the facility's power usage effectiveness, from 1 to 5 "
                "(1.0 counts the measured energy alone)"
            )

    @property
    def g_per_J(self) -> float:
        """gCO2e per measured joule."""
        return self.intensity_g_per_kWh * self.pue / J_PER_KWH

    def legend(self) -> str:
        """The line every output with CO2e columns carries."""
        return (
            f"co2e_g = energy_J x PUE {self.pue:g} x {self.intensity_g_per_kWh:g} gCO2e/kWh: a conversion "
            "of measured energy by a stated factor, not a measurement"
        )


def _per_unit_unc(row: dict[str, Any]) -> float:
    """Energy per unit's total uncertainty (measurement and spread) where known, else the measurement's."""
    total = row.get("energy_per_unit_unc_J", math.nan)
    return float(total) if math.isfinite(total) else float(row.get("energy_per_unit_meas_unc_J", math.nan))


def with_carbon(rows: list[dict[str, Any]], factor: CarbonFactor) -> list[dict[str, Any]]:
    """The rows with the CARBON_COLUMNS added and a flag naming the conversion (new dicts; the input is
    left as it was)."""
    k = factor.g_per_J
    out = []
    for row in rows:
        new = dict(row)
        new["co2e_g"] = row["energy_J"] * k
        new["co2e_uncertainty_g"] = row["energy_uncertainty_J"] * k
        new["co2e_per_1000_units_g"] = row["energy_per_unit_J"] * 1000.0 * k
        new["co2e_per_1000_units_uncertainty_g"] = _per_unit_unc(row) * 1000.0 * k
        new["carbon_intensity_g_per_kWh"] = factor.intensity_g_per_kWh
        new["pue"] = factor.pue
        new["flags"] = [*row.get("flags", []), factor.legend()]
        out.append(new)
    return out
