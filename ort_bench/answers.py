"""Free-answer matching that credits only the answer (benchmark v3's free-answer scorer).

ROUGE-L recall (`ort_bench.scoring.metrics.rouge_l_recall`) credits every word of a gold answer:
"Jane Bennet is the author of ..." gets 0.5 for "Jane Austen", any output with "the" gets 0.5 for
"the Bard", and a gold that stands in the prompt ("In which work is Prince Hamlet the main
character?" -> "Hamlet") is credited to a model that echoes the prompt. `answer_match` counts only
the words that carry the answer:

1. Tokens: `UnicodeRougeTokenizer`, the tokenizer of ROUGE-L (NFKC, lowercase, runs of letters or
   digits of any script, one token per CJK ideograph or kana, Porter stem of non-CJK tokens longer
   than 3 characters), so "Austens" matches "Austen" and "ÖSTERREICH" matches "Österreich". Accents
   stay: NFKC composes "O" + U+0308 into "Ö" but does not remove it, so "Osterreich" is another word
   than "Österreich" (as in rouge_l_recall); the KB lists an unaccented spelling as an alias where
   it is in use ("Saint-Exupery").
2. Content terms of a text: its tokens minus stopwords and single letters. Stopwords are those of
   its language and of English (answers in other languages often carry English names), listed in
   `ort_bench/stopwords.yaml` and compared with the normalised, lowercased but unstemmed word: the
   lists spell out inflected forms ("being", "unos"), and comparing stems would make content words
   stopwords (Porter turns "Ares" into "are", "unos" into "uno", "avons" into "avon"). Single
   letters go ("F." of "John F. Kennedy", the "s" of "Austen's", list labels "a)"): a one-letter
   token cannot be told apart from an initial or a label. Digits are content at any length: "7"
   and "1564" are real answers. A run of CJK characters is one term, matched as a contiguous string
   (gold 英国 is not found in "英语……美国"), and is dropped only when every character of it is a
   stop character, because Chinese function characters are also parts of words (和 in 共和国).
3. Context: a term of an alias that occurs in the content of a context text (the prompt, the system
   turn, the assistant prefill: whatever the model was shown) is *voided*: saying it is no evidence,
   since the model can copy it. An alias with no term left that is not voided is *void*: it cannot
   be told apart from echoing the prompt (an in-context example's "A: England" voids gold
   "England"). `all_aliases_in_context` says when every alias is void; such items are not rendered.
4. Score: 1.0 if some non-void alias has all its terms, voided ones included, in the output's content
   terms in order (LCS recall 1 over terms), else 0.0. Voided terms are still required: otherwise
   gold "Ciudad de México", asked about México, would shrink to "ciudad", which "Ciudad Juárez"
   satisfies. They are only not evidence: an alias needs at least one term that is not voided.

Order: in order, as ROUGE-L's LCS. A multi-word answer is a name or title whose words come in order;
the same words in another order usually name something else ("York, not New Haven" for gold "New
York"), and the reversed name "Austen, Jane" is covered by the surname alias the KB lists for people.
Known limits: mention is not assertion ("It is not Jane Austen" scores 1), number words do not match
digits ("seven" vs "7"), and Chinese has no word boundaries (gold 美国 is found inside 南美国家).

`content_recall` is the graded version kept in the records beside the binary score: the largest, over
non-void aliases, LCS of the alias's non-voided terms with the output's content terms divided by their
number. A score of 1.0 implies a recall of 1.0 (not the converse: recall ignores voided terms).

This is a base module: it imports no other stage (`ort_bench.scoring.metrics` imports the tokenizer
from here).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources

from ort_bench.errors import OrtBenchError

# --------------------------------------------------------------------------------------------------
# Tokenizer (shared with ROUGE-L)
# --------------------------------------------------------------------------------------------------

# Ideographs (CJK Unified + extension A + compatibility + extension B..F), kana. Written without spaces
# between words, so each character is one token; Hangul is written with spaces and stays word-level.
_CJK_RANGES = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
_CJK_CHAR = f"[{_CJK_RANGES}]"
# A CJK character alone, or a run of letters/digits (any script) that contains no CJK character.
_ROUGE_TOKEN_RE = re.compile(f"{_CJK_CHAR}|[^\\W_{_CJK_RANGES}]+")
_CJK_RE = re.compile(_CJK_CHAR)
# The same tokens, a run of CJK characters kept together (group 1): the tokens are its characters.
_PIECE_RE = re.compile(f"({_CJK_CHAR}+)|[^\\W_{_CJK_RANGES}]+")


class UnicodeRougeTokenizer:
    """rouge-score's default tokenizer keeps only [a-z0-9]: it deletes every Chinese character and
    splits accented words ("Léon" -> "l", "on"), so a Chinese answer would score 0 (or, with an
    empty gold, meaninglessly) whatever the model says. This one keeps every script, makes each CJK
    character a token (no spaces between Chinese words), and matches the default on ASCII text."""

    def __init__(self, use_stemmer: bool = True):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens = _ROUGE_TOKEN_RE.findall(unicodedata.normalize("NFKC", text).lower())
        if self._stemmer is None:
            return tokens
        return [self._stemmer.stem(t) if len(t) > 3 and not _CJK_RE.match(t) else t for t in tokens]


@functools.lru_cache(maxsize=1)
def _tokenizer() -> UnicodeRougeTokenizer:
    return UnicodeRougeTokenizer(use_stemmer=True)


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    """A non-CJK token as `UnicodeRougeTokenizer.tokenize` leaves it (word is normalised already)."""
    stemmer = _tokenizer()._stemmer
    return stemmer.stem(word) if len(word) > 3 else word


# A piece: (tokens, surface). A word is ((stem,), word); a run of CJK characters is (its characters, the run).
_Piece = tuple[tuple[str, ...], str]


def _pieces(text: str) -> list[_Piece]:
    """The tokens of `text`, grouped: flattened, they are exactly
    `UnicodeRougeTokenizer(use_stemmer=True).tokenize(text)`. The surface (normalised, lowercased, not
    stemmed) is what stopwords are compared with."""
    out: list[_Piece] = []
    for word in _unspelled(_PIECE_RE.finditer(unicodedata.normalize("NFKC", text).lower())):
        if word.startswith(SPELLED):
            out.append(((word,), word))
        else:
            out.append((tuple(word), word) if _CJK_RE.match(word) else ((_stem(word),), word))
    return out


# Marks a word written letter by letter: it matches only a word written so, never the whole word.
SPELLED = "\u2063"


def _unspelled(matches: Iterator[re.Match[str]]) -> Iterator[str]:
    """The words of the matches, each run of two or more single letters or digits joined into the word
    they spell, marked as spelled (`SPELLED`): "P-a-r-i-s", "P a r i s" and one letter a line all
    read as the one spelled word "paris", so a letter-by-letter gold (the subtoken form) is one term
    that a letter-by-letter answer matches, and "Paris" said whole does not: the form measures
    whether the model can still produce the answer letter by letter, as its name says."""
    run: list[str] = []
    end = None
    for m in matches:
        word = m.group(0)
        if len(word) == 1 and not m.group(1):
            if run and not _SPELLING_GAP.fullmatch(m.string[end:m.start()]):  # "l'a" is no spelling
                yield from run if len(run) == 1 else [SPELLED + "".join(run)]
                run = []
            run.append(word)
            end = m.end()
            continue
        if run:
            yield from run if len(run) == 1 else [SPELLED + "".join(run)]
            run = []
        yield word
    if run:
        yield from run if len(run) == 1 else [SPELLED + "".join(run)]


# What may stand between the letters of a spelled word: spaces, new lines, hyphens, dots, commas.
_SPELLING_GAP = re.compile(r"[\s\-\u2010-\u2014.,·/|]+")


# --------------------------------------------------------------------------------------------------
# Stopwords
# --------------------------------------------------------------------------------------------------

_STOPWORDS_FILE = "stopwords.yaml"


@functools.lru_cache(maxsize=1)
def _stopword_table() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """lang -> (its stopwords, the words it keeps from the English list), normalised (NFKC, lowercase)."""
    import yaml

    raw = yaml.safe_load(resources.files("ort_bench").joinpath(_STOPWORDS_FILE).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or "en" not in raw:
        raise OrtBenchError(f"ort_bench/{_STOPWORDS_FILE}: expected a mapping of languages with 'en' among them")
    table = {}
    for lang, groups in raw.items():
        if not isinstance(groups, dict) or not all(isinstance(v, str) for v in groups.values()):
            raise OrtBenchError(f"ort_bench/{_STOPWORDS_FILE}: {lang!r} must map group names to words")
        stop, keep = set(), set()
        for group, words in groups.items():
            for word in words.split():
                pieces = _pieces(word)
                if len(pieces) != 1 or len(pieces[0][0]) != 1:
                    raise OrtBenchError(f"ort_bench/{_STOPWORDS_FILE}: {lang}.{group}: {word!r} is not one token")
                (keep if group == "keep_from_english" else stop).add(pieces[0][1])
        if stop & keep:
            raise OrtBenchError(f"ort_bench/{_STOPWORDS_FILE}: {lang}: {sorted(stop & keep)} both stop and kept")
        table[str(lang)] = (frozenset(stop), frozenset(keep))
    return table


@functools.lru_cache(maxsize=16)
def _stopwords(lang: str) -> frozenset[str]:
    table = _stopword_table()
    if lang not in table:
        raise OrtBenchError(f"no stopword list for language {lang!r} (known: {', '.join(table)})")
    stop, keep = table[lang]
    return frozenset((stop | table["en"][0]) - keep)


def stopwords(lang: str) -> frozenset[str]:
    """The words (NFKC, lowercase, not stemmed) that do not count in a text of `lang`: its own list
    and the English one, less its `keep_from_english` words."""
    return _stopwords(lang)


# --------------------------------------------------------------------------------------------------
# Content terms
# --------------------------------------------------------------------------------------------------


def _is_cjk(term: tuple[str, ...]) -> bool:
    return bool(_CJK_RE.match(term[0]))


def _is_stop(piece: _Piece, stop: frozenset[str]) -> bool:
    tokens, surface = piece
    return all(ch in stop for ch in tokens) if _is_cjk(tokens) else surface in stop


def _is_content(piece: _Piece, stop: frozenset[str]) -> bool:
    tokens, surface = piece
    return not _is_stop(piece, stop) and (_is_cjk(tokens) or len(surface) > 1 or surface.isdigit())


def _terms(text: str, lang: str) -> list[tuple[str, ...]]:
    """The content terms of `text`: words (1-tuples of their stem) and CJK runs, in order."""
    stop = _stopwords(lang)
    return [p[0] for p in _pieces(text) if _is_content(p, stop)]


def content_tokens(text: str, lang: str) -> list[str]:
    """The tokens of `text` that can carry an answer: tokens minus the stopwords of `lang` and English,
    minus single letters; a CJK run is kept whole unless all its characters are stop characters."""
    return [t for term in _terms(text, lang) for t in term]


def _term_text(term: tuple[str, ...]) -> str:
    return "".join(term) if _is_cjk(term) else term[0]


def alias_problem(alias: str, lang: str) -> str | None:
    """Why `alias` cannot serve as a gold answer in `lang`, or None when it can: it has no content
    term, being made only of punctuation ("?!", "€"), of stopwords ("the", "Le", "He" as helium), or
    of single letters besides ("C", "the X", "U.S."), which cannot be told apart from initials and
    labels. Digits are content at any length ("7", "1564")."""
    pieces = _pieces(alias)
    if not pieces:
        return f"{alias!r} has no letter or digit"
    stop = _stopwords(lang)
    if any(_is_content(p, stop) for p in pieces):
        return None
    words = ", ".join(surface for _tokens, surface in pieces)
    if all(_is_stop(p, stop) for p in pieces):
        langs = lang if lang == "en" else f"{lang} or en"
        return f"{alias!r} is made only of stopwords of {langs} ({words})"
    return f"{alias!r} has no content word: its tokens ({words}) are stopwords or single letters"


# --------------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------------


def _occurs(term: tuple[str, ...], tokens: Sequence[str]) -> bool:
    n = len(term)
    if n == 1:
        return term[0] in tokens
    return any(tuple(tokens[i:i + n]) == term for i in range(len(tokens) - n + 1))


def _lcs_terms(terms: Sequence[tuple[str, ...]], tokens: Sequence[str]) -> int:
    """Longest common subsequence of `terms` with `tokens`, where a term of several tokens (a CJK run)
    matches only as a contiguous span of tokens: the number of terms in it."""
    prev = [0] * (len(tokens) + 1)
    for term in terms:
        n = len(term)
        cur = [0] * (len(tokens) + 1)
        for j in range(1, len(tokens) + 1):
            best = max(cur[j - 1], prev[j])
            if j >= n and (tokens[j - 1] == term[0] if n == 1 else tuple(tokens[j - n:j]) == term):
                best = max(best, prev[j - n] + 1)
            cur[j] = best
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class AliasMatch:
    """One alias against one output. Terms are stems ("austen") or CJK runs ("莎士比亚")."""

    alias: str
    counted: tuple[str, ...]  # content terms not in the context: the evidence
    voided: tuple[str, ...]  # content terms found in the context: still required, not evidence
    matched: bool  # every content term in the output, in order (and the alias is not void)
    recall: float  # LCS of the counted terms with the output / their number; 0.0 when void

    @property
    def void(self) -> bool:
        return not self.counted


@dataclass(frozen=True)
class MatchDetails:
    """`answer_match`'s score, `content_recall`'s recall and how each alias fared."""

    score: float  # 1.0 or 0.0
    recall: float
    matched_alias: str | None  # the first alias that matched
    aliases: tuple[AliasMatch, ...]

    @property
    def all_void(self) -> bool:
        return all(a.void for a in self.aliases)

    @property
    def counted(self) -> dict[str, tuple[str, ...]]:
        return {a.alias: a.counted for a in self.aliases}

    @property
    def voided(self) -> dict[str, tuple[str, ...]]:
        return {a.alias: a.voided for a in self.aliases}


def _check(answers: Sequence[str], context: Sequence[str]) -> None:
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not one string")
    if len(answers) == 0:
        raise ValueError("answer matching needs at least one gold answer")
    if isinstance(context, str):
        raise TypeError("context must be a sequence of texts (prompt, system, prefill), not one string")


def _alias_terms(
    answers: Sequence[str], lang: str, context: Sequence[str]
) -> Iterator[tuple[str, list[tuple[str, ...]], list[bool]]]:
    """(alias, its terms, which of them are voided) per alias."""
    ctx = [content_tokens(c, lang) for c in context if c]
    for alias in answers:
        terms = _terms(alias, lang)
        yield alias, terms, [any(_occurs(t, c) for c in ctx) for t in terms]


def match_details(output: str, answers: Sequence[str], lang: str, context: Sequence[str] = ()) -> MatchDetails:
    """`answer_match` with its workings: per alias the counted and voided terms, match and recall."""
    _check(answers, context)
    out = content_tokens(output, lang)
    rows = []
    for alias, terms, voided in _alias_terms(answers, lang, context):
        counted = [t for t, v in zip(terms, voided, strict=True) if not v]
        matched = bool(counted) and _lcs_terms(terms, out) == len(terms)
        recall = _lcs_terms(counted, out) / len(counted) if counted else 0.0
        rows.append(AliasMatch(alias, tuple(map(_term_text, counted)),
                               tuple(_term_text(t) for t, v in zip(terms, voided, strict=True) if v), matched, recall))
    first = next((r.alias for r in rows if r.matched), None)
    return MatchDetails(1.0 if first is not None else 0.0, max(r.recall for r in rows), first, tuple(rows))


def answer_match(output: str, answers: Sequence[str], lang: str, context: Sequence[str] = ()) -> float:
    """1.0 if `output` says some gold alias, else 0.0 (the rule is in the module docstring). `context`:
    the texts the model was shown (prompt, system turn, prefill); their words are not evidence."""
    return match_details(output, answers, lang, context).score


def content_recall(output: str, answers: Sequence[str], lang: str, context: Sequence[str] = ()) -> float:
    """The graded score: max over non-void aliases of LCS(counted terms, output) / len(counted terms);
    0.0 when every alias is void."""
    return match_details(output, answers, lang, context).recall


def all_aliases_in_context(answers: Sequence[str], lang: str, context: Sequence[str]) -> bool:
    """True when every alias is void: its content terms all stand in the context, or it has none.
    No output can then be told apart from an echo of what the model was shown; skip the item."""
    _check(answers, context)
    return all(all(voided) for _alias, _terms_, voided in _alias_terms(answers, lang, context))


def match_scores(output: str, answers: Sequence[str], lang: str, prompt_text: str,
                 end: str = "none") -> dict[str, float]:
    """The two numbers a record keeps for a free answer: `answer_match` (the decision) and
    `content_recall`, of the answer the output gives (`cut_answer(output, end)`), against everything
    the model was shown (`prompt_text`: the formatted chat, with the system turn, the user turn and the
    prefill)."""
    d = match_details(cut_answer(output, end), answers, lang, (prompt_text,))
    return {"answer_match": d.score, "content_recall": d.recall}


# The end of a one-sentence answer: a line break, a Chinese full stop, or . ! ? followed by a space or
# the end, unless it closes an initial ("J. K. Rowling"), a usual abbreviation ("St. Petersburg") or a
# list number at the start of a line ("1. Paris").
_SENTENCE_MARK = re.compile(r"\n|[。！？]|[.!?](?=\s|$)")
_LAST_WORD = re.compile(r"(?:^|(?<=\s))?([^\W_]+)$")
_ABBREVIATIONS = frozenset({"dr", "st", "mr", "mrs", "ms", "jr", "sr", "vs", "no", "mt", "ft", "ca", "etc", "prof",
                            "gen", "sgt", "capt", "col", "lt", "rev", "hon", "inc", "co", "corp", "ltd"})
ANSWER_ENDS = ("sentence", "paragraph", "none")


def _ends_sentence(text: str, mark: re.Match[str]) -> bool:
    if mark.group(0) != ".":
        return True
    before = text[:mark.start()]
    word = _LAST_WORD.search(before)
    if word is None:
        return True
    w = word.group(1)
    line_start = before[:word.start(1)].rstrip(" \t").endswith("\n") or not before[:word.start(1)].strip()
    if (len(w) == 1 and w.isalpha()) or w.lower() in _ABBREVIATIONS:
        return False
    return not (w.isdigit() and len(w) <= 2 and line_start)


def cut_answer(text: str, end: str = "sentence") -> str:
    """The answer a free continuation gives: up to the end of its first sentence (`sentence`), its first
    paragraph (`paragraph`: a blank line; step-by-step forms), or all of it (`none`). Greedy decoding
    goes on after the answer ("Paris. It is known for ..."): what comes after is not the answer, and
    a name it happens to mention later is not credited."""
    if end == "none":
        return text
    if end == "paragraph":
        return text.split("\n\n", 1)[0]
    if end != "sentence":
        raise ValueError(f"unknown answer end {end!r} (one of {', '.join(ANSWER_ENDS)})")
    for mark in _SENTENCE_MARK.finditer(text):
        if _ends_sentence(text, mark):
            return text[:mark.end()].rstrip()
    return text
