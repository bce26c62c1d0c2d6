"""Benchmark scripts, run from the repository root as modules (``python -m benchmarks.frontier``), so
that they share ``benchmarks._common`` as a package sibling."""
