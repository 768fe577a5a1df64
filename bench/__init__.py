"""Benchmarks: the gateway against the usual code and against nginx + Nchan (not run by CI)."""
