"""Probes -> outputs -> scores: backends, the scoring loop, per-probe records, shards, one checkpoint per
target, sweeps, metrics and the results file (models themselves: `ort_bench.models`)."""
