"""A checkpoint on disk: the card files that say what made it, loading it for training, writing it.

`unlearn` writes `unlearn_card.json` beside the weights, `attack` writes `attack_card.json`; evaluate
copies what they say into results.json (`origin`). Writing goes through a sibling temporary folder
that is moved into place at the end (`staged_output`), so a failed run never leaves a half-written
checkpoint, and an existing folder is replaced only if it is empty or an earlier ort-bench output.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.models.load_options import LoadOptions

UNLEARN_CARD = "unlearn_card.json"
ATTACK_CARD = "attack_card.json"
CARDS = (UNLEARN_CARD, ATTACK_CARD)  # a folder holding one of these is ort-bench output (safe to replace)
CARD_SCHEMA_VERSION = 1
# What results.json keeps of each card (under the key on the right).
_ORIGIN_KEYS = {UNLEARN_CARD: "unlearned_with", ATTACK_CARD: "attack"}
_ORIGIN_FIELDS = ("method", "attack", "env", "targets", "train_form", "hyperparameters", "attacked_model",
                  "base_model", "trained_probe_ids")


def has_card(d: str | Path, card: str = UNLEARN_CARD) -> bool:
    """Whether `d` is a finished checkpoint of that kind (the card is written last)."""
    return (Path(d) / card).is_file()


def read_card(d: str | Path, card: str) -> dict[str, Any] | None:
    """The card's JSON, or None when it is missing or unreadable."""
    try:
        return json.loads((Path(d) / card).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def origin(d: str | Path) -> dict[str, Any]:
    """What made this checkpoint, from its cards: an attacked model scored against the original
    reference gives the robust efficacy."""
    out: dict[str, Any] = {}
    for card, key in _ORIGIN_KEYS.items():
        data = read_card(d, card)
        if data is not None:
            out[key] = {k: data[k] for k in _ORIGIN_FIELDS if k in data}
    return out


def copy_card(model_dir: str | Path, run_dir: Path) -> None:
    """Copy the checkpoint's cards into a run folder, so an entry carries what made its model."""
    for card in _ORIGIN_KEYS:
        if has_card(model_dir, card):
            shutil.copyfile(Path(model_dir) / card, Path(run_dir) / card)


def check_out_dir(out: Path) -> None:
    """`out` may be missing, empty, or an earlier ort-bench checkpoint; anything else is refused."""
    if out.exists():
        if not out.is_dir():
            raise OrtBenchError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not any((out / c).is_file() for c in CARDS):
            raise OrtBenchError(f"{out}: directory is not empty and is not an ort-bench checkpoint; "
                                "choose another --out")


def save_model(model, tokenizer, out: Path) -> None:
    """Save an HF directory: safetensors weights and the tokenizer with its chat template."""
    base = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model  # a peft model
    base.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def save_with_card(model, tokenizer, d: Path, card_name: str, card: dict[str, Any]) -> None:
    """Model + tokenizer + card (JSON) into the existing folder `d`; the card last."""
    save_model(model, tokenizer, d)
    (d / card_name).write_text(json.dumps(card, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A sibling temporary folder to write into; moved to `out` when the block ends without error,
    removed otherwise, so a failed run leaves no half-written output. `out` is checked (missing,
    empty or an earlier ort-bench output) before and again just before the move."""
    check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)
        check_out_dir(out)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_checkpoint(model, tokenizer, out: Path, card_name: str, card: dict[str, Any]) -> None:
    """Save model + tokenizer + card into a sibling temp folder, then move it to `out`."""
    with staged_output(out) as tmp:
        save_with_card(model, tokenizer, tmp, card_name, card)


def load_for_training(spec: str, load: LoadOptions):
    """(ResolvedModel, tokenizer, model) with full weights to edit, on `load.device` (resolved: never
    "auto"): a LoRA is merged into its base."""
    from ort_bench.models.loading import load_causal_lm, load_tokenizer
    from ort_bench.models.resolve import resolve_model

    resolved = resolve_model(str(spec), load)
    tokenizer = load_tokenizer(resolved)
    lm = load_causal_lm(resolved, load)
    if hasattr(lm, "merge_and_unload"):
        lm = lm.merge_and_unload()
    return resolved, tokenizer, lm
