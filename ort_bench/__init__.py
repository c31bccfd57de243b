"""ort-bench: does an unlearned LLM really forget?

The packages follow the pipeline, and each imports only the ones before it:

    kb/          facts x templates -> probes
    scoring/     models and backends answer probes -> records -> metrics -> results
    unlearning/  reference methods and attacks that make the checkpoints scoring measures
    board/       verified submissions -> leaderboard tables
    api.py       the Python API (the facade); cli.py and demo.py are thin shells over it

Shared by all: errors, paths, jsonl, provenance (hashes, versions), benchmark (versions), scorers.
"""
