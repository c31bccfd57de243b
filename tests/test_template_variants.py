"""New form variants (issue 22 item 4): `templates new` writes a draft, `templates check` says whether a
variant measures its form, `templates propose` turns a model's phrasings into checked proposals, and no
draft or proposal ever counts in a tier, a run or a hash until a person accepts it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ort_bench.cli import main
from ort_bench.errors import OrtBenchError
from ort_bench.kb.facts import load_kb
from ort_bench.kb.templates import load_template, load_templates, templates_hash
from ort_bench.kb.variants import (
    declared_chance,
    find_variant,
    form_profile,
    gold_shown,
    new_variant,
    parse_proposals,
    proposal_examples,
    proposal_problem,
    proposal_request,
    render_on,
    sample_facts,
    shows_more,
    write_proposal,
)
from ort_bench.paths import REPO_ROOT, templates_dir
from ort_bench.scoring.variant_check import check_variants, fmt_chance, propose_variants, wilson

PINNED = json.loads((REPO_ROOT / "leaderboards/v3/submissions/embedded-ga/results.json").read_text())["hashes"]


@pytest.fixture(scope="module")
def kb():
    return load_kb()


@pytest.fixture(scope="module")
def shipped():
    return load_templates()


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    """A copy of the shipped templates folder (drafts written into it stay out of the repository)."""
    root = tmp_path / "templates"
    shutil.copytree(templates_dir(), root, ignore=shutil.ignore_patterns("drafts", "proposals"))
    return root


def _variant(path: Path, prompt: str, needs: str = "[question]", form: str = "qa", vid: str | None = None,
             extra: str = "") -> Path:
    vid = vid or path.stem
    body = "\n".join("  " + line for line in prompt.split("\n"))
    path.write_text(f"id: {vid}\nform: {form}\nlang: en\nscorer: answer_match\nneeds: {needs}\nstatus: draft\n"
                    f"{extra}prompt: |-\n{body}\ntarget: \"{{{{ answer }}}}\"\n", encoding="utf-8")
    return path


# -- templates new ---------------------------------------------------------------------------------


def test_new_writes_a_commented_draft_with_what_the_form_needs(tree: Path):
    path = new_variant("qa", "en", "qa-draft-en", root=tree)
    assert path == tree / "drafts" / "qa" / "qa-draft-en.yaml"
    text = path.read_text(encoding="utf-8")
    tpl = load_template(path)  # it loads as a template: `templates check` can run on it at once
    assert tpl.spec.status == "draft" and tpl.spec.form == "qa" and tpl.spec.lang == "en"
    # what every qa variant shares is filled in, read from the variants (not from a table)
    assert tpl.spec.scorer == "answer_match" and tpl.spec.needs == ("question",) and tpl.spec.choices is None
    assert "# exactly the fields the bodies use; every qa variant uses: question" in text
    assert "ort-bench templates check qa-draft-en" in text and "delete the `status:` line" in text
    assert "qa-system-en" in text  # the optional system turn names the variant that has one


def test_new_keeps_what_varies_in_a_comment_and_starts_from_a_variant_of_the_form(tree: Path):
    path = new_variant("mcq", "fr", "mcq-draft-fr", root=tree, like="mcq-rank-en")
    tpl = load_template(path)
    rank = load_template(tree / "mcq" / "mcq-rank-en.yaml")
    assert tpl.spec.lang == "fr" and tpl.spec.choices == "option_texts" and tpl.spec.prompt == rank.spec.prompt
    text = path.read_text(encoding="utf-8")
    assert "varies among mcq variants: options (mcq-cloze-en, mcq-letter-en, mcq-prefill-en); option_texts" in text
    assert "rewrite it in French" in text


@pytest.mark.parametrize("form", ["true_false", "multi_hop", "cross_lingual", "reverse", "subtoken"])
def test_new_drafts_load_for_other_forms(tree: Path, form: str):
    tpl = load_template(new_variant(form, "de", f"{form.replace('_', '-')}-draft-de", root=tree))
    profile = form_profile(form, tree)
    assert tpl.spec.scorer in profile.values("scorer") and tpl.spec.hops == profile.variants[0].spec.hops


def test_new_refuses_in_one_line(tree: Path, capsys):
    with pytest.raises(OrtBenchError, match=r"unknown form 'essay'"):
        new_variant("essay", "en", "essay-en", root=tree)
    with pytest.raises(OrtBenchError, match=r"unknown language 'it'"):
        new_variant("qa", "it", "qa-x-it", root=tree)
    with pytest.raises(OrtBenchError, match=r"id 'qa-brief-en' is taken .*qa-brief-en.yaml"):
        new_variant("qa", "en", "qa-brief-en", root=tree)
    new_variant("qa", "en", "qa-once-en", root=tree)
    with pytest.raises(OrtBenchError, match=r"id 'qa-once-en' is taken .*drafts"):  # a draft's id is taken too
        new_variant("qa", "en", "qa-once-en", root=tree)
    with pytest.raises(OrtBenchError, match=r"id 'QA new'"):
        new_variant("qa", "en", "QA new", root=tree)
    assert main(["templates", "new", "qa", "--lang", "en", "--id", "qa-direct-en"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is taken" in err


def test_new_on_the_command_line_writes_where_asked(tmp_path: Path, capsys):
    out = tmp_path / "mine.yaml"
    assert main(["templates", "new", "cloze", "--lang", "en", "--id", "cloze-cli-en", "--out", str(out)]) == 0
    assert "a draft (status: draft)" in capsys.readouterr().out
    assert load_template(out).spec.needs == ("cloze",)
    assert main(["templates", "new", "cloze", "--lang", "en", "--id", "cloze-cli2-en", "--out", str(out)]) == 1


# -- drafts and proposals count nowhere ------------------------------------------------------------


def test_unreviewed_variants_change_no_tier_run_or_hash(tree: Path, monkeypatch, shipped):
    new_variant("qa", "en", "qa-draft-en", root=tree)  # templates/drafts/qa/
    (tree / "drafts" / "broken.yaml").write_text("id: [unclosed\n", encoding="utf-8")  # a half-written draft
    base = next(t for t in shipped if t.id == "qa-few-words-en")
    prop = write_proposal(base, "Quick quiz: {{ question }}", "test (fingerprint 0)", tree / "proposals" / "qa", "r")
    moved = tree / "qa" / "qa-moved-en.yaml"  # moved into the form's folder with its mark still on
    _variant(moved, "Tell me: {{ question }}")
    assert load_template(moved).spec.status == "draft"

    loaded = load_templates(tree)
    assert [t.id for t in loaded] == [t.id for t in shipped]
    assert templates_hash(loaded) == templates_hash(shipped) == PINNED["templates_sha256"]

    monkeypatch.setenv("ORT_BENCH_TEMPLATES", str(tree))
    from ort_bench import api
    from ort_bench.scoring.selection import select_probes

    probes, hashes = select_probes(tier="core")
    assert hashes == PINNED  # the leaderboard's data, templates and core-tier probe hashes do not move
    rendered, _ = api.render(split="forget", forms=["qa"])
    unreviewed = {"qa-draft-en", "qa-moved-en", prop.id}
    assert not unreviewed & {p.template_id for p in probes + rendered}

    # accepting is a person's act: the mark deleted, the variant counts (and the hash moves, as it must)
    moved.write_text(moved.read_text(encoding="utf-8").replace("status: draft\n", ""), encoding="utf-8")
    accepted = load_templates(tree)
    assert "qa-moved-en" in {t.id for t in accepted} and templates_hash(accepted) != PINNED["templates_sha256"]


def test_find_variant_by_id_or_path(tree: Path):
    path = new_variant("qa", "en", "qa-find-en", root=tree)
    assert find_variant("qa-find-en", tree).path == path
    assert find_variant(str(path)).id == "qa-find-en"
    assert find_variant("qa-brief-en", tree).spec.status is None
    with pytest.raises(OrtBenchError, match="unknown template 'nope'"):
        find_variant("nope", tree)


# -- proposals: parse, validate, write (a hand-written reply: the valid path, whatever a model says) --

REPLY = """4. Quick quiz: {{ question }}
5. Answer in a few words: {Question}
6. Tell me the answer.
7. {{ question }} {% if %}
8. {{ question }} Hint: {{ object }}.
9. Answer briefly: {{ question }}
10. {{ question }}
{% include 'x' %}
"""


def test_a_reply_becomes_proposals_and_each_rejection_says_why(tmp_path: Path, kb, shipped):
    profile = form_profile("qa", templates=shipped)
    base = next(t for t in shipped if t.id == "qa-few-words-en")
    examples = proposal_examples(base, profile)
    # qa-system-en's prompt is qa-direct-en's: shown once
    assert examples[0] == ("qa-few-words-en", base.spec.prompt) and len(examples) == 3
    request, prefill = proposal_request(base, examples, 3)
    assert "{{ question }}\\nAnswer in a few words." in request and prefill == "4."

    texts = parse_proposals(REPLY, first=4, n=10, fields=["question"])
    assert texts[1] == "Answer in a few words: {{ question }}"  # single braces, as small models write them
    assert len(texts) == 7
    problems = {t: proposal_problem(t, base, profile, kb) for t in texts}
    assert problems["Quick quiz: {{ question }}"] is None
    assert problems["Answer in a few words: {{ question }}"] is None
    assert "drops {{ question }}" in problems["Tell me the answer."]
    assert "Jinja syntax error" in problems["{{ question }} {% if %}"]
    assert "object: used in prompt but not declared in needs" in problems["{{ question }} Hint: {{ object }}."]
    assert problems["Answer briefly: {{ question }}"] == "the prompt of qa-brief-en, not a new phrasing"
    assert problems["{{ question }}"].startswith("the prompt of qa-")

    tpl = write_proposal(base, texts[0], "embedded (fingerprint abc)", tmp_path / "proposals" / "qa", request)
    again = write_proposal(base, texts[0], "embedded (fingerprint abc)", tmp_path / "proposals" / "qa", request)
    assert tpl.id == again.id and tpl.id.startswith("qa-proposal-") and tpl.id.endswith("-en")
    raw = yaml.safe_load(tpl.path.read_text(encoding="utf-8"))
    assert raw["status"] == "proposal" and raw["proposed_by"] == "embedded (fingerprint abc)"
    assert raw["prompt"] == "Quick quiz: {{ question }}" and raw["needs"] == ["question"]
    assert tpl.path.read_text(encoding="utf-8").startswith("# Proposal: a rephrasing of qa-few-words-en")


def test_a_multi_line_proposal_reads_back_exactly(tmp_path: Path, shipped):
    base = next(t for t in shipped if t.id == "qa-few-words-en")
    [text] = parse_proposals('4. "{{ question }}\\n  Answer: one or two words.  "', 4, 1, ["question"])
    assert text == "{{ question }}\n  Answer: one or two words."
    tpl = write_proposal(base, text, "m", tmp_path, "r")
    assert tpl.spec.prompt == text


# -- the answer-in-prompt comparison and the interval (no model) -------------------------------------


def test_a_prompt_that_shows_the_answer_shows_more_than_the_form(tmp_path: Path, kb, shipped):
    qa = [t for t in shipped if t.spec.form == "qa"]
    facts = sample_facts(kb, qa, 6)
    assert len(facts) == 6 and len({f.target for f in facts}) == 6  # spread over targets
    hint = load_template(_variant(tmp_path / "qa-hint-en.yaml", "{{ question }} (It ends in "
                                  "{{ object.split(' ')[-1] }}.)", needs="[question, object]"))
    plain = load_template(_variant(tmp_path / "qa-plain-en.yaml", "Quiz: {{ question }}"))
    ren = {t.id: render_on(kb, t, facts) for t in [*qa, hint, plain]}
    for f in facts:
        theirs = [gold_shown(kb, f, t, ren[t.id][f.id]) for t in qa]
        assert shows_more(gold_shown(kb, f, hint, ren[hint.id][f.id]), theirs), f.id
        assert not shows_more(gold_shown(kb, f, plain, ren[plain.id][f.id]), theirs), f.id

    mcq = [t for t in shipped if t.spec.form == "mcq"]
    leaky_path = tmp_path / "mcq-leaky-en.yaml"
    leaky_path.write_text(
        "id: mcq-leaky-en\nform: mcq\nlang: en\nscorer: circular_choice\nchoices: options\nstatus: draft\n"
        "needs: [question, object, options, letters, answer_letter]\nprompt: |-\n  {{ question }} (It is {{ object }}.)"
        "\n  {% for o in options %}\n  {{ letters[loop.index0] }}. {{ o }}\n  {%- endfor %}\n"
        'target: "{{ answer_letter }}"\n', encoding="utf-8")
    leaky = load_template(leaky_path)
    facts = sample_facts(kb, mcq, 4)
    for f in facts:
        theirs = [gold_shown(kb, f, t, r) for t in mcq if (r := render_on(kb, t, [f])[f.id]).probes]
        assert shows_more(gold_shown(kb, f, leaky, render_on(kb, leaky, [f])[f.id]), theirs)
        letter = next(t for t in mcq if t.id == "mcq-letter-en")  # a shipped variant against the others: no leak
        assert not shows_more(gold_shown(kb, f, letter, render_on(kb, letter, [f])[f.id]),
                              [x for t, x in zip(mcq, theirs, strict=True) if t.id != letter.id])


def test_declared_chance_levels(shipped):
    by_id = {t.id: t for t in shipped}
    assert declared_chance(by_id["mcq-rank-en"]) == 0.25  # options not shown: the rotations are one decision
    assert declared_chance(by_id["mcq-letter-en"]) == 0.25 ** 4
    assert declared_chance(by_id["tf-judge-en"]) == 0.25  # a pair of True/False judgements
    assert declared_chance(by_id["qa-direct-en"]) == 0.0


def test_wilson_interval_and_chance_fractions():
    lo, hi = wilson(4, 8)
    assert (round(lo, 4), round(hi, 4)) == (0.2152, 0.7848)
    assert wilson(0, 8)[0] == 0.0 and round(wilson(0, 8)[1], 4) == 0.3244
    assert wilson(0, 0) == (0.0, 1.0)
    assert fmt_chance(0.25) == "1/4" and fmt_chance(1 / 256) == "1/256" and fmt_chance(0.0) == "0"


# -- with the embedded model ----------------------------------------------------------------------

LIMIT = 12


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    """One records folder for the module: the accepted variants are scored once, then reused."""
    return tmp_path_factory.mktemp("variant-records")


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("candidates")
    return {
        "copy": _variant(d / "qa-copy-en.yaml", "{{ question }}\nAnswer in a few words."),
        "leak": _variant(d / "qa-leak-en.yaml", "{{ question }} (Hint: it is {{ object }}.)",
                         needs="[question, object]"),
        "garbled": _variant(d / "qa-garbled-en.yaml", "{{ question | reverse }}"),
    }


@pytest.fixture(scope="module")
def checks(embedded_model, candidates, records):
    return {c.variant.removeprefix("qa-").removesuffix("-en"): c
            for c in check_variants(list(candidates.values()), "embedded", limit=LIMIT, out=records)}


@pytest.mark.integration
def test_a_copy_of_a_variant_measures_the_form(checks):
    c = checks["copy"]
    assert c.passed, c.report()
    assert c.facts == LIMIT and {r.id for r in c.rows} == {"qa-brief-en", "qa-direct-en", "qa-few-words-en",
                                                             "qa-system-en", "qa-copy-en"}
    assert all(r.items == LIMIT for r in c.rows)
    few, copy = (next(r for r in c.rows if r.id == i) for i in ("qa-few-words-en", "qa-copy-en"))
    assert copy.known == few.known  # the same prompts, the same greedy answers
    assert "renders the very prompts of qa-few-words-en" in " ".join(c.notes)
    assert "measures the form qa" in c.report()


@pytest.mark.integration
def test_a_variant_that_shows_the_answer_fails_for_that_reason(checks):
    c = checks["leak"]
    assert not c.passed
    rule = next(r for r in c.rules if r.name == "answer in prompt")
    assert not rule.passed and f"of {LIMIT} facts" in rule.detail and "every answer" in rule.detail


@pytest.mark.integration
def test_a_variant_the_reference_cannot_read_fails_on_its_known_rate(checks):
    c = checks["garbled"]
    rate = next(r for r in c.rules if r.name == "known rate")
    assert not rate.passed and "below the form's variants" in rate.detail, c.report()
    assert next(r for r in c.rules if r.name == "answer in prompt").passed
    assert next(r for r in c.rows if r.new).known == 0


@pytest.mark.integration
def test_check_on_the_command_line_exits_by_verdict(embedded_model, candidates, records, capsys):
    assert main(["templates", "check", str(candidates["copy"]), "--limit", str(LIMIT), "--out", str(records)]) == 0
    assert "verdict: qa-copy-en measures the form qa" in capsys.readouterr().out
    assert main(["templates", "check", str(candidates["leak"]), "--limit", str(LIMIT), "--out", str(records),
                 "--json"]) == 1
    [d] = json.loads(capsys.readouterr().out)
    assert d["passed"] is False and d["variant"] == "qa-leak-en"


@pytest.mark.integration
def test_propose_end_to_end_on_the_embedded_model(embedded_model, records, tmp_path: Path, shipped):
    report = propose_variants("cloze", "embedded", n=2, limit=LIMIT, out=records, folder=tmp_path)
    assert report.reply.startswith("4.") and report.base == "cloze-prefill-en"
    assert 1 <= len(report.proposals) <= 2
    for p in report.proposals:  # what a 135M model proposes may be poor: each is rejected with a reason or checked
        if p.problem is not None:
            assert p.path is None and p.check is None and p.problem
        else:
            tpl = load_template(p.path)
            assert tpl.spec.status == "proposal" and tpl.spec.proposed_by.startswith("embedded (fingerprint ")
            assert p.check is not None and p.check.variant == tpl.id and len(p.check.rules) == 3
    assert [t.id for t in load_templates()] == [t.id for t in shipped]  # nothing entered the shipped set
    assert "no proposal counts in a tier" in report.report()


# -- any backend: a registered engine is all `propose` needs (a served one takes the same path) ---------

CANNED = "Quick quiz: {{ question }}\n5. {{ question }} Hint: {{ object }}.\n"


@pytest.fixture(scope="module")
def canned_backend() -> str:
    """A backend registered like any engine: the tiny model's answers, but a canned reply to the request
    for phrasings, so that the valid path (written, then checked) runs whatever a model would say."""
    from ort_bench.scoring.backends import BACKENDS, ScoreResult, register_backend
    from ort_bench.scoring.backends.hf import HFBackend

    if "canned-test" not in BACKENDS:
        @register_backend("canned-test")
        class Canned(HFBackend):
            def score(self, requests):
                got = super().score(requests)
                asked = ["ways to word one quiz prompt" in r.context for r in requests]
                return [ScoreResult(CANNED, g.new_tokens, g.loglikelihoods) if a else g
                        for a, g in zip(asked, got, strict=True)]
    return "canned-test"


def test_propose_writes_and_checks_the_valid_phrasings_through_any_backend(canned_backend, tiny_llama_dir,
                                                                           tmp_path: Path, capsys):
    from ort_bench.scoring.evaluate import EvalConfig

    report = propose_variants("qa", str(tiny_llama_dir), n=2, base="qa-few-words-en", limit=3,
                              config=EvalConfig(backend=canned_backend), out=tmp_path / "run",
                              folder=tmp_path / "proposals")
    ok, bad = report.proposals
    assert bad.problem == "object: used in prompt but not declared in needs" and bad.path is None
    tpl = load_template(ok.path)
    assert tpl.spec.status == "proposal" and tpl.spec.prompt == "Quick quiz: {{ question }}"
    assert tpl.spec.proposed_by == f"{tiny_llama_dir} (fingerprint {report.model['fingerprint']})"
    c = ok.check
    assert c is not None and c.variant == tpl.id and c.facts == 3 and len(c.rows) == 5
    assert [r.name for r in c.rules] == ["known rate", "answer in prompt", "chance level"]
    # a random tiny model knows nothing: the check says so rather than passing the proposal
    assert not c.passed and "the reference knows 0 of 3 items: none" in c.report()

    rc = main(["templates", "propose", "qa", "--model", str(tiny_llama_dir), "--backend", canned_backend,
               "--n", "1", "--from", "qa-few-words-en", "--limit", "3", "--out", str(tmp_path / "run"),
               "--dir", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert rc == 0 and f"written {tmp_path / 'cli'}" in out and "verdict: " in out
