"""`ort-bench report RUN_DIR`: one self-contained, escaped, byte-deterministic HTML page per run.

The real v3 entries (leaderboards/v3/submissions) give the content checks; small runs built like `evaluate`
writes them (tests/test_submit.make_run) give the hostile text, the attack curves and the placebo search.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape
from test_submit import make_run  # tests/ is on sys.path (no package): the shared run-folder builder

from ort_bench.board.report import REPORT_FILE, SAMPLE, build_report, common_prefix, render_report
from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.paths import leaderboards_dir
from ort_bench.scoring.records import seal

SUBMISSIONS = leaderboards_dir() / "v3" / "submissions"
REAL = SUBMISSIONS / "embedded-npo"
CSP = ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
       "img-src data:; base-uri 'none'; form-action 'none'\">")

EVIL_PROMPT = "<script>alert('prompt')</script>"
EVIL_OUTPUT = '</pre><img src=x onerror=alert("out")>'
EVIL_GOLD = "<iframe src=//evil.example></iframe>"
EVIL_MODEL = "<script>alert('model')</script> $\\frac{1}{"  # also an unclosed math expression
EVIL_FORM = "<svg onload=alert(1)>"
EVIL_FOLDER = "<img src=x onerror=alert(2)>"  # a folder name may hold all of this (no slash)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def svg_of(page: str, figure_id: str) -> str:
    start = page.index(f'<figure id="{figure_id}">')
    return page[start: page.index("</figure>", start)]


def details_of(page: str, form: str) -> str:
    """The <details> block of one form's items."""
    start = re.search(rf'<details id="items-\d+" data-form="{re.escape(form)}"( open)?>', page).start()
    return page[start: page.index("</details>", start)]


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    fn(data)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def attacked(run: Path, attack: str, of_fp: str, step: int, steps: int, **extra: Any) -> Path:
    """Mark `run`'s model as made by an attack on `of_fp` (what evaluate copies from an attack card)."""
    hp = {"steps": steps, "lr": 2e-05, "batch_size": 4, "seed": 0, **({"checkpoint_step": step} if step != steps
                                                                        else {})}

    def mark(data: dict[str, Any]) -> None:
        data["model"]["attack"] = {"attack": attack, **extra, "hyperparameters": hp,
                                   "attacked_model": {"spec": "/models/x", "kind": "hf_dir", "fingerprint": of_fp}}

    edit_json(run / "results.json", mark)
    return run


@pytest.fixture(scope="module")
def real() -> tuple[str, dict[str, Any]]:
    return render_report(REAL)


def make_experiment(base: Path) -> Path:
    """base/exp/unl-eval (the unlearned model), its relearn attack scored at steps 1 and 2, a placebo (the reference
    fine-tuned on sentiment), an attack on another model, and an attack scored on other probes."""
    exp = base / "exp"
    make_run(exp / "unl-eval", model_fp="fp-unl", seed=1, leak={"qa": 0.1, "cloze": 0.2})
    attacked(make_run(exp / "relearn" / "eval-step-1", model_fp="fp-att-1", seed=2, leak={"qa": 0.5}),
             "relearn", "fp-unl", 1, 2, targets=["france", "japan", "william_shakespeare"])
    attacked(make_run(exp / "relearn" / "eval-step-2", model_fp="fp-att-2", seed=3, leak={"qa": 0.9}),
             "relearn", "fp-unl", 2, 2, targets=["france", "japan", "william_shakespeare"])
    attacked(make_run(exp / "placebo-eval", model_fp="fp-placebo", seed=4), "finetune", "fp-ref", 10, 10,
             env="sentiment")
    # decoys (their results.json is all the search reads): an attack on another model, one on other probes
    shutil.copytree(exp / "relearn" / "eval-step-1", exp / "other" / "eval-step-1")
    attacked(exp / "other" / "eval-step-1", "relearn", "fp-someone-else", 1, 2)
    shutil.copytree(exp / "relearn" / "eval-step-1", exp / "fewer" / "eval-step-1")
    edit_json(exp / "fewer" / "eval-step-1" / "results.json", lambda d: d["hashes"].update(probes_sha256="0" * 64))
    for decoy in ("other", "fewer"):
        edit_json(exp / decoy / "eval-step-1" / "results.json",
                  lambda d, n=decoy: d["model"].update(fingerprint=f"fp-{n}"))
    return exp


