"""ROCR: rank-one concept redirection, as the ORT reference code does it (training-free).

Source: `LLaMA-Factory/src/llmtuner/train/rocr/` of github.com/Acruxos/ORT (`rocr/rocr_main.py`,
`rocr/compute_z.py`, `workflow.py`, `rocr_hparams/llama3-8b-instruct.json`), its "unrelated" mode.
Each target is one edit request {subject: the target's name, prompt "{}."}; targets are edited one
after another.

1. Keys (`compute_ks`). K at layer l: the input of the MLP down-projection at the subject's last
   token, averaged over ORT's six chat contexts (a user turn "<starter> {subject}." through the chat
   template, then "Answer:"; starters "", "Please answer the question about", ...).
2. Value (`compute_z_unrelated`). z: the output of the last edited layer L at the last token of an
   unrelated real entity ("Donald Trump") in the first of those contexts: at layer L the subject is
   made to look like another, real entity, so that what the model knows about the subject is no
   longer reached.
3. Residual, spread over the layers. At the i-th edited layer (going up), R = (z - h_L) /
   (len(layers) - i), with h_L the output of layer L at the subject's last token in the bare prompt
   "{subject}." on the model as edited so far.
4. Update, projected onto the null space of general-text keys (AlphaEdit, Fang et al. 2024):

       Delta = solve(P (K K^T + C_prev) + lambda I, P K R^T)      (d_ff x d_model; W_down += Delta^T)

   P = U_s U_s^T over the eigenvectors of the key covariance E[k k^T] (general text,
   `ort_bench.unlearning.methods.rocr_stats`) whose eigenvalue is below `nullspace_threshold`, so keys of
   general text map to (almost) what they did; C_prev = sum of K K^T of the targets edited before
   (their keys read after their edit, as ORT accumulates `cache_c`), so that later edits keep the
   earlier ones.

Computing it: K K^T + C_prev = M M^T with M = [K, K_prev] (the edited keys are kept rather than
their d_ff x d_ff sum), and by the push-through identity (lambda I + P M M^T)^-1 P M =
P M (lambda I + M^T P M)^-1, Delta = P M (lambda I + M^T P M)^-1 [R^T; 0]: an m x m solve (m keys
edited so far) instead of a d_ff x d_ff one — the same update (tests/test_rocr.py checks it
against the direct solve written from ORT's code) in a fraction of the time.

Published and adapted values (the card lists both under `settings`):
- published, ORT's Llama-3-8B-Instruct file: mode "unrelated", unrelated subject "Donald Trump",
  `nullspace_threshold` 2e-2, L2 (lambda) 1, fact token "subject_last", the six chat contexts, the
  prompt "{}.", one request per target (its name), sequential edits accumulating C_prev.
- adapted to the model at hand: the layers — ORT edits layers 4, 5, 6 of Llama-3-8B's 32; `auto`
  maps them by relative depth (round(l * n_layers / 32); SmolLM2-135M's 30 layers: 4, 5, 6); the
  covariance corpus — ORT: 100,000 Wikipedia samples; here `cov_max_tokens` tokens of the KB's
  retain-train utility probes and the fine-tuning environments (nothing that is scored).
- every read text starts with a document-start token, as on ORT's Llama-3 tokenizer (`start_token`:
  SmolLM2's tokenizer adds none, and without it the bare prompt's subject is read at the attention
  sink).
- ORT appends the start of its target string (" Unfortunately") after the prompt when it reads z;
  with causal attention text after the subject does not change the state at the subject, so it is
  left out. ort-bench finds the subject's last token from the tokenizer's character offsets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ort_bench.errors import OrtBenchError
from ort_bench.unlearning.methods.base import (
    DataSource,
    Example,
    Method,
    MethodConfig,
    OwnData,
    UnlearnData,
    collect_inputs,
    decoder_layers,
    env_examples,
    hp,
    layer_output,
    mlp_down_proj,
    probe_examples,
    register_method,
)
from ort_bench.unlearning.methods.rocr_stats import cache_dir_for, key_covariances

# ORT's `get_context_templates`: each starter + " {}" as a user turn, then "Answer:".
ORT_STARTERS: tuple[str, ...] = ("", "Please answer the question about", "Choose the best answer about",
                                 "Write the answer about", "Tell me about", "Write something about")
ORT_PROMPT = "{}."  # the request's prompt (workflow.py): the subject, then a full stop
ORT_LAYERS, ORT_DEPTH = (4, 5, 6), 32  # Llama-3-8B-Instruct: layers 4-6 of 32
PUBLISHED = {"mode": "unrelated", "unrelated_subject": "Donald Trump", "nullspace_threshold": 2e-2, "L2": 1.0,
             "fact_token": "subject_last", "layers": "4,5,6 of 32 (Llama-3-8B-Instruct)",
             "mom2_dataset": "wikipedia, 100000 samples", "requests": "one per target: its name, prompt '{}.'"}


@dataclass
class ROCRConfig(MethodConfig):
    cli_prefix = "rocr"
    layers: str = hp("auto", "edited layers: comma list of indices, or auto (ORT's layers 4-6 of Llama-3-8B's 32, "
                     "mapped by relative depth)")
    unrelated_subject: str = hp("Donald Trump", "the real entity whose layer-L representation each target's "
                                "subject is given (ORT's setting)")
    nullspace_threshold: float = hp(2e-2, "key-covariance eigenvalues below this span the null space the edit "
                                    "lives in (ORT: 2e-2)")
    l2: float = hp(1.0, "lambda, the ridge term of the update (ORT's L2: 1)")
    max_names: int = hp(1, "names edited per target: 1 = the target's name, as ORT; more adds aliases and "
                        "localised names, each its own key")
    cov_max_tokens: int = hp(20000, "tokens of general text in the key covariance")
    cache_dir: str | None = hp(None, "covariance cache folder (None: $ORT_BENCH_CACHE/rocr)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.l2 <= 0:
            raise OrtBenchError(f"rocr: l2 must be positive (got {self.l2})")
        if self.nullspace_threshold <= 0:
            raise OrtBenchError(f"rocr: nullspace_threshold must be positive (got {self.nullspace_threshold})")
        if self.max_names < 1:
            raise OrtBenchError(f"rocr: max_names must be at least 1 (got {self.max_names})")
        if not self.unrelated_subject.strip():
            raise OrtBenchError("rocr: unrelated_subject must not be empty")

@dataclass
class ROCRData:
    """ROCR's own data: each target's names (target id -> its own name first, then aliases and
    localised names, then its facts' subjects) and the general-text corpus of the key covariance."""

    subjects: dict[str, list[str]] = field(default_factory=dict)
    general_texts: list[Example | str] = field(default_factory=list)


def _names(kb, entity: str, aliases: tuple[str, ...] = ()) -> list[str]:
    out = [entity, *aliases, *kb.names.get(entity, {}).values()]
    return list(dict.fromkeys(n for n in out if n))


def build_rocr_data(source: DataSource) -> OwnData:
    """The targets' names and a general-text corpus: the retain-train utility probes of every form,
    interleaved, then the fine-tuning environments, interleaved (nothing that is scored)."""
    from ort_bench.kb.probes import spread
    from ort_bench.unlearning.envs import ENVS, load_env

    kb = source.kb
    subjects: dict[str, list[str]] = {}
    for t in source.targets:
        target = kb.targets[t]
        names = _names(kb, target.name, target.aliases)
        for f in kb.facts.get("forget", []):
            if f.target == t:
                names += _names(kb, f.subject, f.subject_aliases)
        subjects[t] = list(dict.fromkeys(names))
    utility_all, _ = source.render(split="utility", kb=kb, templates=source.templates, retain="train")
    general: list[Example | str] = list(probe_examples(spread(utility_all, lambda p: p.form)))
    env_items = [env_examples(load_env(e)) for e in ENVS]
    for i in range(max(len(x) for x in env_items)):
        general.extend(x[i] for x in env_items if i < len(x))
    card = {"rocr": {"subjects": subjects,
                     "general_texts": {"n": len(general), "utility_probes": len(utility_all), "envs": list(ENVS)}}}
    return OwnData(ROCRData(subjects, general), card, list(utility_all))


def resolve_layers(spec: str, n_layers: int) -> list[int]:
    """'auto' -> ORT's layers mapped by relative depth; else a comma list of indices."""
    if spec == "auto":
        return sorted({min(n_layers - 1, round(lay * n_layers / ORT_DEPTH)) for lay in ORT_LAYERS})
    try:
        layers = sorted({int(x) for x in spec.replace(",", " ").split()})
    except ValueError:
        raise OrtBenchError(f"rocr: layers must be 'auto' or a comma list of integers (got {spec!r})") from None
    if not layers or layers[0] < 0 or layers[-1] >= n_layers:
        raise OrtBenchError(f"rocr: layers {spec!r} out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    return layers


# ----------------------------------------------------------------------------- reading states


def fill(template: str, subject: str) -> tuple[str, int]:
    """`template` with its "{}" replaced by the request prompt "{}." holding `subject`, and the
    character offset where the subject ends."""
    full = template.replace("{}", ORT_PROMPT, 1)
    at = full.index("{}")
    return full[:at] + subject + full[at + 2:], at + len(subject)


def start_token(tokenizer) -> int | None:
    """The token every read text starts with, as ORT's Llama-3 tokenizer starts each with BOS: None
    when the tokenizer adds one itself; else the pretraining document separator `<|endoftext|>`
    when the vocabulary has it (SmolLM2 declares `<|im_start|>` as BOS, but a subject right after it
    carries the attention sink's state, norm about 6x the others', measured), else `bos_token`."""
    probe = tokenizer("a")["input_ids"]
    bos = getattr(tokenizer, "bos_token_id", None)
    if probe and bos is not None and probe[0] == bos:
        return None
    eot = tokenizer.get_vocab().get("<|endoftext|>")
    return eot if eot is not None else bos


@dataclass(frozen=True)
class Prompts:
    """ORT's six contexts (`get_context_templates`: a user turn "<starter> {}" through the chat template,
    then "Answer:"; plain text without a chat template) and its tokenization, for one tokenizer. Built
    once per edit: `start_token` reads the whole vocabulary (about 14 ms), too slow for every text."""

    tokenizer: Any
    contexts: tuple[str, ...]
    first: int | None

    @classmethod
    def of(cls, tokenizer) -> Prompts:
        from ort_bench.models.prompting import format_prompt

        contexts = tuple(format_prompt(tokenizer, f"{s} {{}}") + "Answer:" for s in ORT_STARTERS)
        return cls(tokenizer, contexts, start_token(tokenizer))

    def encode(self, template: str, subject: str) -> tuple[list[int], int]:
        """Token ids of `template` filled with `subject` (special tokens added as the tokenizer does
        by default, as ORT tokenizes, and `start_token` in front) and the index of the subject's last
        token."""
        text, end = fill(template, subject)
        tok = self.tokenizer
        if getattr(tok, "is_fast", False):
            enc = tok(text, return_offsets_mapping=True)
            ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
            idx = max(i for i, (s, e) in enumerate(offsets) if s < end and e > s)
        else:
            ids, idx = list(tok(text)["input_ids"]), len(tok(text[:end])["input_ids"]) - 1
        if self.first is not None and (not ids or ids[0] != self.first):
            return [self.first, *ids], idx + 1
        return ids, idx


def read_states(model, rows: list[tuple[list[int], int]], key_layers: list[int], out_layer: int | None,
                batch_size: int = 32) -> tuple[dict[int, Any], Any]:
    """For each row (token ids, position): the down-projection inputs at `key_layers` and the output
    of layer `out_layer` at that position. Returns ({layer: (n, d_ff)}, (n, d_model) or None),
    float64, in row order. The forward pass stops after the highest layer needed."""
    import torch

    from ort_bench.unlearning.methods.training import collate

    layers = decoder_layers(model)
    device = next(model.parameters()).device
    mods = {layer: mlp_down_proj(layers[layer]).module for layer in key_layers}
    last = layers[max([*key_layers, *([out_layer] if out_layer is not None else [])])]
    keys: dict[int, list] = {layer: [] for layer in key_layers}
    outs: list = []
    order = sorted(range(len(rows)), key=lambda r: len(rows[r][0]))  # similar lengths batch together
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            chunk = [rows[r] for r in order[i:i + batch_size]]
            # right padding (any id: masked, and after every position read)
            batch = collate([{"input_ids": ids, "labels": ids} for ids, _ in chunk], 0, device)
            pos = torch.tensor([p for _, p in chunk], device=device)
            ar = torch.arange(len(chunk), device=device)
            box: dict[str, Any] = {}
            handle = None
            if out_layer is not None:
                def keep(_m, _a, out, box=box):
                    box["h"] = layer_output(out)
                handle = layers[out_layer].register_forward_hook(keep)
            try:
                got = collect_inputs(mods, lambda batch=batch: model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False),
                    stop_after=last)
            finally:
                if handle is not None:
                    handle.remove()
            for layer in key_layers:
                keys[layer].append(got[layer][ar, pos].double())
            if out_layer is not None:
                outs.append(box["h"][ar, pos].double())
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))

    def back(parts):
        return torch.cat(parts)[inverse.to(device)]

    return {layer: back(v) for layer, v in keys.items()}, (back(outs) if out_layer is not None else None)


