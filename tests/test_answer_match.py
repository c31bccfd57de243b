"""ort_bench.answers: the v3 free-answer scorer (content words, context voiding) and the tokenizer it
shares with ROUGE-L. The hand-checked cases live in fixtures/answer_match_cases.yaml."""

from __future__ import annotations

import unicodedata
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest
import yaml

from ort_bench import answers as A
from ort_bench.answers import (
    alias_problem,
    all_aliases_in_context,
    answer_match,
    content_recall,
    content_tokens,
    match_details,
    stopwords,
)
from ort_bench.errors import OrtBenchError

CASES = yaml.safe_load((Path(__file__).parent / "fixtures" / "answer_match_cases.yaml").read_text("utf-8"))["cases"]


def _context(case: dict) -> list[str]:
    return [case[k] for k in ("prompt", "system", "prefill") if case.get(k)]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_fixture_case(case):
    context = _context(case)
    details = match_details(case["output"], case["answers"], case["lang"], context)
    assert details.score == case["expected"], f"{case['why']}; details: {details}"
    assert answer_match(case["output"], case["answers"], case["lang"], context) == case["expected"]
    # a match is full recall of the counted terms (the converse need not hold)
    if details.score == 1.0:
        assert details.recall == 1.0 and details.matched_alias in case["answers"]
    else:
        assert details.matched_alias is None


def test_fixture_is_well_formed():
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)) and len(CASES) >= 40
    per_lang = Counter(c["lang"] for c in CASES)
    assert set(per_lang) == {"en", "fr", "de", "es", "zh"}
    assert all(per_lang[lang] >= 4 for lang in ("fr", "de", "es", "zh")), per_lang
    for c in CASES:
        assert c["expected"] in (0, 1) and c["why"].strip() and c["answers"] and c["prompt"], c["id"]
        assert set(c) <= {"id", "lang", "prompt", "system", "prefill", "output", "answers", "expected", "why"}
    assert {c["expected"] for c in CASES if c["lang"] != "en"} == {0, 1}


def test_pieces_flatten_to_the_rouge_tokens():
    tok = A.UnicodeRougeTokenizer(use_stemmer=True)
    texts = [t for c in CASES for t in [c["output"], *c["answers"], *_context(c)]]
    texts += ["Writings 2023 A_b-c", "中文English混合text", "  ", "Léon's 北京，上海!"]
    for text in texts:
        rouge = tok.tokenize(text)
        if any(len(a) == 1 == len(b) for a, b in zip(rouge, rouge[1:], strict=False)):
            continue  # letters one by one read as the word they spell (test_content_tokens)
        pieces = A._pieces(text)
        assert [t for tokens, _surface in pieces for t in tokens] == tok.tokenize(text), text
        assert [s for _tokens, s in pieces] == [m.group(0) for m in A._PIECE_RE.finditer(
            unicodedata.normalize("NFKC", text).lower())]


def test_metrics_reexports_the_tokenizer():
    from ort_bench.scoring import metrics

    assert metrics.UnicodeRougeTokenizer is A.UnicodeRougeTokenizer
    assert metrics._CJK_CHAR == A._CJK_CHAR and metrics._CJK_RANGES == A._CJK_RANGES
    assert metrics._ROUGE_TOKEN_RE is A._ROUGE_TOKEN_RE and metrics._CJK_RE is A._CJK_RE


def test_rouge_l_recall_unchanged():
    from ort_bench.scoring.metrics import rouge_l_recall

    # accented word kept whole: gold [léon], prediction [léon, blum] -> 1/1; "leon" is another token
    assert rouge_l_recall("Léon Blum", ["Léon"]) == 1.0
    assert rouge_l_recall("Leon Blum", ["Léon"]) == 0.0
    # Chinese per character: gold 莎,士,比,亚; prediction 莎,翁 -> LCS 莎 -> 1/4
    assert rouge_l_recall("莎翁", ["莎士比亚"]) == pytest.approx(0.25)
    # gold 英,国 in order (not contiguous) in 他,用,英,语,写,作,后,来,移,居,美,国 -> 2/2
    assert rouge_l_recall("他用英语写作，后来移居美国。", ["英国"]) == 1.0
    # ASCII: gold [jane, austen], prediction shares jane -> 1/2; the "the" of "the Bard" -> 1/2
    assert rouge_l_recall("Jane Bennet is the author", ["Jane Austen"]) == pytest.approx(0.5)
    assert rouge_l_recall("the playwright", ["the Bard"]) == pytest.approx(0.5)
    # reversed: LCS of [jane, austen] with [austen, jane] is 1 -> 1/2; max over answers -> 1
    assert rouge_l_recall("Austen Jane", ["Jane Austen"]) == pytest.approx(0.5)
    assert rouge_l_recall("Austen Jane", ["Jane Austen", "Austen"]) == 1.0
    # stemmed: Bennets -> bennet
    assert rouge_l_recall("The Bennets", ["Bennet"]) == 1.0


