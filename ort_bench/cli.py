"""`ort-bench` command line: a thin shell over `ort_bench.api`. Bad input exits 1 with one line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from typing import Any

from ort_bench import api
from ort_bench.benchmark import VERSIONS
from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import LANGS, SPLITS
from ort_bench.kb.templates import FORMS
from ort_bench.kb.tiers import TIERS
from ort_bench.models.load_options import LoadOptions, add_load_options


def _csv(value: str) -> list[str]:
    return [v for v in value.replace(",", " ").split() if v]


def _positive(value: str) -> int:
    """A whole number of at least 1 (a count: 0 or -1 would silently mean "all" or "nothing")."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: must be at least 1")
    return n


def _limit(value: str) -> int | dict[str, int]:
    """`N` (every split) or `forget=N,neighbour=M,...` (the splits named); every N at least 1."""
    try:
        if "=" not in value:
            return _positive(value)
        out = {}
        for part in _csv(value):
            split, n = part.split("=", 1)
            if split not in SPLITS:
                raise ValueError
            out[split] = _positive(n)
        return out
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"{value!r}: give N or split=N,... with N >= 1 (splits: "
                                         f"{', '.join(SPLITS)})") from None


def cmd_templates_list(args: argparse.Namespace) -> int:
    templates = api.load_templates()
    rows = [t.spec.meta.model_dump(mode="json") for t in templates]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    cols = ("id", "form", "lang", "scorer", "hops", "needs")
    table = [[str(r[c]) if c != "needs" else ",".join(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    print(f"\n{len(rows)} templates, {len({r['form'] for r in rows})} forms")
    return 0


def cmd_templates_validate(args: argparse.Namespace) -> int:
    skipped: Counter = Counter()
    templates, counts = api.validate_templates(args.templates, args.data, skipped=skipped)
    unused = [tid for tid, n in counts.items() if n == 0]
    for tid in unused:
        print(f"warning: {tid}: renders no probe over the knowledge base", file=sys.stderr)
    for (tid, reason), n in sorted(skipped.items()):
        if reason == "every answer stands in the prompt":
            print(f"note: {tid}: {n} fact(s) not rendered: every answer stands in the prompt", file=sys.stderr)
    print(f"{len(templates)} templates valid; {sum(counts.values())} probes rendered over the knowledge base")
    return 0


def cmd_templates_show(args: argparse.Namespace) -> int:
    by_id = {t.id: t for t in api.load_templates()}
    if args.id not in by_id:
        raise OrtBenchError(f"unknown template id {args.id!r} (see `ort-bench templates list`)")
    t = by_id[args.id]
    print(f"# {t.path}")
    print(t.path.read_text(encoding="utf-8"))
    probes, _ = api.render(split="forget", forms=[t.spec.form], langs=[t.spec.lang])
    example = next((p for p in probes if p.template_id == t.id), None)
    if example is not None:
        print("# example probe")
        print(json.dumps(example.model_dump(mode="json"), ensure_ascii=False, indent=2))
    return 0


def cmd_templates_new(args: argparse.Namespace) -> int:
    path = api.new_variant(args.form, args.lang, args.id, out=args.out, like=args.like)
    print(f"wrote {path}: a draft (status: draft), in no tier until a person accepts it; edit it, then run "
          f"`ort-bench templates check {path} --model embedded`")
    return 0


SERVED_FIELDS = ("base_url", "api_key_env", "tokenizer", "max_concurrency", "request_timeout", "max_retries")


def add_served_options(parser: argparse.ArgumentParser) -> None:
    """The flags of `--backend openai`, on every command that scores with a backend (EvalConfig fields)."""
    served = parser.add_argument_group("--backend openai (an OpenAI-compatible /completions endpoint)")
    served.add_argument("--base-url", default=None, help="the endpoint, as OpenAI clients take it: http://HOST:PORT/v1")
    served.add_argument("--api-key-env", default=None, metavar="VAR",
                        help="the environment variable that holds the API key (sent as a bearer token, never stored)")
    served.add_argument("--tokenizer", default=None,
                        help="whose chat template formats the prompts: a model directory, embedded, a .gguf, a hub id, "
                        "or none for plain prompts (default: the root the server reports for the model)")
    served.add_argument("--max-concurrency", type=_positive, default=8, help="requests in flight at most")
    served.add_argument("--request-timeout", type=float, default=300.0, help="seconds a request may take")
    served.add_argument("--max-retries", type=int, default=5,
                        help="retries of a request on 429, 5xx, a timeout or a refused connection (with backoff)")


def served_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SERVED_FIELDS}


def _variant_config(args: argparse.Namespace) -> api.EvalConfig:
    return api.EvalConfig(**dataclasses.asdict(LoadOptions.from_args(args)), backend=args.backend, seed=args.seed,
                          batch_size=args.batch_size, **served_settings(args))


def cmd_templates_check(args: argparse.Namespace) -> int:
    checks = api.check_variants(args.variants, model=args.model, limit=args.limit, config=_variant_config(args),
                                out=args.out, progress=not args.json)
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], ensure_ascii=False, indent=2))
    else:
        print("\n\n".join(c.report() for c in checks))
    return 0 if all(c.passed for c in checks) else 1