def make_hostile(base: Path) -> Path:
    """A run whose folder name, model spec, a form name, and the qa prompts, answers and gold are hostile."""
    run = make_run(base / EVIL_FOLDER, model_fp="fp-evil", seed=7)
    path = run / "records.jsonl"
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if rec["split"] == "forget" and rec["form"] == "qa":
            rec.update(prompt_text=rec["prompt_text"] + "\n" + EVIL_PROMPT, output=EVIL_OUTPUT + " " + rec["output"],
                       answers=[EVIL_GOLD, *rec["answers"]])
            rec = seal(rec)
        lines.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def evil(data: dict[str, Any]) -> None:
        data["model"]["spec"] = EVIL_MODEL
        row = next(r for r in data["forms"] if r["form"] == "cloze")
        row["form"] = EVIL_FORM

    edit_json(run / "results.json", evil)
    return run


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("report-exp"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hostile(tmp_path_factory.mktemp("report-hostile"))


# --------------------------------------------------------------------------------------------------
# A real v3 entry
# --------------------------------------------------------------------------------------------------

def test_real_entry_forest_plot_worst_form_and_placebo(real):
    page, summary = real
    res = json.loads((REAL / "results.json").read_text())
    placebo = json.loads((SUBMISSIONS / "embedded-placebo" / "results.json").read_text())
    assert summary["worst_form"] == res["worst_form"] == "cloze"
    assert summary["placebo"] and Path(summary["placebo"]).name == "embedded-placebo"
    forest = svg_of(page, "forest")
    assert "<svg" in forest and forest.count("<text") > 10, "the forest plot is inline SVG with text as text"
    assert "cloze  (worst)" in forest
    for row in res["forms"]:
        assert f"<td class=\"text\">{row['form']}" in page
        assert row["form"] in forest
        if row["efficacy"] is not None:
            cell = f"{row['efficacy']:.2f} [{row['efficacy_ci_low']:.2f}, {row['efficacy_ci_high']:.2f}]"
            assert cell in page
            assert f">{row['efficacy']:.2f}</text>" in forest or f"{row['efficacy']:.2f}" in forest
        else:
            assert row["excluded"] in page
    for row in placebo["forms"]:  # the band: the placebo's interval per form, in the table and in the plot
        if row["efficacy"] is not None:
            assert f"{row['efficacy']:.2f} [{row['efficacy_ci_low']:.2f}, {row['efficacy_ci_high']:.2f}]" in page
    assert "placebo, 95% interval" in forest and "../embedded-placebo" in page
    c = res["comparison"]
    callout = page[page.index('id="worst-form"'):page.index("</div>", page.index('id="worst-form"'))]
    assert "Worst form: cloze" in callout
    assert f"{c['worst_form_efficacy']:.2f} [{c['worst_form_efficacy_ci_low']:.2f}, " in callout
    assert "overlaps the placebo" in callout  # cloze 0.08–0.55 against the placebo's 0.00–0.24
    noise = c["noise_gap"]
    assert f"p = {noise['p_value']:.3f}" in page and f"95th percentile of {noise['gap_noise_q95']:.2f}" in page
    gap = svg_of(page, "gap")
    assert "this run" in gap and "placebo" in gap


def test_real_entry_items_agree_with_the_records(real):
    """The known / leaked counts come from the records; known must equal results.json's n_known per form."""
    page, summary = real
    res = json.loads((REAL / "results.json").read_text())
    recs = [json.loads(line) for line in (REAL / "records.jsonl").read_text().splitlines()]
    for row in res["forms"]:
        block = details_of(page, row["form"])
        if row["n_known"]:
            assert f"of {row['n_known']} known items still answered (of {row['n_total']})" in block
        else:
            assert f"the reference knows none of its {row['n_total']} items" in block
    # cloze, single-probe answer_match items: leaked = known to both (primary 1.0)
    by_role = {role: {r["probe_id"]: r for r in recs if r["role"] == role and r["form"] == "cloze"
                      and r["split"] == "forget"} for role in ("model", "reference")}
    known = [p for p, r in by_role["reference"].items() if r["primary"] >= 1.0]
    leaked = [p for p in known if by_role["model"][p]["primary"] >= 1.0]
    block = details_of(page, "cloze")
    assert block.startswith('<details id="items-2" data-form="cloze" open>'), "the worst form's items are open"
    assert f"cloze: {len(leaked)} of {len(known)} known items still answered" in block
    rows = Counter(re.findall(r'<tr class="(leaked|forgotten|unknown)">', block))
    assert rows == {"leaked": SAMPLE // 2, "forgotten": SAMPLE - SAMPLE // 2}, "half leaked, half forgotten"
    shown = [p for p in known if by_role["model"][p]["output"] and str(escape(by_role["model"][p]["output"]))
             in block]
    assert len(shown) >= SAMPLE - 1  # the answers shown are those of known items (two may share an answer)
    assert "&lt;|im_start|&gt;system" in page[page.index('id="prompt-prefix"'):][:200], "the shared start once"
    assert summary["items_shown"] == sum(min(SAMPLE, r["n_known"] or r["n_total"]) for r in res["forms"])


def test_real_entry_every_hash_that_identifies_the_run(real):
    page, _ = real
    res = json.loads((REAL / "results.json").read_text())
    sub = json.loads((REAL / "submission.json").read_text())
    wanted = [sha256(REAL / "results.json"), sha256(REAL / "records.jsonl"), res["model"]["fingerprint"],
              res["reference"]["fingerprint"], res["params_hash"], *res["hashes"].values(), *res["versions"].values(),
              res["model"]["unlearned_with"]["base_model"]["fingerprint"], res["created_at"], *sub["files"].values(),
              sha256(SUBMISSIONS / "embedded-placebo" / "results.json")]
    section = page[page.index('<section id="provenance">'):]
    for h in wanted:
        assert h in section, h
    assert len(res["hashes"]) == 3 and len(res["versions"]) >= 5


def test_page_is_self_contained_with_the_leaderboard_csp(real):
    page, _ = real
    head = page[: page.index("</head>")]
    assert CSP in head and head.index(CSP) < head.index("<style>"), "the CSP comes before any content"
    assert "<script" not in page.lower(), "no script at all (and the CSP allows none)"
    for needle in ("<link", "@import", "<iframe", "<object", "<embed", "<img"):
        assert needle not in page.lower(), needle
    refs = re.findall(r'\b(?:href|src|xlink:href)\s*=\s*["\']([^"\']*)', page)
    assert refs and all(r.startswith("#") for r in refs), [r for r in refs if not r.startswith("#")][:3]
    assert all(u.startswith("url(#") for u in re.findall(r"url\([^)]*\)", page))
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1][:5]


def test_same_run_gives_a_byte_identical_page(real, tmp_path):
    page, _ = real
    assert render_report(REAL)[0] == page
    copy = tmp_path / "somewhere" / "else"
    for name in ("embedded-npo", "embedded-placebo"):  # the run and its placebo, moved elsewhere
        shutil.copytree(SUBMISSIONS / name, copy / name)
    out = build_report(copy / "embedded-npo", out=tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == page
    assert out["out"] == str(tmp_path / "r.html")


# --------------------------------------------------------------------------------------------------
# Hostile text
# --------------------------------------------------------------------------------------------------

def test_hostile_prompts_answers_names_are_escaped(hostile):
    page, summary = render_report(hostile)
    for evil in (EVIL_PROMPT, EVIL_OUTPUT, EVIL_GOLD, EVIL_MODEL, EVIL_FORM, EVIL_FOLDER):
        assert evil not in page, evil
    for needle in ("<script", "<img", "<iframe", "<svg onload"):
        assert needle not in page.lower(), needle
    body = page[page.index("<body>"):]
    for evil in (EVIL_PROMPT, EVIL_OUTPUT, EVIL_GOLD, EVIL_FORM, EVIL_FOLDER):
        assert str(escape(evil)) in body, evil
    assert str(escape(EVIL_MODEL)) in body
    # in the SVG (matplotlib's escaping): the title holds the model spec, the ticks the form names; no math
    forest = svg_of(page, "forest")
    assert "&lt;script&gt;alert('model')&lt;/script&gt; $\\frac{1}{" in forest
    assert "&lt;svg onload=alert(1)&gt;" in forest
    assert summary["forms"].count(EVIL_FORM) == 1


def test_common_prefix_is_whole_lines_shared_by_most():
    texts = ["<sys>\nbe nice, be brief, be exact\n<user>\nQ1", "<sys>\nbe nice, be brief, be exact\n<user>\nQ2",
             "<sys>\nother system prompt here\n<user>\nQ3"]
    assert common_prefix(texts) == "<sys>\nbe nice, be brief, be exact\n<user>\n"
    assert common_prefix(texts[:1] + texts[2:]) == "", "no prefix shared by enough prompts: none"
    assert common_prefix(["short\nA", "short\nB"]) == "", "under 20 characters: not worth it"


# --------------------------------------------------------------------------------------------------
# Attack curves and the placebo search
# --------------------------------------------------------------------------------------------------

def _eff(run: Path, form: str) -> float:
    return next(r["efficacy"] for r in json.loads((run / "results.json").read_text())["forms"] if r["form"] == form)


def test_attack_curves_from_the_checkpoints_of_one_attack(experiment):
    page, summary = render_report(experiment / "unl-eval")
    assert summary["attack_curves"] == ["relearn (3 targets): 2 steps, lr 2e-05, seed 0"]
    curves = svg_of(page, "attack-curves")
    assert "<svg" in curves and "attack step" in curves and "worst form" in curves
    table = page[page.index('<table class="attack">'):]
    table = table[: table.index("</table>")]
    steps = re.findall(r"<tr><td>(\d+)</td><td class=\"text\"><code>([^<]+)</code>", table)
    assert steps == [("0", "."), ("1", "../relearn/eval-step-1"), ("2", "../relearn/eval-step-2")]
    runs = [experiment / "unl-eval", experiment / "relearn" / "eval-step-1", experiment / "relearn" / "eval-step-2"]
    effs = [_eff(r, "qa") for r in runs]
    assert effs[0] > effs[2], "the builder leaks more qa after the attack"
    assert "<th>E qa ↑</th>" in table
    robust_row = table.split("<td>robust</td>")[1]
    assert f"<td>{sum(effs) / 3:.2f}</td>" in robust_row, "robust efficacy: the mean over checkpoints"
    rows = [{r["form"]: r for r in json.loads((run / "results.json").read_text())["forms"]} for run in runs]
    robust = {f: sum(rs[f]["efficacy"] for rs in rows) / 3 for f in rows[0]
              if all(rs[f]["efficacy"] is not None and rs[f]["in_headline"] for rs in rows)}
    assert len(robust) >= 3
    assert robust_row.split("</td>")[2] == f"<td>{min(robust.values()):.2f}", "robust WFE: the lowest robust form"
    for decoy in ("fp-other", "fp-fewer", "other/eval-step-1", "fewer/eval-step-1"):
        assert decoy not in page, "an attack on another model, or scored on other probes, is not on the curve"
    # the same curve from one of the attacked runs (its step 0 is the model it attacked)
    page1, summary1 = render_report(experiment / "relearn" / "eval-step-1")
    assert summary1["attack_curves"] == summary["attack_curves"]
    assert "../../unl-eval" in page1 and "<td>1</td><td class=\"text\"><code>.</code>" in page1


def test_placebo_found_beside_the_run_or_named(experiment, tmp_path):
    page, summary = render_report(experiment / "unl-eval")
    assert Path(summary["placebo"]).name == "placebo-eval"
    assert "placebo, 95% interval" in svg_of(page, "forest") and "Placebo: ../placebo-eval" in page
    qa = next(r for r in json.loads((experiment / "placebo-eval" / "results.json").read_text())["forms"]
              if r["form"] == "qa")
    assert f"{qa['efficacy']:.2f} [{qa['efficacy_ci_low']:.2f}, {qa['efficacy_ci_high']:.2f}]" in page
    page_p, summary_p = render_report(experiment / "placebo-eval")
    assert summary_p["placebo"] is None and "This run is itself a placebo" in page_p
    with pytest.raises(OrtBenchError, match="not scored like this run") as info:
        render_report(experiment / "unl-eval", placebo=SUBMISSIONS / "embedded-placebo")
    assert "\n" not in str(info.value)
    with pytest.raises(OrtBenchError, match="not a placebo of this run"):  # scored alike, but an attack on the model
        render_report(experiment / "unl-eval", placebo=experiment / "relearn" / "eval-step-1")


def test_no_placebo_no_attacks_said_so(hostile):
    page, summary = render_report(hostile)
    assert summary["placebo"] is None and summary["attack_curves"] == []
    assert "No placebo for this run" in page and "No attack curve" in page
    assert 'id="attack-curves"' not in page and "placebo, 95% interval" not in page


# --------------------------------------------------------------------------------------------------
# Bad run folders: one line
# --------------------------------------------------------------------------------------------------

def _break(kind: str, run: Path) -> None:
    recs = run / "records.jsonl"
    if kind == "no results":
        (run / "results.json").unlink()
    elif kind == "bad results":
        (run / "results.json").write_text("{not json")
    elif kind == "no records":
        recs.unlink()
    elif kind == "torn record":
        lines = recs.read_text().splitlines()
        recs.write_text("\n".join(lines[:3] + ['{"key": "abc", "role"'] + lines[3:]) + "\n")
    elif kind == "edited record":
        lines = recs.read_text().splitlines()
        rec = json.loads(lines[2])
        rec["output"] = "something else"
        recs.write_text("\n".join(lines[:2] + [json.dumps(rec)] + lines[3:]) + "\n")
    elif kind == "other model":
        edit_json(run / "results.json", lambda d: d["model"].update(fingerprint="fp-not-these-records"))
    elif kind == "no reference":
        edit_json(run / "results.json", lambda d: d.update(reference=None, comparison=None))


@pytest.mark.parametrize("kind, match", [
    ("missing", "no such run folder"), ("no results", "no such results file"),
    ("bad results", "not a valid results file"), ("no records", "no such records file"),
    ("torn record", r"records.jsonl:4: not a JSON record"), ("edited record", r"records.jsonl:3: record edited"),
    ("other model", "no records of the model"), ("no reference", "no reference model"),
])
def test_bad_run_folders_are_one_line(kind, match, tmp_path, capsys):
    run = tmp_path / "run"
    if kind != "missing":
        shutil.copytree(REAL, run)
        _break(kind, run)
    with pytest.raises(OrtBenchError, match=match) as info:
        build_report(run)
    assert "\n" not in str(info.value)
    assert main(["report", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and re.search(match, err)
    assert not (run / REPORT_FILE).exists()


def test_cli_writes_the_page(tmp_path, capsys):
    out = tmp_path / "pages" / "npo.html"
    assert main(["report", str(REAL), "--out", str(out), "--sample", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and summary["worst_form"] == "cloze"
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "up to 2 items" in page
    assert main(["report", str(REAL), "--out", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err