def test_content_tokens():
    assert content_tokens("Jane Bennet is the author of Pride and Prejudice.", "en") == [
        "jane", "bennet", "author", "pride", "prejudic"]
    # single letters go, digits stay
    assert content_tokens("John F. Kennedy, 7", "en") == ["john", "kennedi", "7"]
    # a spelled word (letters one by one) reads as the word it spells; an elision is no spelling
    assert content_tokens("P-a-r-i-s", "en") == content_tokens("P\na\nr\ni\ns", "en") == [A.SPELLED + "paris"]
    assert answer_match("P a r i s", ["P-a-r-i-s"], "en") == 1.0
    assert answer_match("Paris", ["P-a-r-i-s"], "en") == 0.0  # said whole, not spelled: not this form's answer
    assert content_tokens("qui l'a écrit", "fr") == ["écrit"]
    # English stopwords count in every language; fr keeps "or" (gold)
    assert content_tokens("the Bard, c'est l'or", "fr") == ["bard", "or"]
    assert content_tokens("gold or silver", "en") == ["gold", "silver"]
    # a Chinese run goes only when it is all stop characters
    assert content_tokens("是的，和平与共和国", "zh") == list("和平与共和国")
    assert content_tokens("他们是", "zh") == []


def test_stopwords_keep_content_words():
    # content words that a careless list (or comparing stems: Ares -> are, Avon <- avons, uno <- unos,
    # eur <- eure) would delete
    for lang, words in {
        "en": "united new states king year one world may will won don haven up Ares",
        "fr": "nouveau roi Avon or mai",
        "de": "vereinigte staaten könig will man EUR",
        "es": "estados unidos nuevo rey uno bajos",
        "zh": "年 月 日 人 上 国",
    }.items():
        deleted = [w for w in words.split() if not content_tokens(w, lang)]
        assert not deleted, (lang, deleted)
    # inflected stopwords are listed as such; English counts everywhere
    assert content_tokens("being does unos avons eure", "en") == ["uno", "avon", "eur"]
    assert content_tokens("unos", "es") == content_tokens("avons", "fr") == content_tokens("eure", "de") == []
    assert {"the", "of", "and", "being"} <= stopwords("zh")
    assert {"le", "de", "qu"} <= stopwords("fr") and "or" not in stopwords("fr") and "or" in stopwords("en")


def test_stopword_file_ships_with_the_package():
    assert resources.files("ort_bench").joinpath("stopwords.yaml").is_file()
    text = (Path(__file__).parent.parent / "pyproject.toml").read_text("utf-8")
    assert 'ort_bench = ["stopwords.yaml"]' in text


def test_alias_problem():
    for alias, lang in [("Jane Austen", "en"), ("the Bard", "en"), ("7", "en"), ("1564", "zh"), ("莎士比亚", "zh"),
                        ("氨", "zh"), ("Le", "en"), ("or", "fr"), ("H₂O", "en"), ("Napoleon I", "en")]:
        assert alias_problem(alias, lang) is None, alias
    assert "stopwords" in alias_problem("the", "en")
    assert "stopwords" in alias_problem("Le", "fr")  # a stopword in French, a word elsewhere
    assert "stopwords" in alias_problem("or", "en")
    assert "stopwords" in alias_problem("He", "en")  # helium: the pronoun wins
    assert "stopwords" in alias_problem("是的", "zh")
    assert "no letter or digit" in alias_problem("?!", "en")
    assert "no letter or digit" in alias_problem("", "de")
    assert "single letters" in alias_problem("C", "en")
    assert "single letters" in alias_problem("the X", "en")
    # documented collision through the stemmer: seine -> sein (his)
    assert alias_problem("die Seine", "de") is not None and alias_problem("Seine", "fr") is None


