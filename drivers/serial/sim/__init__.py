"""Device simulators written from the protocol documents, on real pseudo-terminal pairs.

Used by the tests, the benchmarks and `make demo` (python -m drivers.serial.sim --help).
"""
