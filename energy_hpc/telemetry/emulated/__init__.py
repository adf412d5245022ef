"""Emulated sensors: vendor-library stand-ins driven by a true power signal whose energy is exact.

Everything here is for tests, demos and the calibration benchmark; every channel it feeds is labelled
EMULATED, never taken for a measurement.
"""