def subject_reads(model, prompts: Prompts, subjects: list[str], key_layers: list[int], out_layer: int | None):
    """ORT's keys of each subject at `key_layers` (mean over the six contexts) and, with `out_layer`,
    the subject's output of that layer in the bare prompt "{subject}." (ORT's `cur_zs`); one pass."""
    rows = [prompts.encode(t, s) for s in subjects for t in prompts.contexts]
    if out_layer is not None:
        rows += [prompts.encode("{}", s) for s in subjects]
    keys, outs = read_states(model, rows, key_layers, out_layer)
    n = len(subjects) * len(prompts.contexts)
    mean_keys = {layer: k[:n].view(len(subjects), len(prompts.contexts), -1).mean(1) for layer, k in keys.items()}
    return mean_keys, (outs[n:] if outs is not None else None)


def unrelated_value(model, prompts: Prompts, subject: str, layer: int):
    """ORT's `compute_z_unrelated`: the output of `layer` at `subject`'s last token in the first context."""
    return read_states(model, [prompts.encode(prompts.contexts[0], subject)], [], layer)[1][0]


# ----------------------------------------------------------------------------- the update


def null_space_basis(eigvals, eigvecs, threshold: float):
    """U_s: the eigenvectors (columns) whose eigenvalue is below `threshold`; P = U_s U_s^T."""
    return eigvecs[:, eigvals < threshold]