def cmd_templates_propose(args: argparse.Namespace) -> int:
    report = api.propose_variants(args.form, model=args.model, n=args.n, base=args.base, config=_variant_config(args),
                                  limit=args.limit, out=args.out, folder=args.dir, check=not args.no_check,
                                  progress=not args.json)
    print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2) if args.json else report.report())
    return 0


def _variant_scoring_args(ap: argparse.ArgumentParser) -> None:
    """The flags `templates check` and `templates propose` share: who scores, with what, on how many facts."""
    from ort_bench.scoring.variant_check import DEFAULT_LIMIT

    ap.add_argument("--model", default="embedded", help="the reference model (any model spec; default: embedded)")
    ap.add_argument("--backend", default="hf", help="inference engine, as for evaluate (default hf)")
    ap.add_argument("--limit", type=_positive, default=DEFAULT_LIMIT,
                    help=f"forget facts the variants are compared on (default {DEFAULT_LIMIT})")
    ap.add_argument("--batch-size", type=_positive, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, metavar="DIR",
                    help="keep the records here: a later call with the same model reuses them (default: a temporary "
                    "folder)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the report")
    add_served_options(ap)
    add_load_options(ap)


def cmd_render(args: argparse.Namespace) -> int:
    probes, summary = api.render(args.split, args.forms, args.langs, args.targets, args.out)
    print(json.dumps({"out": str(args.out), **summary.as_dict()}, ensure_ascii=False, indent=2))
    return 0


def cmd_import_ort(args: argparse.Namespace) -> int:
    summary = api.import_ort(args.dir, args.out)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    config = api.EvalConfig(
        **dataclasses.asdict(LoadOptions.from_args(args)), backend=args.backend, max_new_tokens=args.max_new_tokens,
        seed=args.seed, batch_size=args.batch_size, tensor_parallel_size=args.tensor_parallel_size,
        chunk_size=args.chunk_size, tier=args.tier, **served_settings(args),
    )
    results = api.evaluate(
        args.model, args.out, reference=args.reference, forms=args.forms, langs=args.langs, targets=args.targets,
        splits=args.splits, limit=args.limit, probes_file=args.probes, train_form=args.train_form, config=config,
        reuse=args.reuse, shard=args.shard, manifest=args.manifest,
    )
    return _print_run(results, args.out)


def _print_run(results: dict, out: str) -> int:
    print(api.markdown_table(results))
    unscored = (results.get("model") or {}).get("unscored")
    if unscored:  # an endpoint without log-probabilities: said beside the table, not only in results.json
        print(f"\nnot scored: {', '.join(unscored['forms'])} ({unscored['probes']} choice probes): {unscored['why']}")
    print(f"\nrecords: {out}/records.jsonl  results: {out}/results.json")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    return _print_run(api.merge_shards(args.dirs, args.out), args.out)


