"""The Python API: every command of the `ort-bench` CLI as a function, in pipeline order.

The CLI, the demo and the scripts call these; tests and notebooks can too. Each name is the
function that does the work (this module only gathers them), so its docstring is the reference:

    facts -> probes      load_templates, validate_templates, render, import_ort
    new form variants    new_variant (a commented draft), check_variants, propose_variants (a model's phrasings)
    probes -> scores     evaluate (EvalConfig, LoadOptions; shard=, manifest=), merge_shards, read_manifest,
                         sweep (SweepConfig, load_sweep_config: checkpoints x shards as Ray tasks),
                         markdown_table, fmt
    checkpoints          unlearn (METHODS, make_config), unlearn_one_per_target, finetune_attack, relearn_attack
    scores -> tables     submit, verify_run, audit, build_leaderboard, build_all
                         build_report (one run as a self-contained HTML page)
    sharing              export_hf_dataset (probes per tier, or a run's records, as a `datasets` folder),
                         export_lm_eval (the forms as lm-evaluation-harness tasks)

    from ort_bench import api
    card = api.unlearn("npo", "embedded", ["france"], "runs/npo", max_steps=20)
    results = api.evaluate("runs/npo", "runs/npo-eval", reference="embedded", limit=100)
"""

from __future__ import annotations

from ort_bench.board.audit import audit
from ort_bench.board.export import export_hf_dataset
from ort_bench.board.export_lm_eval import export_lm_eval
from ort_bench.board.leaderboard import build_all, build_leaderboard
from ort_bench.board.report import build_report
from ort_bench.board.submit import submit, verify_run
from ort_bench.kb.ort_import import import_ort
from ort_bench.kb.render import render, validate_templates
from ort_bench.kb.templates import load_templates
from ort_bench.kb.variants import new_variant
from ort_bench.models.load_options import LoadOptions
from ort_bench.scoring.evaluate import EvalConfig, evaluate
from ort_bench.scoring.per_target import read_manifest
from ort_bench.scoring.results import fmt, markdown_table
from ort_bench.scoring.shards import merge_shards, parse_shard
from ort_bench.scoring.sweep import SweepConfig, SweepFailed, load_sweep_config, sweep
from ort_bench.scoring.variant_check import check_variants, propose_variants
from ort_bench.unlearning.attacks import finetune_attack, relearn_attack
from ort_bench.unlearning.methods import METHODS, make_config
from ort_bench.unlearning.unlearn import unlearn, unlearn_one_per_target

__all__ = [
    "METHODS", "EvalConfig", "LoadOptions", "audit", "build_all", "build_leaderboard", "build_report", "evaluate",
    "export_hf_dataset", "export_lm_eval",
    "finetune_attack", "fmt", "import_ort", "load_templates", "make_config", "markdown_table", "merge_shards",
    "parse_shard", "read_manifest", "relearn_attack", "render", "submit", "sweep", "SweepConfig", "SweepFailed",
    "load_sweep_config", "unlearn", "unlearn_one_per_target",
    "validate_templates", "verify_run", "new_variant", "check_variants", "propose_variants",
]
