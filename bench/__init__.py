"""Benchmarks of modelruns beside its peers and the machine's own limits: `python -m bench`."""