def cmd_sweep(args: argparse.Namespace) -> int:
    def tables(summary: dict) -> None:
        for name, results in summary["results"].items():
            print(f"## {name}\n")
            _print_run(results, f"{summary['out']}/{name}")
            print()

    try:
        summary = api.sweep(args.config, out=args.out, ray_address=args.ray)
    except api.SweepFailed as exc:  # the checkpoints that finished are merged: show them, then the error
        tables(exc.summary)
        raise
    except KeyboardInterrupt:  # Ray is shut down by then; what finished is kept
        print("error: sweep interrupted; run it again to resume it", file=sys.stderr)
        return 130
    tables(summary)
    print(f"jobs: {len(summary['ran'])} run, {len(summary['skipped'])} already done")
    return 0


def _shard(value: str) -> tuple[int, int]:
    try:
        return api.parse_shard(value)
    except OrtBenchError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_audit(args: argparse.Namespace) -> int:
    report = api.audit(args.submission, sample=args.sample, seed=args.seed, model=args.model, write=not args.dry_run,
                   load=LoadOptions.from_args(args))
    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    summary = api.submit(args.run_dir, args.name, method=args.method, link=args.link, date=args.date,
                     dry_run=args.dry_run, model_name=args.model_name)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


def cmd_leaderboard_build(args: argparse.Namespace) -> int:
    if args.version == "all":
        if args.out is not None:
            raise OrtBenchError("--out needs one --version (each version has its own folder)")
        print(json.dumps(api.build_all(keep_going=args.keep_going), ensure_ascii=False, indent=2))
    else:
        print(json.dumps(api.build_leaderboard(out=args.out, version=args.version, keep_going=args.keep_going),
                         ensure_ascii=False, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    summary = api.build_report(args.run_dir, out=args.out, placebo=args.placebo, sample=args.sample)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


def cmd_export_hf_dataset(args: argparse.Namespace) -> int:
    summary = api.export_hf_dataset(args.out, tier=args.tier, records=args.records, force=args.force)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


def cmd_export_lm_eval(args: argparse.Namespace) -> int:
    summary = api.export_lm_eval(args.out, tier=args.tier, splits=args.split, forms=args.forms, model=args.model,
                                 limit=args.limit, force=args.force)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from ort_bench.unlearning.methods import config_from_args

    if args.one_per_target:
        checkpoints = api.unlearn_one_per_target(args.method, args.model, args.targets, args.out,
                                                 train_form=args.train_form, config=config_from_args(args),
                                                 load=LoadOptions.from_args(args))
        print(json.dumps({"method": args.method, "checkpoints": checkpoints,
                          "manifest": f"{args.out}/manifest.json"}))
        return 0
    card = api.unlearn(args.method, args.model, args.targets, args.out, train_form=args.train_form,
                   config=config_from_args(args), load=LoadOptions.from_args(args))
    print(json.dumps({k: card[k] for k in ("method", "wall_seconds") if k in card} | {"out": str(args.out)}))
    return 0


def _steps_list(value: str) -> tuple[int, ...]:
    """`5,10`: step counts, each a whole number of at least 1 (`attack --save-at`)."""
    parts = _csv(value)
    if not parts:
        raise argparse.ArgumentTypeError(f"{value!r}: give step counts, e.g. 5,10")
    return tuple(_positive(v) for v in parts)


def cmd_attack(args: argparse.Namespace) -> int:
    common = {"lr": args.lr, "seed": args.seed, "load": LoadOptions.from_args(args), "save_at": args.save_at}
    if args.attack_command == "finetune":
        card = api.finetune_attack(args.model, args.env, args.steps, args.out, batch_size=args.batch_size, **common)
    else:
        card = api.relearn_attack(args.model, args.targets, args.samples, args.out, steps=args.steps,
                              batch_size=args.batch_size, form=args.form, **common)
    summary = {"attack": args.attack_command, "out": str(args.out), "wall_seconds": card.get("wall_seconds")}
    if card.get("intermediate_checkpoints"):
        summary["intermediate_checkpoints"] = card["intermediate_checkpoints"]
    print(json.dumps(summary))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ort_bench.demo import run_demo

    run_demo(args.out, args.targets, args.method, args.steps, args.lr, args.limit, tier=args.tier,
             load=LoadOptions.from_args(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ort-bench",
        description="Check whether an unlearned LLM really forgot: render forget facts into many "
        "forms, score a checkpoint per form, build leaderboards.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("templates", help="list, validate and show form templates; draft, propose and check new ones")
    tsub = t.add_subparsers(dest="templates_command", required=True, metavar="ACTION")
    tl = tsub.add_parser("list", help="table of every template (id, form, lang, scorer, ...)")
    tl.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tl.set_defaults(func=cmd_templates_list)
    tv = tsub.add_parser("validate", help="check every template's variables and render it over the KB")
    tv.add_argument("--templates", default=None, help="templates folder (default: the shipped one)")
    tv.add_argument("--data", default=None, help="knowledge base folder (default: the shipped one)")
    tv.set_defaults(func=cmd_templates_validate)
    ts = tsub.add_parser("show", help="print one template and an example probe")
    ts.add_argument("id")
    ts.set_defaults(func=cmd_templates_show)
    tn = tsub.add_parser("new", help="write a commented draft of a new variant of a form",
                         description="Write templates/drafts/FORM/ID.yaml: the fields every variant of FORM shares, "
                         "the varying ones from one of its variants with the alternatives in comments. A draft "
                         "counts in no tier until a person moves it to templates/FORM/ and deletes `status: draft`.")
    tn.add_argument("form", choices=FORMS)
    tn.add_argument("--lang", required=True, choices=LANGS)
    tn.add_argument("--id", required=True, help="the new variant's id (never reused: probe ids hash it)")
    tn.add_argument("--like", default=None, help="the accepted variant to start from (default: one in --lang)")
    tn.add_argument("--out", default=None, help="the file to write (default: templates/drafts/FORM/ID.yaml)")
    tn.set_defaults(func=cmd_templates_new)
    tc = tsub.add_parser("check", help="does a new variant measure its form? (exit 1 if not)",
                         description="Render each variant over the KB, score the reference on it and on its form's "
                         "accepted variants (same forget facts, same scoring path as evaluate), and check: its known "
                         "rate's 95% Wilson interval meets the form's range; its prompt shows no more of the answer "
                         "than the form's variants; its chance level is the form's and the reference beats it.")
    tc.add_argument("variants", nargs="+", metavar="ID_OR_FILE", help="drafts, proposals or accepted templates")
    _variant_scoring_args(tc)
    tc.set_defaults(func=cmd_templates_check)
    tp = tsub.add_parser("propose", help="ask a model for new phrasings of a form's prompt; write and check them",
                         description="Ask MODEL for N new phrasings of a variant's prompt, keep those that make valid "
                         "templates, write each to templates/proposals/FORM/ (status: proposal, proposed_by: the "
                         "model) and check it. No proposal counts in a tier until a person moves it.")
    tp.add_argument("form", choices=FORMS)
    tp.add_argument("--n", type=_positive, default=3, help="phrasings to ask for (default 3)")
    tp.add_argument("--from", dest="base", default=None, help="the variant to rephrase (default: an English "
                    "evaluation-half one)")
    tp.add_argument("--dir", default=None, help="where proposals go (default: templates/proposals/FORM/)")
    tp.add_argument("--no-check", action="store_true", help="write the proposals without checking them")
    _variant_scoring_args(tp)
    tp.set_defaults(func=cmd_templates_propose)

    r = sub.add_parser("render", help="render facts of one split into probes (JSONL)")
    r.add_argument("--split", choices=SPLITS, default="forget")
    r.add_argument("--forms", type=_csv, default=None, help=f"comma list of forms ({', '.join(FORMS)})")
    r.add_argument("--langs", type=_csv, default=None, help=f"comma list of languages ({', '.join(LANGS)})")
    r.add_argument("--targets", type=_csv, default=None, help="comma list of target ids (data/targets.yaml)")
    r.add_argument("--out", required=True, help="output JSONL file")
    r.set_defaults(func=cmd_render)

    e = sub.add_parser("evaluate", help="score a model (and its reference) on every form",
                       description="Score MODEL on the probes of the current benchmark version; with --reference, "
                       "the per-form efficacy, worst-form efficacy, form gap, utility (on retain-eval facts no "
                       "method saw) and ORT score. Resumable: run it again to finish.")
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="'embedded', an HF directory, a hub id, a LoRA adapter dir or a .gguf")
    who.add_argument("--manifest", default=None,
                     help="one checkpoint per target instead of --model: a manifest.json ({\"checkpoints\": "
                     "{TARGET: DIR}}, as unlearn --one-per-target writes it); each target's forms are scored on its "
                     "own checkpoint, utility is the mean of the checkpoints'")
    e.add_argument("--reference", default=None, help="the model before unlearning (same kinds as --model)")
    e.add_argument("--backend", default="hf",
                   help="inference engine: hf (transformers), vllm, or openai (an OpenAI-compatible endpoint: "
                   "--model and --reference are then names the server at --base-url serves)")
    e.add_argument("--forms", type=_csv, default=None, help="comma list of forms (default: all)")
    e.add_argument("--langs", type=_csv, default=None, help="comma list of languages (default: all)")
    e.add_argument("--targets", type=_csv, default=None, help="comma list of target ids (default: all)")
    e.add_argument("--splits", type=_csv, default=list(SPLITS), help="splits to score (default: all three)")
    e.add_argument("--limit", type=_limit, default=None,
                   help="at most N items per split (an item: one probe, a true/false pair, or the 4 rotations of "
                   "an MCQ; never cut), spread over forms, targets and facts; or per split: "
                   "forget=300,neighbour=100,utility=100")
    e.add_argument("--probes", default=None, help="score this probes JSONL instead of rendering the shipped KB")
    e.add_argument("--tier", choices=sorted(TIERS), default=None,
                   help="the benchmark's fixed sample over facts: core (minutes; what the leaderboard takes with "
                   "full) or full (every item); --targets draws it within those targets")
    e.add_argument("--train-form", default=None,
                   help="the form the model was unlearned on (default: its unlearn card's; adds E_train - WFE)")
    e.add_argument("--max-new-tokens", type=_positive, default=None,
                   help="generation length for every form (default: the benchmark version's per form)")
    e.add_argument("--batch-size", type=_positive, default=16)
    e.add_argument("--tensor-parallel-size", type=_positive, default=1, help="vllm: GPUs per model")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--chunk-size", type=_positive, default=128, help="probes scored between two durable writes")
    add_served_options(e)
    add_load_options(e)
    e.add_argument("--reuse", action="append", default=[], metavar="RUN_DIR",
                   help="copy this earlier run's records of the same models instead of rescoring them "
                   "(matched by model fingerprint and parameters; repeatable)")
    e.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="score only shard I of N (items of the selection in order, item k to shard k mod N + 1); "
                   "join the N run folders with `ort-bench merge`")
    e.add_argument("--out", required=True, help="run folder: records.jsonl and results.json")
    e.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("merge", help="join the shard folders of one evaluate run into one run folder",
                       description="Join the run folders of `evaluate --shard I/N` (all N of them, same models, "
                       "backend, parameters, benchmark version and selection) into one run folder: records in probe "
                       "order, results recomputed from them, as one process would have written it.")
    m.add_argument("dirs", nargs="+", metavar="DIR", help="the shard folders")
    m.add_argument("--out", required=True, help="the merged run folder (new or empty)")
    m.set_defaults(func=cmd_merge)

    from ort_bench.scoring.sweep import EXAMPLE

    sw = sub.add_parser("sweep", help="score many checkpoints, each in shards, as Ray tasks; merge per checkpoint",
                        formatter_class=argparse.RawDescriptionHelpFormatter, epilog="example CONFIG:\n\n" + EXAMPLE,
                        description="Run `evaluate --shard I/N` for every (checkpoint, shard) of CONFIG as Ray tasks\n"
                        "(each loads its model once and scores every form of its shard; the reference is scored\n"
                        "once per shard, for every checkpoint), then merge each checkpoint's shards into OUT/NAME/,\n"
                        "a run that submit takes. Without --ray, a local Ray is started for the sweep and shut\n"
                        "down after. Run it again to resume: finished jobs are skipped, killed ones resume.\n"
                        "A failed job is one line naming its checkpoint and shard; the others still finish.")
    sw.add_argument("config", metavar="CONFIG", help="sweep config (YAML): checkpoints, shards, reference, "
                    "selection, eval options, resources per task")
    sw.add_argument("--ray", default=None, metavar="ADDRESS",
                    help="an existing Ray cluster (e.g. ray://head:10001 or auto); OUT and the checkpoints must be "
                    "on a filesystem its nodes share (default: start a local Ray)")
    sw.add_argument("--out", default=None, help="output folder (default: the config's out)")
    sw.set_defaults(func=cmd_sweep)

    i = sub.add_parser("import-ort", help="import an ORT/RWKU per-target folder into probes")
    i.add_argument("dir", help="folder with one sub-folder per target (forget_level1.json, ...)")
    i.add_argument("--out", required=True, help="output JSONL file")
    i.set_defaults(func=cmd_import_ort)
    from ort_bench.unlearning.methods import METHODS, add_method_arguments

    u = sub.add_parser("unlearn", help=f"unlearn targets with a reference method ({', '.join(METHODS)})",
                       description="Unlearn TARGETS from MODEL with METHOD; writes an HF directory and "
                       "unlearn_card.json. Methods: " + ", ".join(METHODS) + ".")
    u.add_argument("--model", required=True, help="'embedded', an HF directory, ...")
    u.add_argument("--targets", type=_csv, required=True, help="comma list of target ids")
    u.add_argument("--train-form", default="qa", help="form whose probes are the forget data (default qa)")
    u.add_argument("--one-per-target", action="store_true",
                   help="unlearn each target alone from MODEL into OUT/TARGET/ and write OUT/manifest.json "
                   "(the ORT/RWKU protocol; score it with evaluate --manifest)")
    u.add_argument("--out", required=True, help="output HF directory (--one-per-target: a folder of them)")
    add_load_options(u)
    add_method_arguments(u)
    u.set_defaults(func=cmd_unlearn)

    a = sub.add_parser("attack", help="fine-tuning attacks: downstream fine-tuning or relearning")
    asub = a.add_subparsers(dest="attack_command", required=True, metavar="KIND")
    af = asub.add_parser("finetune", help="fine-tune on an unrelated environment (math or sentiment)")
    af.add_argument("--env", required=True, choices=["math", "sentiment"])
    ar = asub.add_parser("relearn", help="fine-tune on a few forget samples of the targets")
    ar.add_argument("--targets", type=_csv, required=True, help="comma list of target ids")
    ar.add_argument("--samples", type=_positive, required=True, help="number of forget samples to relearn on")
    ar.add_argument("--form", default="qa")
    for ap_, steps, bs in ((af, 50, 8), (ar, 20, 4)):
        ap_.add_argument("--model", required=True)
        ap_.add_argument("--steps", type=_positive, default=steps)
        ap_.add_argument("--lr", type=float, default=2e-5)
        ap_.add_argument("--batch-size", type=_positive, default=bs)
        ap_.add_argument("--seed", type=int, default=0)
        add_load_options(ap_)
        ap_.add_argument("--save-at", type=_steps_list, default=(), metavar="N,M",
                         help="also keep the model after these steps of the same run (each below --steps; the "
                         "learning-rate schedule is the full run's) in OUT/step-N/, each with its own card")
        ap_.add_argument("--out", required=True, help="output HF directory (the final model)")
        ap_.set_defaults(func=cmd_attack)

    from ort_bench.demo import DEFAULT_TARGETS, DEFAULT_TIER

    d = sub.add_parser("demo", help="the point of the tool in one command, on the embedded model",
                       description="Unlearn a few targets from the embedded model with ROCR and a gradient "
                       "method, score every form against the original, print the bias table.")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--targets", type=_csv, default=list(DEFAULT_TARGETS))
    d.add_argument("--method", default="npo", help="the gradient method to compare with ROCR")
    d.add_argument("--steps", type=_positive, default=12, help="training steps of the gradient method")
    d.add_argument("--lr", type=float, default=5e-5, help="learning rate of the gradient method")
    d.add_argument("--tier", choices=sorted(TIERS), default=DEFAULT_TIER,
                   help=f"the benchmark tier scored, drawn within the targets (default {DEFAULT_TIER})")
    d.add_argument("--limit", type=_limit, default=None,
                   help="at most N items per split of the tier (a smoke run): N or split=N,...")
    add_load_options(d)
    d.set_defaults(func=cmd_demo)

    au = sub.add_parser("audit", help="re-score a sample of a submission's items with its checkpoint",
                        description="Load the submission's checkpoint (its fingerprint must match the records), "
                        "re-score a seeded random sample of items with the recorded parameters, and compare outputs "
                        "and likelihoods with the records; on success write audit.json beside the submission (the "
                        "leaderboard then marks it audited).")
    au.add_argument("submission", help="a submission folder (leaderboards/v2/submissions/NAME) or a run folder")
    au.add_argument("--sample", type=_positive, default=20, help="items to re-score (default 20)")
    au.add_argument("--seed", type=int, default=0, help="which items (default 0)")
    au.add_argument("--model", default=None, help="where the checkpoint is, if not at the spec results.json records")
    au.add_argument("--dry-run", action="store_true", help="compare, but write no audit.json")
    add_load_options(au)
    au.set_defaults(func=cmd_audit)

    sb = sub.add_parser("submit", help="verify an evaluate run and add it to the leaderboard",
                        description="Recompute every score from RUN_DIR/records.jsonl, check hashes, fingerprints "
                        "and benchmark version, then copy the run into leaderboards/<version>/submissions/NAME/.")
    sb.add_argument("run_dir", help="an `ort-bench evaluate` output folder run with --reference")
    sb.add_argument("--name", required=True, help="entry name: a lowercase slug, unique on the leaderboard")
    sb.add_argument("--method", default=None, help="unlearning method (e.g. NPO)")
    sb.add_argument("--model-name", default=None, help="model shown on the page (default: the model spec)")
    sb.add_argument("--link", default=None, help="paper or code URL (http/https)")
    sb.add_argument("--date", default=None, help="YYYY-MM-DD (default: today)")
    sb.add_argument("--dry-run", action="store_true", help="only check; copy nothing")
    sb.set_defaults(func=cmd_submit)

    lb = sub.add_parser("leaderboard", help="build the leaderboard tables and page from the submissions")
    lbsub = lb.add_subparsers(dest="leaderboard_command", required=True, metavar="ACTION")
    lbb = lbsub.add_parser("build", help="recompute every entry; write .md, .csv, .json, heatmap and index.html")
    lbb.add_argument("--out", default=None, help="output folder (default: the versioned leaderboard folder)")
    lbb.add_argument("--version", default="all", choices=["all", *VERSIONS],
                     help="benchmark version to build (default: every version with a folder; closed versions "
                          "rebuild from their stored records with their own definitions)")
    lbb.add_argument("--keep-going", action="store_true",
                     help="report a submission that fails its checks and build without it (default: refuse)")
    lbb.set_defaults(func=cmd_leaderboard_build)

    rp = sub.add_parser("report", help="one run as a self-contained HTML page: plots, items, attacks, hashes",
                        description="Write one HTML page for an evaluate run (no script, nothing loaded from "
                        "elsewhere): per-form efficacy with intervals beside the placebo's band and the gap noise "
                        "alone gives, the worst form, model and reference side by side on a sample of items per "
                        "form, attack curves where this model was attacked and scored at several checkpoints, and "
                        "every hash that identifies the run.")
    rp.add_argument("run_dir", metavar="RUN_DIR", help="an `ort-bench evaluate` output folder run with --reference")
    rp.add_argument("--out", default=None, help="the HTML file to write (default: RUN_DIR/report.html)")
    rp.add_argument("--placebo", default=None, metavar="DIR",
                    help="the placebo run to read the run against (default: a sibling folder holding the reference "
                    "fine-tuned on unrelated data, scored on the same probes)")
    rp.add_argument("--sample", type=_positive, default=6, help="items shown per form (default 6)")
    rp.set_defaults(func=cmd_report)

    ex = sub.add_parser("export", help="the benchmark's probes or a run's records in other tools' formats")
    exsub = ex.add_subparsers(dest="export_command", required=True, metavar="FORMAT")
    hf = exsub.add_parser("hf-dataset", help="probes (a config per tier) or a run's records as a `datasets` folder",
                          description="Write parquet files and a dataset card (README.md: configs, benchmark version, "
                          "forms, licence, hashes) that datasets.load_dataset(OUT) loads offline: the probes of "
                          "every tier (or --tier), a split per forget/neighbour/utility; with --records RUN_DIR, "
                          "that run's records, a split per role (model, reference).")
    hf.add_argument("--out", required=True, help="the dataset folder (must be empty or new)")
    hf.add_argument("--tier", default=None, choices=list(TIERS), help="one tier only (default: every tier)")
    hf.add_argument("--records", default=None, metavar="RUN_DIR", help="export this evaluate run's records instead")
    hf.add_argument("--force", action="store_true", help="replace OUT/README.md and OUT/data/ of a non-empty OUT")
    hf.set_defaults(func=cmd_export_hf_dataset)
    lm = exsub.add_parser("lm-eval", help="the forms as lm-evaluation-harness tasks (a task per form, group per split)",
                          description="Write lm-evaluation-harness task files (generate_until for free answers, "
                          "multiple_choice for true/false pairs and MCQ rotations, scored by ort-bench's own "
                          "scorers), their JSONL data and a README, for `lm_eval --include_path OUT`. Run lm_eval "
                          "with --apply_chat_template, or without it after --model M (prompts formatted for M).")
    lm.add_argument("--out", required=True, help="the task folder (must be empty or new)")
    lm.add_argument("--tier", default=None, help="the tier to export (default: core)")
    lm.add_argument("--split", type=_csv, default=None, metavar="SPLITS",
                    help="forget, neighbour, utility, comma-separated (default: all)")
    lm.add_argument("--forms", type=_csv, default=None, help="only these forms (default: all)")
    lm.add_argument("--model", default=None, metavar="M", help="format the prompts with M's chat template, exactly "
                    "as evaluate does (then run lm_eval without --apply_chat_template, on M only)")
    lm.add_argument("--limit", type=_positive, default=None, metavar="N", help="the first N items of each form")
    lm.add_argument("--force", action="store_true", help="replace what an earlier export wrote in a non-empty OUT")
    lm.set_defaults(func=cmd_export_lm_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except OrtBenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
