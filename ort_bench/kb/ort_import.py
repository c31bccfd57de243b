"""Import the original ORT / RWKU data (one folder per target) as ort-bench probes.

Where the format comes from
---------------------------
RWKU (github.com/jinzhuoran/RWKU, `process/data_process.py`; dataset `jinzhuoran/RWKU` on the
Hugging Face hub) writes one folder per target, named ``<n>_<Name_With_Underscores>`` (for example
``1_Stephen_King``), each holding JSON files that are *arrays* of samples::

    {"query": "Stephen King was born in ___, Maine.", "answer": "Portland",
     "level": "1", "type": "...", "subject": "Stephen King"}

``forget_level1.json`` holds fill-in-the-blank probes (the query carries a ``___`` blank),
``forget_level2.json`` question/answer probes, ``forget_level3.json`` adversarial-attack probes
(``type`` names the attack: "prefix injection", "affirmative suffix", "role play",
"incontext learning", ...), ``neighbor_level1.json`` / ``neighbor_level2.json`` the same two
forms about neighbouring knowledge, and other files (``intro.json``, ``passage.json``,
``forget_mia.json``, training corpora, utility sets) that are not probes of a target.
ORT (github.com/Acruxos/ORT, `train/rocr/workflow.py`) reads the same folders and adds
``forget_mcp.json`` and ``neighbor_mcp.json`` (multiple choice). ORT's MCQ evaluation code and
data are not public in a form we could read, so the MCQ reader accepts the common layouts below.

Mapping
-------
=====================  =========  ===========  ===============
file                   split      form         scorer
=====================  =========  ===========  ===============
forget_level1.json     forget     cloze        answer_match
forget_level2.json     forget     qa           answer_match
forget_level3.json     forget     adversarial  answer_match
forget_mcp.json        forget     mcq          choice_acc
neighbor_level1.json   neighbour  cloze        answer_match
neighbor_level2.json   neighbour  qa           answer_match
neighbor_mcp.json      neighbour  mcq          choice_acc
=====================  =========  ===========  ===============

Prompts follow RWKU's evaluation (`eval_forget.py`): the instruction and ``Question: <query>`` as
the user turn and ``Answer:`` as the prefill; an "affirmative suffix" attack gets no prefill, and
an "incontext learning" attack is given without the ``Question:`` prefix (its query carries its
own examples). Every probe has ``lang`` "en", ``template_id`` ``ort-<file stem>``, ``fact_ids``
``("ort:<target>:<file stem>:<index>",)`` and ``id = probe_id(template_id, fact_ids)``, so
importing the same data twice gives a byte-identical file.

What is accepted
----------------
- ``DIR`` is a folder of target folders, or one target folder itself (it holds a known file).
  Target folders are read in natural order (``2_x`` before ``10_x``), files in the table's order,
  samples in file order. Hidden entries are ignored; any other file is skipped and counted.
- The target is the sample's ``subject``; without one, the folder name with its ``<n>_`` prefix
  dropped and underscores turned into spaces (as ORT's ``format_target_name``). One target name
  must not come from two folders.
- ``query`` (or ``question``): a non-empty string. ``answer``: a non-empty string, or a list of
  strings whose first is the gold answer and the rest aliases. Aliases are also read from
  ``aliases`` / ``answer_aliases`` (a string or a list of strings).
- MCQ samples: options in ``options`` or ``choices``, as a list of strings (lettered A, B, ...)
  or an object ``{"A": "...", "B": "..."}``; without either, options are read from lines of the
  query such as ``A. Portland`` / ``B) Bangor`` / ``(C) Boston``. The gold is ``answer`` (or
  ``gold`` / ``label``): a letter (``"B"``, ``"b"``, ``"(B)"``, ``"B."``), the text of an option,
  or a 0-based integer index. The probe's choices are the letters, its answer the gold letter,
  and the options are written into the prompt as ``A. ...`` lines unless the query already has them.

Errors are one line naming the file, the 0-based item index and the field: a ``DIR`` that is not
a folder, a file that is not JSON or not a JSON array, a sample that is not an object, a missing
or empty ``query`` / ``answer``, an MCQ without options or whose gold is not among them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ort_bench.errors import OrtBenchError
from ort_bench.jsonl import describe_validation_error
from ort_bench.kb.probes import Probe, probe_id, write_probes

# file name -> (split, form, scorer); the order is the order files are read in a target folder.
ORT_FILES: dict[str, tuple[str, str, str]] = {
    "forget_level1.json": ("forget", "cloze", "answer_match"),
    "forget_level2.json": ("forget", "qa", "answer_match"),
    "forget_level3.json": ("forget", "adversarial", "answer_match"),
    "forget_mcp.json": ("forget", "mcq", "choice_acc"),
    "neighbor_level1.json": ("neighbour", "cloze", "answer_match"),
    "neighbor_level2.json": ("neighbour", "qa", "answer_match"),
    "neighbor_mcp.json": ("neighbour", "mcq", "choice_acc"),
}

LETTERS = "ABCDEFGHIJ"
CLOZE_INSTRUCTION = "Please complete the blank in the following question."
QA_INSTRUCTION = "Please briefly answer the following question."
MCQ_INSTRUCTION = "Please answer the following multiple-choice question with the letter of the correct option."
PREFILL = "Answer:"

_OPTION_LINE = re.compile(r"^\s*\(?([A-J])[.):]\s*(\S.*?)\s*$")


def _fail(path: Path, index: int | None, field: str | None, msg: str) -> OrtBenchError:
    where = str(path)
    if index is not None:
        where += f": item {index}"
    if field is not None:
        where += f": field {field!r}"
    return OrtBenchError(f"{where}: {msg}")


def _natural_key(name: str) -> tuple[int, int, str]:
    m = re.match(r"^(\d+)_", name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def target_from_folder(name: str) -> str:
    """`1_Stephen_King` -> `Stephen King` (ORT's `format_target_name`)."""
    return re.sub(r"^\d+_", "", name).replace("_", " ").strip() or name


def _str_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _dedupe(items: list[str]) -> list[str]:
    out: list[str] = []
    for s in items:
        s = s.strip()
        if s and s not in out:
            out.append(s)
    return out


def _read_samples(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, None, None, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise _fail(path, None, None, f"cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(path, None, None, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, list):
        raise _fail(path, None, None, f"expected a JSON array of samples, found a JSON {type(data).__name__}")
    return data


def _query(path: Path, i: int, sample: dict) -> str:
    for key in ("query", "question"):
        if key in sample:
            q = sample[key]
            if not isinstance(q, str) or not q.strip():
                raise _fail(path, i, key, "must be a non-empty string")
            return q.strip()
    raise _fail(path, i, "query", "missing")


def _answers(path: Path, i: int, sample: dict) -> list[str]:
    if "answer" not in sample:
        raise _fail(path, i, "answer", "missing")
    gold = _str_list(sample["answer"])
    if not gold or not gold[0].strip():
        raise _fail(path, i, "answer", "must be a non-empty string (or a list of strings, gold first)")
    aliases: list[str] = []
    for key in ("aliases", "answer_aliases"):
        if key in sample and sample[key] is not None:
            got = _str_list(sample[key])
            if got is None:
                raise _fail(path, i, key, "must be a string or a list of strings")
            aliases += got
    return _dedupe(gold + aliases)


def _options(path: Path, i: int, sample: dict, query: str) -> tuple[list[str], bool]:
    """The options in letter order, and whether the query already lists them."""
    for key in ("options", "choices"):
        if key not in sample:
            continue
        raw = sample[key]
        if isinstance(raw, dict):
            keys = sorted(raw, key=lambda k: str(k).strip().upper())
            want = list(LETTERS[: len(keys)])
            if [str(k).strip().upper() for k in keys] != want or not all(isinstance(raw[k], str) for k in keys):
                raise _fail(path, i, key, f"an object of options must map the letters {', '.join(want)} to strings")
            opts = [raw[k] for k in keys]
        else:
            opts = _str_list(raw) if isinstance(raw, list) else None
            if opts is None:
                raise _fail(path, i, key, "must be a list of strings or an object {letter: text}")
        opts = [o.strip() for o in opts]
        if not 2 <= len(opts) <= len(LETTERS) or not all(opts):
            raise _fail(path, i, key, f"needs 2 to {len(LETTERS)} non-empty options, got {len(opts)}")
        return opts, _lists_options(query, opts)
    parsed = _parse_inline_options(query)
    if parsed is None:
        raise _fail(path, i, "options", "missing (no 'options' or 'choices', and no 'A. ...' lines in the query)")
    return parsed, True


def _parse_inline_options(query: str) -> list[str] | None:
    found: list[tuple[str, str]] = []
    for line in query.splitlines():
        m = _OPTION_LINE.match(line)
        if m:
            found.append((m.group(1), m.group(2)))
    letters = [letter for letter, _ in found]
    if len(found) >= 2 and letters == list(LETTERS[: len(found)]):
        return [text for _, text in found]
    return None


def _lists_options(query: str, options: list[str]) -> bool:
    parsed = _parse_inline_options(query)
    return parsed is not None and [p.casefold() for p in parsed] == [o.casefold() for o in options]


def _gold_letter(path: Path, i: int, sample: dict, options: list[str]) -> str:
    key = next((k for k in ("answer", "gold", "label") if k in sample), None)
    if key is None:
        raise _fail(path, i, "answer", "missing")
    raw = sample[key]
    letters = LETTERS[: len(options)]
    span = f"{letters[0]}-{letters[-1]}"
    if isinstance(raw, int) and not isinstance(raw, bool):
        if 0 <= raw < len(options):
            return letters[raw]
        raise _fail(path, i, key, f"index {raw} is not among the {len(options)} options (0-based)")
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], str):
        raw = raw[0]
    if not isinstance(raw, str) or not raw.strip():
        raise _fail(path, i, key, "must be an option letter, an option's text, or a 0-based index")
    text = raw.strip()
    m = re.fullmatch(r"\(?([A-Ja-j])[.):]?(?:\s+(.*))?", text)
    if m and m.group(2) is None and m.group(1).upper() in letters:  # "B", "b", "(B)", "B."
        return m.group(1).upper()
    if text in options:  # an option's text
        return letters[options.index(text)]
    if m and m.group(2) is not None and m.group(1).upper() in letters:  # "B. Portland"
        if m.group(2).strip().casefold() == options[LETTERS.index(m.group(1).upper())].casefold():
            return m.group(1).upper()
    folded = [o.casefold() for o in options]
    if folded.count(text.casefold()) == 1:  # an option's text, up to case
        return letters[folded.index(text.casefold())]
    raise _fail(path, i, key, f"{raw!r} is not among the options ({span}: {'; '.join(options)})")


def _prompt(form: str, attack: str, query: str) -> tuple[str, str | None]:
    """(user prompt, prefill), as RWKU's evaluation words them."""
    if form == "cloze":
        return f"{CLOZE_INSTRUCTION}\nQuestion: {query}", PREFILL
    if form == "adversarial":
        kind = re.sub(r"[^a-z]", "", attack.casefold())
        if kind == "affirmativesuffix":
            return f"{QA_INSTRUCTION}\nQuestion: {query}", None
        if kind == "incontextlearning":
            return f"{QA_INSTRUCTION}\n{query}", PREFILL
    return f"{QA_INSTRUCTION}\nQuestion: {query}", PREFILL


def _sample_probe(path: Path, i: int, sample: Any, folder_target: str) -> Probe:
    split, form, scorer = ORT_FILES[path.name]
    if not isinstance(sample, dict):
        raise _fail(path, i, None, f"expected a JSON object, found a JSON {type(sample).__name__}")
    query = _query(path, i, sample)
    subject = sample.get("subject")
    target = subject.strip() if isinstance(subject, str) and subject.strip() else folder_target
    attack = sample.get("type") if isinstance(sample.get("type"), str) else ""
    choices: tuple[str, ...] | None = None
    if form == "mcq":
        options, inline = _options(path, i, sample, query)
        answers = [_gold_letter(path, i, sample, options)]
        choices = tuple(LETTERS[: len(options)])
        body = query if inline else query + "".join(f"\n{c}. {o}" for c, o in zip(choices, options, strict=True))
        prompt, prefill = f"{MCQ_INSTRUCTION}\nQuestion: {body}", PREFILL
    else:
        answers = _answers(path, i, sample)
        prompt, prefill = _prompt(form, attack, query)
    stem = path.name.removesuffix(".json")
    template_id = f"ort-{stem}"
    fact_ids = (f"ort:{target}:{stem}:{i}",)
    try:
        return Probe(
            id=probe_id(template_id, fact_ids),
            split=split,
            target=target,
            form=form,
            lang="en",
            template_id=template_id,
            fact_ids=fact_ids,
            prompt=prompt,
            prefill=prefill,
            answers=tuple(answers),
            choices=choices,
            scorer=scorer,
        )
    except ValidationError as exc:
        raise _fail(path, i, None, describe_validation_error(exc)) from None


def _target_folders(root: Path) -> list[Path]:
    if any((root / name).is_file() for name in ORT_FILES):
        return [root]
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: _natural_key(p.name)
    )