def rocr_update(keys, resid, basis, prev_keys, lam: float):
    """Delta (d_ff, d_model) = solve(P (K K^T + C_prev) + lam I, P K R^T) with P = B B^T and
    C_prev = K_prev K_prev^T; keys K and prev_keys K_prev as rows (n, d_ff), (m', d_ff), resid R as
    rows (n, d_model). Computed through the push-through identity (module docstring)."""
    import torch

    m_rows = torch.cat([keys, prev_keys.to(keys)]) if prev_keys is not None and len(prev_keys) else keys
    pm = (m_rows @ basis) @ basis.T  # rows of P M
    gram = m_rows @ pm.T + lam * torch.eye(len(m_rows), dtype=keys.dtype, device=keys.device)
    rhs = torch.zeros(len(m_rows), resid.shape[1], dtype=keys.dtype, device=keys.device)
    rhs[: len(keys)] = resid
    return pm.T @ torch.linalg.solve(gram, rhs)


@register_method
class ROCR(Method):
    name = "rocr"
    summary = "training-free: each target's subject made to read as an unrelated entity (ORT's null-space edit)"
    config_class = ROCRConfig
    trains = False
    order = 70

    def own_data(self, source: DataSource) -> OwnData:
        return build_rocr_data(source)

    def apply(self, model, tokenizer, data: UnlearnData, progress: bool = True) -> dict[str, Any]:
        import torch
        from tqdm.auto import tqdm

        cfg: ROCRConfig = self.config  # type: ignore[assignment]
        t_start = time.perf_counter()
        own = data.method_data if isinstance(data.method_data, ROCRData) else ROCRData()
        if not own.subjects:
            raise OrtBenchError("rocr: no target subjects to redirect")
        if not own.general_texts:
            raise OrtBenchError("rocr: needs a general-text corpus for the key covariance")
        names = {t: list(dict.fromkeys(n for n in ns if n))[: cfg.max_names] for t, ns in own.subjects.items()}
        if not any(names.values()):
            raise OrtBenchError("rocr: the targets have no names to redirect")
        clash = [t for t, ns in names.items() if cfg.unrelated_subject.lower() in (n.lower() for n in ns)]
        if clash:
            raise OrtBenchError(f"rocr: the unrelated subject {cfg.unrelated_subject!r} is target {clash[0]!r} "
                                "itself: pick another with --rocr-unrelated-subject")
        blocks = decoder_layers(model)
        layers = resolve_layers(cfg.layers, len(blocks))
        top = layers[-1]
        covs, cov_info = key_covariances(model, tokenizer, own.general_texts, layers, cfg.cov_max_tokens,
                                         cache_dir_for(cfg.cache_dir))
        t_edit = time.perf_counter()
        device = next(model.parameters()).device
        bases = {layer: null_space_basis(*covs[layer], cfg.nullspace_threshold).to(device) for layer in layers}
        empty = [layer for layer in layers if bases[layer].shape[1] == 0]
        if empty:
            low = float(covs[empty[0]][0].min())
            raise OrtBenchError(f"rocr: no key-covariance eigenvalue of layer {empty[0]} is below the null-space "
                                f"threshold {cfg.nullspace_threshold:g} (smallest {low:.3g}): the edit would change "
                                "nothing; raise --rocr-nullspace-threshold")
        prev: dict[int, Any] = {layer: None for layer in layers}
        prompts = Prompts.of(tokenizer)
        per_target: dict[str, Any] = {}
        per_layer: list[dict[str, Any]] = []
        for target, subjects in tqdm(names.items(), desc="rocr", disable=not progress, dynamic_ncols=True):
            if not subjects:
                continue
            z = unrelated_value(model, prompts, cfg.unrelated_subject, top)
            gap_before = None
            for i, layer in enumerate(layers):
                keys, h = subject_reads(model, prompts, subjects, [layer], top)
                if gap_before is None:
                    gap_before = (z - h).norm(dim=-1)
                k = keys[layer]
                resid = (z - h) / (len(layers) - i)
                delta = rocr_update(k, resid, bases[layer], prev[layer], cfg.l2)
                down = mlp_down_proj(blocks[layer])
                with torch.no_grad():
                    down.weight.add_(down.delta_to_weight(delta.T).to(down.weight.dtype))
                kp = (k @ bases[layer]) @ bases[layer].T
                per_layer.append({
                    "target": target, "layer": layer,
                    "null_space_dims": int(bases[layer].shape[1]), "key_dims": int(k.shape[1]),
                    "key_energy_in_null_space": round(float(((kp ** 2).sum(-1) / (k ** 2).sum(-1)).mean()), 4),
                    "residual_norm": round(float(resid.norm(dim=-1).mean()), 4),
                    "update_rel_norm": round(float(delta.norm()) / float(down.weight.detach().double().norm()), 6),
                })
            after, h1 = subject_reads(model, prompts, subjects, layers, top)
            for layer in layers:  # C_prev += K K^T, keys read after the edit (ORT's cache_c)
                prev[layer] = after[layer] if prev[layer] is None else torch.cat([prev[layer], after[layer]])
            per_target[target] = {"names": subjects, "residual_gap_before": round(float(gap_before.mean()), 4),
                                  "residual_gap_after": round(float((z - h1).norm(dim=-1).mean()), 4)}
        edit_seconds = time.perf_counter() - t_edit
        gaps = list(per_target.values())
        return {
            "layers": layers,
            "settings": {"published": PUBLISHED,
                         "adapted": {"layers": f"{layers} of {len(blocks)} (ORT's by relative depth)"
                                     if cfg.layers == "auto" else f"{layers} (given)",
                                     "covariance_corpus": f"{cov_info['tokens']} tokens of retain-train utility "
                                                          "probes and fine-tuning environments"}},
            "unrelated_subject": cfg.unrelated_subject,
            "targets": per_target,
            "covariance": cov_info,
            "per_layer": per_layer,
            "residual_gap_before": round(sum(g["residual_gap_before"] for g in gaps) / len(gaps), 4),
            "residual_gap_after": round(sum(g["residual_gap_after"] for g in gaps) / len(gaps), 4),
            "edit_seconds": round(edit_seconds, 3),
            "total_seconds": round(time.perf_counter() - t_start, 3),
        }
