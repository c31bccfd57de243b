"""Probes -> outputs -> scores: models, backends, per-probe records, metrics and the results file."""