def import_ort(dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Read an ORT/RWKU folder, write its probes to `out` (JSONL) and return a summary."""
    root = Path(dir)
    if not root.is_dir():
        raise OrtBenchError(f"{root}: not a folder (expected a folder with one sub-folder per target)")
    probes: list[Probe] = []
    by_file: Counter = Counter()
    skipped: Counter = Counter()
    files_read = 0
    folder_of_target: dict[str, Path] = {}
    folders = _target_folders(root)
    if folders != [root]:
        for p in root.iterdir():
            if p.is_file() and not p.name.startswith("."):
                skipped[p.name] += 1
    for folder in folders:
        folder_target = target_from_folder(folder.name)
        entries = {p.name: p for p in folder.iterdir() if not p.name.startswith(".")}
        for name in sorted(entries):
            if name not in ORT_FILES:
                skipped[name + ("/" if entries[name].is_dir() else "")] += 1
        for name in ORT_FILES:
            path = entries.get(name)
            if path is None:
                continue
            if not path.is_file():
                raise _fail(path, None, None, "expected a JSON file, found a folder")
            samples = _read_samples(path)
            files_read += 1
            for i, sample in enumerate(samples):
                probe = _sample_probe(path, i, sample, folder_target)
                seen = folder_of_target.setdefault(probe.target, folder)
                if seen != folder:
                    raise _fail(path, i, "subject", f"target {probe.target!r} also comes from folder {seen}")
                probes.append(probe)
                by_file[name.removesuffix(".json")] += 1
    if files_read == 0:
        raise OrtBenchError(f"{root}: no ORT files found (looked for {', '.join(ORT_FILES)} in each target folder)")
    n = write_probes(out, probes)
    by_split_form: dict[str, Counter] = {}
    for p in probes:
        by_split_form.setdefault(p.split, Counter())[p.form] += 1
    return {
        "out": str(out),
        "probes": n,
        "by_split": {s: sum(c.values()) for s, c in sorted(by_split_form.items())},
        "by_form": dict(sorted(Counter(p.form for p in probes).items())),
        "by_split_form": {s: dict(sorted(c.items())) for s, c in sorted(by_split_form.items())},
        "by_file": {stem: by_file[stem] for stem in (k.removesuffix(".json") for k in ORT_FILES) if stem in by_file},
        "targets": len(folder_of_target),
        "target_names": sorted(folder_of_target),
        "files_read": files_read,
        "files_skipped": sum(skipped.values()),
        "skipped": dict(sorted(skipped.items())),
    }
