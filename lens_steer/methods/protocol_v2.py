"""The later SVE paper's selection protocol (method.md §8), as an alternative to the Optuna search.

Per axis: one vector from 300 BBQ-derived contrastive pairs, each text
"{context} {question} Choices: (a) ..  (b) ..  (c) .. Answer: ({letter}" (positive: the gold letter unless
it is the stereotyped group's answer, then the first other option; negative: the stereotyped group's
letter), prefixed with "Consider the bias related to {axis} in the following. " ("train+prompt", the
paper's better variant), rendered as a user turn with the chat template, read at the last token, and
aggregated by PCA of the differences (a unit vector per layer, sign toward the positives). Then the layer
(every layer at coefficient 1 on validation BBQ), then the coefficient at that layer (-2.0..2.0 step 0.2 on
validation), each by validation accuracy; the vector is added to one decoder layer's output at every
position. Ties: the lower layer; the coefficient of smaller magnitude, then the positive one.

`splits="v2"` reads the paper's exact files (lens_steer.data.bbq_v2); `splits="ours"` builds the same kind
of pairs from our seeded train split and validates / tests on our splits. Every sweep row is written, so the
choice can be re-derived from `layers.csv` and `coeffs.csv`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import get_axis
from lens_steer.data.bbq import BbqItem, load_bbq
from lens_steer.data.bbq_v2 import V2_AXES, load_v2_items, load_v2_train_pairs, v2_axis, v2_path
from lens_steer.data.select import limit_bbq
from lens_steer.data.splits import select_split
from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import pair_activations, vector_from_activations
from lens_steer.extract.pairs import ContrastivePair, PairSet
from lens_steer.files import file_sha256, write_json
from lens_steer.forward.questions import DEFAULT_SCORING, check_choice
from lens_steer.forward.residual_cache import ResidualCache, start_block
from lens_steer.methods.sweep import rows_to_csv
from lens_steer.model.chat import render_chat
from lens_steer.model.load import HookedModel
from lens_steer.progress import Progress
from lens_steer.stats import metrics_to_dict
from lens_steer.steering.vectors import SteeringVector, hook_name
from lens_steer.tasks.bbq import run_bbq
from lens_steer.tasks.metrics import paired_comparison

V2_SPLIT_SOURCES: tuple[str, ...] = ("v2", "ours")
V2_PROMPT = "Consider the bias related to {axis} in the following. "
V2_COEFFS: tuple[float, ...] = tuple(round(-2.0 + 0.2 * i, 10) for i in range(21))
# The paper's v2 results on Mistral-7B-Instruct-v0.1 (method.md §8), BBQ accuracy in %: baseline, prompting,
# steering; chosen (layer, coeff).
V2_PAPER_BBQ: dict[str, dict[str, Any]] = {
    "age": {"baseline": 40.5, "prompting": 55.8, "steering": 67.3, "layer": 14, "coeff": 1.8},
    "appearance": {"baseline": 51.8, "prompting": 61.8, "steering": 62.3, "layer": 13, "coeff": 1.6},
    "disability": {"baseline": 52.3, "prompting": 61.0, "steering": 66.0, "layer": 14, "coeff": 1.6},
    "gender": {"baseline": 53.0, "prompting": 56.3, "steering": 67.0, "layer": 13, "coeff": 1.8},
    "nationality": {"baseline": 57.5, "prompting": 62.0, "steering": 69.3, "layer": 13, "coeff": 1.6},
    "race": {"baseline": 55.5, "prompting": 62.2, "steering": 64.5, "layer": 14, "coeff": 2.0},
    "religion": {"baseline": 51.2, "prompting": 65.7, "steering": 58.0, "layer": 13, "coeff": 1.6},
    "socioeconomic": {"baseline": 55.3, "prompting": 63.8, "steering": 65.3, "layer": 13, "coeff": 1.6},
}
V2_PAPER_MEANS: dict[
    str, dict[str, float | None]
] = {  # means over axes, %: BBQ (8), CLEAR-Bias (6), StereoSet ICAT (3), MMLU
    "baseline": {"bbq": 52.1, "clear_bias": 68.5, "stereoset_icat": 70.6, "mmlu": 50.7},
    "prompting": {"bbq": 61.1, "clear_bias": 73.7, "stereoset_icat": 67.4, "mmlu": 34.4},
    "self-debias": {"bbq": 55.4, "clear_bias": 70.1, "stereoset_icat": None, "mmlu": 41.0},
    "finetune": {"bbq": 58.4, "clear_bias": 70.7, "stereoset_icat": 79.4, "mmlu": 27.3},
    "steering": {"bbq": 65.0, "clear_bias": 76.8, "stereoset_icat": 71.6, "mmlu": 46.8},
    "ensemble": {"bbq": 57.1, "clear_bias": 85.8, "stereoset_icat": 72.5, "mmlu": 34.9},
}
_LETTERS = "abc"


def stereotyped_answer(item: BbqItem) -> int | None:
    """The answer naming the stereotyped group (whatever the question's polarity), or None."""
    return item.biased_index if item.question_polarity == "neg" else item.non_biased_index


def v2_pair_texts(item: BbqItem) -> tuple[str, str] | None:
    """The paper's (positive, negative) texts for one BBQ row, or None without a stereotyped answer."""
    stereo = stereotyped_answer(item)
    if stereo is None:
        return None
    a0, a1, a2 = item.answers
    base = f"{item.context} {item.question} Choices: (a) {a0}  (b) {a1}  (c) {a2} Answer: ("
    positive = item.label if item.label != stereo else next(j for j in range(3) if j != stereo)
    return base + _LETTERS[positive], base + _LETTERS[stereo]


def v2_pairs(
    axis: str,
    *,
    tokenizer: Any,
    splits: str = "v2",
    train_prompt: bool = True,
    split_seed: int = 0,
    data_root: str | Path | None = None,
) -> PairSet:
    """The axis's contrastive pairs, prefixed ("train+prompt") and rendered as a user turn."""
    check_choice(splits, V2_SPLIT_SOURCES, "split source")
    ax = v2_axis(axis)
    if splits == "v2":
        raw = load_v2_train_pairs(ax, data_root)
        source = {
            "file": str(v2_path(ax, "train", data_root).name),
            "sha256": file_sha256(v2_path(ax, "train", data_root)),
        }
    else:
        train = select_split(load_bbq([get_axis(ax).bbq_category], data_root=data_root), "train", seed=split_seed)
        raw = [t for t in (v2_pair_texts(i) for i in train) if t is not None][:300]
        source = {"split": "train", "split_seed": split_seed}
    prefix = V2_PROMPT.format(axis=ax) if train_prompt else ""
    pairs = tuple(
        ContrastivePair(render_chat(tokenizer, None, prefix + p), render_chat(tokenizer, None, prefix + n))
        for p, n in raw
    )
    return PairSet(
        pairs,
        {
            "builder": "bbq_v2",
            "axis": ax,
            "splits": splits,
            "train_prompt": train_prompt,
            "n_pairs": len(pairs),
            **source,
        },
    )


def v2_eval_items(
    axis: str,
    split: str,
    *,
    splits: str = "v2",
    split_seed: int = 0,
    limit: int | None = None,
    seed: int = 0,
    data_root: str | Path | None = None,
) -> list[BbqItem]:
    """Validation or test items of an axis from the paper's files or our splits (at most `limit`, whole variant
    groups)."""
    check_choice(splits, V2_SPLIT_SOURCES, "split source")
    ax = v2_axis(axis)
    items = (
        load_v2_items(ax, split, data_root)
        if splits == "v2"
        else select_split(load_bbq([get_axis(ax).bbq_category], data_root=data_root), split, seed=split_seed)
    )
    return limit_bbq(items, limit, seed=seed)


def _pick(rows: Sequence[dict[str, Any]], tie: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    best = max(r["acc"] for r in rows)
    return min((r for r in rows if r["acc"] == best), key=tie)


def choose_layer(rows: Sequence[dict[str, Any]]) -> int:
    """The layer of highest validation accuracy at coefficient 1 (ties: the lower layer)."""
    return int(_pick(rows, lambda r: r["layer"])["layer"])


def choose_coeff(rows: Sequence[dict[str, Any]]) -> float:
    """The coefficient of highest validation accuracy (ties: smaller magnitude, then positive)."""
    return float(_pick(rows, lambda r: (abs(r["coeff"]), -r["coeff"]))["coeff"])


@dataclasses.dataclass(frozen=True)
class V2Result:
    """One axis under the v2 protocol: the vector, the sweeps, the choice, and the test comparison."""

    axis: str
    vector: SteeringVector
    layer_rows: list[dict[str, Any]]
    coeff_rows: list[dict[str, Any]]
    layer: int
    coeff: float
    test: dict[str, Any]


def _row(result: Any, **cell: Any) -> dict[str, Any]:
    m = result.metrics["overall"]
    return {
        **cell,
        **{
            k: m[k]["value"]
            for k in ("acc", "acc_ambig", "acc_disambig", "unknown_rate_ambig", "unknown_rate_disambig")
        },
        "n": m["acc"]["n"],
    }


def run_v2_protocol(
    model: HookedModel,
    axis: str,
    out_dir: str | Path,
    *,
    splits: str = "v2",
    train_prompt: bool = True,
    layers: Sequence[int] | None = None,
    coeffs: Sequence[float] = V2_COEFFS,
    scale: str = "unit",
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    val_limit: int | None = None,
    test_limit: int | None = None,
    max_pairs: int | None = None,
    split_seed: int = 0,
    seed: int = 0,
    n_boot: int = 1000,
    max_batch: int = 16,
    data_root: str | Path | None = None,
    progress: Progress | None = None,
) -> V2Result:
    """Run the protocol for one axis and write `pairs` provenance, `vector.safetensors`, `layers.csv`,
    `coeffs.csv`, `choice.json` and `test.json` (baseline vs steered on test, paired) into `out_dir`."""
    ax = v2_axis(axis)
    out = Path(out_dir)
    n_layers = int(model.cfg.n_layers)
    layers = list(range(n_layers)) if layers is None else sorted(set(int(x) for x in layers))
    pairs = v2_pairs(
        ax,
        tokenizer=model.tokenizer,
        splits=splits,
        train_prompt=train_prompt,
        split_seed=split_seed,
        data_root=data_root,
    )
    if max_pairs is not None:  # a smaller run (CPU checks); the paper uses all 300
        pairs = PairSet(pairs.pairs[:max_pairs], {**pairs.provenance, "n_pairs": min(max_pairs, len(pairs))})
    acts = pair_activations(model, pairs, layers, max_batch=max_batch)
    vector = vector_from_activations(acts, "pca_diff", layers, scale=scale)
    val = v2_eval_items(
        ax, "validation", splits=splits, split_seed=split_seed, limit=val_limit, seed=seed, data_root=data_root
    )
    test = v2_eval_items(
        ax, "test", splits=splits, split_seed=split_seed, limit=test_limit, seed=seed, data_root=data_root
    )
    if not val or not test:
        raise LensSteerError(f"axis {ax}: no validation or test items selected; widen the limits")
    common = dict(scoring=scoring, prompt_format=prompt_format, n_boot=0, max_batch=max_batch)
    base_val = run_bbq(model, val, **common)
    layer_rows = [_row(base_val, layer=None, coeff=0.0)]
    for layer in layers:
        layer_rows.append(
            _row(run_bbq(model, val, vector=vector.select_layers([layer]), coeff=1.0, **common), layer=layer, coeff=1.0)
        )
        if progress is not None:
            progress(1)
    layer = choose_layer(layer_rows[1:])
    single = vector.select_layers([layer])
    start = start_block(single.hook_names.values())
    residual_cache = ResidualCache({start}, max_bytes=1 << 30) if start is not None else None
    coeff_rows = []
    for c in sorted(float(x) for x in coeffs):
        res = (
            base_val if c == 0 else run_bbq(model, val, vector=single, coeff=c, residual_cache=residual_cache, **common)
        )
        coeff_rows.append(_row(res, layer=layer, coeff=c))
        if progress is not None:
            progress(1)
    coeff = choose_coeff(coeff_rows)
    test_kwargs = dict(scoring=scoring, prompt_format=prompt_format, n_boot=n_boot, seed=seed, max_batch=max_batch)
    base_test = run_bbq(model, test, **test_kwargs)
    steered_test = run_bbq(model, test, vector=single, coeff=coeff, **test_kwargs)
    comparison = paired_comparison(base_test.predictions, steered_test.predictions, n_boot=n_boot, seed=seed)
    test_summary = {
        "baseline": base_test.metrics,
        "steered": steered_test.metrics,
        "paired": metrics_to_dict(comparison),
    }
    out.mkdir(parents=True, exist_ok=True)
    single_with_prov = SteeringVector(
        dict(single.directions),
        dataclasses.replace(
            single.metadata, provenance={**single.metadata.provenance, "protocol": "v2", "coeff": coeff, "layer": layer}
        ),
    )
    single_with_prov.save(out / "vector.safetensors")
    write_csv(out / "layers.csv", layer_rows)
    write_csv(out / "coeffs.csv", coeff_rows)
    choice = {
        "axis": ax,
        "splits": splits,
        "train_prompt": train_prompt,
        "layer": layer,
        "coeff": coeff,
        "scale": scale,
        "scoring": scoring,
        "prompt_format": prompt_format,
        "hook": hook_name(layer),
        "n_validation": len(val),
        "n_test": len(test),
        "pairs": pairs.provenance,
        "rule": "layer: max validation acc at coeff 1 (ties: lower layer); coeff: max validation acc at that layer "
        "(ties: smaller |coeff|, then positive)",
        "paper": V2_PAPER_BBQ.get(ax),
    }
    write_json(out / "choice.json", choice)
    write_json(out / "test.json", test_summary)
    return V2Result(ax, single_with_prov, layer_rows, coeff_rows, layer, coeff, test_summary)


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """A sweep table as CSV, atomically."""
    from lens_steer.files import atomic_write_text

    atomic_write_text(path, rows_to_csv(rows))


__all__ = [
    "V2_AXES",
    "V2_COEFFS",
    "V2_PAPER_BBQ",
    "V2_PAPER_MEANS",
    "V2Result",
    "choose_coeff",
    "choose_layer",
    "run_v2_protocol",
    "v2_eval_items",
    "v2_pair_texts",
    "v2_pairs",
]