def test_all_aliases_in_context():
    hamlet = ["In which work is Prince Hamlet the main character?"]
    assert all_aliases_in_context(["Hamlet"], "en", hamlet)
    assert not all_aliases_in_context(["Hamlet", "The Tragedy of Hamlet, Prince of Denmark"], "en", hamlet)
    icl = ["Q: Where was Shakespeare born? A: England\nQ: Where was Dickens born? A:"]
    assert all_aliases_in_context(["England"], "en", icl)
    assert not all_aliases_in_context(["Portsmouth", "England"], "en", icl)
    # any context text voids: system turn, prefill
    assert all_aliases_in_context(["Rome"], "en", ["What is the capital of Italy?", "", "Rome is"])
    # no context, no void; an alias without content is void anyway
    assert not all_aliases_in_context(["Hamlet"], "en", [])
    assert all_aliases_in_context(["the", "?"], "en", [])
    assert all_aliases_in_context(["哈姆雷特"], "zh", ["哈姆雷特王子是哪部作品的主角？"])
    assert not all_aliases_in_context(["英国"], "zh", ["莎士比亚是哪个国家的人？"])


def test_content_recall_and_details():
    # Jane Austen: jane of 2 terms -> 1/2; Austen: 0/1 -> max 0.5, no match
    d = match_details("Jane Bennet is the author.", ["Jane Austen", "Austen"], "en", ["Who wrote Emma?"])
    assert (d.score, d.recall, d.matched_alias) == (0.0, 0.5, None)
    assert d.counted == {"Jane Austen": ("jane", "austen"), "Austen": ("austen",)}
    assert d.voided == {"Jane Austen": (), "Austen": ()} and not d.all_void
    # méxico is voided: counted ciudad is said (recall 1) but méxico is missing (no match)
    ctx = ["¿Cuál es la capital de México?"]
    d = match_details("Ciudad Juárez", ["Ciudad de México"], "es", ctx)
    assert (d.score, d.recall) == (0.0, 1.0)
    assert d.counted == {"Ciudad de México": ("ciudad",)} and d.voided == {"Ciudad de México": ("méxico",)}
    assert content_recall("Ciudad de México", ["Ciudad de México"], "es", ctx) == 1.0
    # counted tragedy, denmark (hamlet, prince voided): the output has tragedy only -> 1/2
    hamlet = ["In which work is Prince Hamlet the main character?"]
    long = "The Tragedy of Hamlet, Prince of Denmark"
    assert content_recall("The Tragedy of Macbeth", ["Hamlet", long], "en", hamlet) == 0.5
    d = match_details("Hamlet", ["Hamlet", long], "en", hamlet)
    assert d.aliases[0].void and not d.aliases[1].void and d.aliases[1].voided == ("hamlet", "princ")
    # every alias void -> recall 0 whatever the output
    assert content_recall("Hamlet", ["Hamlet"], "en", hamlet) == 0.0
    # a CJK run is one term: 北京市 is not found in 北京, so no partial credit (ROUGE-L gives 2/3)
    assert content_recall("他出生于北京", ["北京市"], "zh") == 0.0
    assert content_recall("阿尔伯特和爱因斯坦", ["阿尔伯特·爱因斯坦"], "zh") == 1.0
    # in order: LCS of [new, york] with [york, new] is 1 -> 1/2
    assert content_recall("York, new", ["New York"], "en") == 0.5


def test_bad_input():
    with pytest.raises(TypeError):
        answer_match("x", "Paris", "en")
    with pytest.raises(ValueError):
        answer_match("x", [], "en")
    with pytest.raises(TypeError):
        answer_match("x", ["Paris"], "en", "What is the capital of France?")
    with pytest.raises(OrtBenchError, match="no stopword list"):
        answer_match("x", ["Paris"], "it")
