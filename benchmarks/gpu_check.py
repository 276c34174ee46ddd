"""The GPU check: lens_steer on `--device cuda` (called by benchmarks/gpu_check.sh, which sets up imports).

1. correctness: each family's tiny random checkpoint (tests/_arch_checkpoints.py) loaded by path on the CPU
   in float32 and on the device in float32 and bfloat16: logits, steered logits, shared-prompt cloze
   scores, running from stored residuals, greedy generation with and without KV cache, extracted vectors; the device
   must agree with the CPU within each dtype's tolerance, and `lens-steer info --device cuda` must run.
2. speed at the paper's size: a randomly initialised Llama-3.1-8B-shaped model (32 layers, d_model 4096,
   GQA 32/8 heads, MLP 14336, vocab 128,256) built on the device in bfloat16 (numerics do not matter for
   speed), a word-level tokenizer of the same vocabulary, synthetic BBQ-format items of real BBQ length:
   cloze items/s unsteered, steered, steered with stored residuals reused, letter items/s, ISV search trials
   (`IsvObjective`: 100 persona pairs read at the trial's layers, 32 validation items scored), peak memory.

`--dry-run` runs every step on the CPU with a small model (d_model 256, 4 layers) and few items, to check the
logic where no GPU is. Results go to `--out` (JSON, rewritten after every step, so a timeout keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the tiny-checkpoint builder

from _arch_checkpoints import FAMILIES, write_checkpoint  # noqa: E402

from lens_steer.data.bbq import BbqItem  # noqa: E402
from lens_steer.extract.activations import extract_vector  # noqa: E402
from lens_steer.extract.pairs import ContrastivePair, PairSet  # noqa: E402
from lens_steer.files import write_json  # noqa: E402
from lens_steer.forward.engine import final_residual  # noqa: E402
from lens_steer.forward.questions import Question  # noqa: E402
from lens_steer.forward.residual_cache import ResidualCache, capture_hooks, run_blocks  # noqa: E402
from lens_steer.forward.scoring import score_questions, score_steered  # noqa: E402
from lens_steer.model.chat import render_chat  # noqa: E402
from lens_steer.model.load import load_model, model_identity, wrap_hf_model  # noqa: E402
from lens_steer.model.tokens import encode_texts  # noqa: E402
from lens_steer.steering.hooks import steer  # noqa: E402
from lens_steer.steering.vectors import SteeringVector, VectorMetadata  # noqa: E402

LLAMA_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}
SMALL = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 8192,
}
CHAT = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
TOL = {"float32": {"logprob": 1e-3, "cos": 0.9999}, "bfloat16": {"logprob": 0.25, "cos": 0.98}}


# ---- helpers ----------------------------------------------------------------------------------
def random_vector(model: Any, layers: list[int], seed: int, scale: float) -> SteeringVector:
    ident = model_identity(model)
    g = torch.Generator().manual_seed(seed)
    meta = VectorMetadata(
        model_name=ident.name, d_model=ident.d_model, hook="hook_resid_post", processing=ident.processing
    )
    return SteeringVector({layer: torch.randn(ident.d_model, generator=g) * scale for layer in layers}, meta)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    synchronize(device)
    t = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - t, out


def peak_gib(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None


def logprobs(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(tokens.to(next(model.parameters()).device)).float(), -1).cpu()


# ---- 1. correctness on the tiny families -------------------------------------------------------
QUESTIONS = [
    Question(
        "Two friends met at the station after a long day at work.",
        "Who was late?",
        ("The first friend", "The second", "Unknown"),
    ),
    Question("", "What is two plus two?", ("3", "4", "5")),
    Question(
        "A cat and a dog played in the yard all afternoon.", "Who won?", ("the cat", "the dog", "Can't be determined")
    ),
]
PAIRS = [
    ("Answer kindly.", "Answer rudely."),
    ("Answer warmly.", "Answer coldly."),
    ("Answer calmly.", "Answer angrily."),
    ("Answer gently.", "Answer harshly."),
    ("Be brief.", "Be endless."),
]


def family_report(folder: Path, device: str) -> dict[str, Any]:
    """Device (float32, bfloat16) against CPU float32 on one tiny checkpoint."""
    ref = load_model(str(folder))
    text = "The old lighthouse keeper said that the storm would pass before the morning tide came in."
    tokens = torch.tensor([encode_texts(ref, [text])[0]])
    vec = random_vector(ref, [1, 2], seed=1, scale=3.0)
    tok = ref.tokenizer
    pairs = PairSet(
        tuple(
            ContrastivePair(
                render_chat(tok, "You are a careful assistant.", f"Say something. {p}"),
                render_chat(tok, "You are a careful assistant.", f"Say something. {n}"),
            )
            for p, n in PAIRS
        ),
        {"builder": "gpu_check"},
    )
    want = {"logits": logprobs(ref, tokens)}
    with steer(ref, [(vec, 2.0)]):
        want["steered"] = logprobs(ref, tokens)
        want["cloze"] = score_questions(ref, QUESTIONS, scoring="cloze")
    want["vector"] = extract_vector(ref, pairs, [2], method="pca_diff").directions[2]
    out: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        model = load_model(str(folder), device=device, dtype=dtype)
        tol = TOL[dtype]
        row: dict[str, Any] = {
            "param_device": str(next(model.parameters()).device),
            "param_dtype": str(next(model.parameters()).dtype),
        }
        row["logprob_max_diff"] = float((logprobs(model, tokens) - want["logits"]).abs().max())
        with steer(model, [(vec, 2.0)]):
            row["steered_logprob_max_diff"] = float((logprobs(model, tokens) - want["steered"]).abs().max())
            got = score_questions(model, QUESTIONS, scoring="cloze")
            cache = ResidualCache([2])
        row["cloze_loglik_max_diff"] = max(
            abs(a - b) for g, w in zip(got, want["cloze"]) for a, b in zip(g.option_logliks, w.option_logliks)
        )
        row["cloze_preds_equal"] = [g.pred for g in got] == [w.pred for w in want["cloze"]]
        first = score_steered(model, QUESTIONS, vector=vec, coeff=2.0, residual_cache=cache, scoring="cloze")
        second = score_steered(model, QUESTIONS, vector=vec, coeff=2.0, residual_cache=cache, scoring="cloze")
        row["residual_reuse_max_diff"] = max(
            abs(a - b) for f, s in zip(first, second) for a, b in zip(f.option_logliks, s.option_logliks)
        )
        row["residual_cache_hits"] = cache.hits
        dev_tokens = tokens.to(next(model.parameters()).device)
        with torch.inference_mode(), steer(model, [(vec, 1.5)]):
            box: dict[int, torch.Tensor] = {}
            full = final_residual(model, dev_tokens, {}, capture_hooks([2], box))
            row["run_blocks_max_diff"] = float((run_blocks(model, box[2], 2) - full).abs().max())
            gen = [
                model.generate(
                    dev_tokens[:, :12],
                    max_new_tokens=6,
                    do_sample=False,
                    use_past_kv_cache=kv,
                    verbose=False,
                    stop_at_eos=False,
                )
                for kv in (True, False)
            ]
        row["generate_kv_equal"] = bool(torch.equal(gen[0], gen[1]))
        got_vec = extract_vector(model, pairs, [2], method="pca_diff").directions[2]
        row["vector_dtype"] = str(got_vec.dtype)
        row["vector_cos"] = float(torch.nn.functional.cosine_similarity(got_vec, want["vector"], dim=0))
        row["ok"] = bool(
            row["logprob_max_diff"] < tol["logprob"]
            and row["steered_logprob_max_diff"] < tol["logprob"]
            and row["cloze_loglik_max_diff"] < tol["logprob"] * 8
            and (row["cloze_preds_equal"] or dtype != "float32")
            and row["residual_reuse_max_diff"] < tol["logprob"] * 8
            and row["generate_kv_equal"]
            and row["vector_cos"] > tol["cos"]
            and row["vector_dtype"] == "torch.float32"
        )
        out[dtype] = row
        del model
    return out


def correctness(device: str, results: dict[str, Any], save: Callable[[], None]) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_families_"))
    for name, fam in FAMILIES.items():
        try:
            results["correctness"][name] = family_report(write_checkpoint(fam, tmp / name), device)
        except Exception as e:  # record and go on: one family's failure must not hide the others
            results["correctness"][name] = {
                "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                "trace": traceback.format_exc()[-1500:],
            }
        save()
    folder = tmp / "llama"
    entry = "import sys; from lens_steer.cli import main; sys.exit(main(sys.argv[1:]))"
    cli = subprocess.run(
        [sys.executable, "-c", entry, "info", "--model", str(folder), "--device", device, "--dtype", "bfloat16"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    results["cli_info"] = {"rc": cli.returncode, "stdout": cli.stdout[-600:], "stderr": cli.stderr[-600:]}
    save()


# ---- 2. speed at the paper's size -------------------------------------------------------------
def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer with `vocab_size` ids: one token a word, so token counts are controlled."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lens_steer.extract.pairs import PERSONA_PAIRS, SYSTEM_TEMPLATES
    from lens_steer.forward.questions import REFERENCE_INSTRUCTION

    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<pad>", "<unk>"]
    text = " ".join(
        [
            REFERENCE_INSTRUCTION,
            *SYSTEM_TEMPLATES,
            *(w for pair in PERSONA_PAIRS for w in pair),
            "user assistant system ( ) a b c",
        ]
    )
    known = sorted(
        {w for w in pre_tokenizers.Whitespace().pre_tokenize_str(text) for w in [w[0]]}
    )  # persona pairs must differ in ids
    vocab = {tok: i for i, tok in enumerate(specials + known)}
    vocab.update({f"w{i}": len(vocab) + i for i in range(vocab_size - len(vocab))})
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<pad>",
        unk_token="<unk>",
        name_or_path="word-level",
        add_bos_token=True,
    )
    tok.add_special_tokens({"additional_special_tokens": specials[:4]})
    tok.chat_template = CHAT
    return tok


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


def synthetic_bbq(n: int, seed: int = 0) -> list[BbqItem]:
    """BBQ-shaped items: contexts of 40-110 words and 8-14-word questions (real BBQ prompts run 80-200 tokens)."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        ambig = i % 2 == 0
        items.append(
            BbqItem(
                example_id=i,
                question_index=str(i // 4),
                question_polarity="neg" if i % 4 < 2 else "nonneg",
                context_condition="ambig" if ambig else "disambig",
                category="Age",
                context=words(rng, rng.randint(40, 110)),
                question=words(rng, rng.randint(8, 14)),
                answers=(words(rng, 2), words(rng, 3), "w1 w2 w3"),
                label=2 if ambig else rng.randrange(2),
                answer_groups=("old", "nonOld", "unknown"),
                answer_info_texts=("old", "young", "unknown"),
                stereotyped_groups=("old",),
                subcategory="",
                source="synthetic",
            )
        )
    return items


def build_random_llama(shape: dict[str, int], device: str, dtype: torch.dtype) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **shape,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=4,
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def speed(device: str, shape: dict[str, int], n_items: int, results: dict[str, Any], save: Callable[[], None]) -> None:
    from lens_steer.axes import get_axis
    from lens_steer.extract.activation_cache import ActivationCache
    from lens_steer.methods.search.objective import IsvObjective
    from lens_steer.methods.search.space import SearchConfig, SearchSpace, layer_label
    from lens_steer.tasks.bbq import bbq_question

    row: dict[str, Any] = results["speed"]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds, hf = timed(device, lambda: build_random_llama(shape, device, torch.bfloat16))
    row["build_s"] = round(seconds, 2)
    row["n_params_b"] = round(sum(p.numel() for p in hf.parameters()) / 1e9, 3)
    tok = word_tokenizer(shape["vocab_size"])
    seconds, model = timed(device, lambda: wrap_hf_model(hf, tok, name="random-llama-3.1-8b-shape", device=device))
    row["wrap_s"] = round(seconds, 2)
    row["peak_gib_after_load"] = peak_gib(device)
    save()
    items = synthetic_bbq(n_items)
    questions = [bbq_question(it) for it in items]
    lengths = [len(encode_texts(model, [render_chat(tok, None, f"{q.context} {q.question}")])[0]) for q in questions]
    row["n_items"], row["mean_prompt_tokens"] = len(questions), round(sum(lengths) / len(lengths), 1)
    mid = shape["num_hidden_layers"] // 2
    vec = random_vector(model, [mid], seed=2, scale=1.0)
    score_questions(model, questions[:4], scoring="cloze")  # warm-up (kernels, allocator)
    for name, fn in [
        ("cloze_unsteered", lambda: score_questions(model, questions, scoring="cloze")),
        ("cloze_steered", lambda: score_steered(model, questions, vector=vec, coeff=4.0, scoring="cloze")),
        ("letter_unsteered", lambda: score_questions(model, questions, scoring="letter")),
    ]:
        seconds, _ = timed(device, fn)
        row[f"{name}_items_per_s"] = round(len(questions) / seconds, 2)
        save()
    cache = ResidualCache([mid])
    seconds, _ = timed(
        device, lambda: score_steered(model, questions, vector=vec, coeff=4.0, residual_cache=cache, scoring="cloze")
    )
    row["cloze_steered_residuals_stored_items_per_s"] = round(len(questions) / seconds, 2)
    seconds, _ = timed(
        device,
        lambda: score_steered(model, questions, vector=vec * 0.5, coeff=4.0, residual_cache=cache, scoring="cloze"),
    )
    row["cloze_steered_residuals_reused_items_per_s"] = round(len(questions) / seconds, 2)
    row["peak_gib_after_scoring"] = peak_gib(device)
    save()
    # ISV search trials: the real objective on synthetic persona prompts and validation items
    data = Path(tempfile.mkdtemp(prefix="gpu_check_data_"))
    (data / "prompt_corpora").mkdir()
    rng = random.Random(1)
    (data / "prompt_corpora" / "age.json").write_text(json.dumps([words(rng, rng.randint(8, 30)) for _ in range(120)]))
    layers = (mid,), (mid - max(1, shape["num_hidden_layers"] // 8), mid)
    space = SearchSpace(
        corpora=("age",),
        num_sents=(100, 100, 50),
        personas=(0, 1),
        templates=(0,),
        coeff=(-2.0, 2.0, 0.5),
        layers=layers,
        methods=("pca_diff",),
    )
    cfg = SearchConfig(space=space, n_trials=3, limit=None, chunk_size=32, scoring="cloze")
    acts = ActivationCache(model, sorted({x for band in layers for x in band}), data_root=data)
    objective = IsvObjective(model, get_axis("age"), cfg, items=items[:32], cache=acts, data_root=data)
    trials = []
    for persona, coeff, band in [(0, 1.0, layers[0]), (1, -1.0, layers[1]), (0, 2.0, layers[0])]:
        params = {
            "corpus": "age",
            "num_sents": 100,
            "persona": persona,
            "template": 0,
            "coeff": coeff,
            "layers": layer_label(band),
            "method": "pca_diff",
        }
        seconds, value = timed(device, lambda params=params: objective(params))
        trials.append({"persona": persona, "layers": layer_label(band), "seconds": round(seconds, 2), "value": value})
        row["search_trials"] = trials
        save()
    row["search_trial_cold_s"] = trials[0]["seconds"]  # reads 100 pairs, first scoring of the items
    row["search_trial_warm_s"] = trials[2]["seconds"]  # same pairs again, the items' stored residuals reused
    row["peak_gib"] = peak_gib(device)
    save()


# ---- main -------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU, small model, few items: check the logic where no GPU is"
    )
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "runs/gpu_check"), "gpu_check.json"))
    parser.add_argument(
        "--items", type=int, default=None, help="BBQ-format items for the speed runs (default 128; 16 with --dry-run)"
    )
    parser.add_argument("--skip", default="", help="comma-separated steps to skip: correctness, speed")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = "cpu" if args.dry_run else "cuda"
    import importlib.metadata

    import transformer_lens  # noqa: F401
    import transformers

    results: dict[str, Any] = {
        "dry_run": args.dry_run,
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": importlib.metadata.version("transformer-lens"),
        "cuda_available": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "heavy_modules_imported": sorted(
            m + (" (import-time stand-in)" if "stand-in" in (sys.modules[m].__doc__ or "") else "")
            for m in ("optuna", "plotly", "datasets", "pandas", "gguf")
            if m in sys.modules
        ),
        "correctness": {},
        "speed": {},
        "errors": {},
    }
    save = lambda: write_json(args.out, results)  # noqa: E731
    save()
    if device == "cuda" and not torch.cuda.is_available():
        results["errors"]["setup"] = "no CUDA device visible; run with --dry-run on a CPU"
        save()
        print(json.dumps(results["errors"]), file=sys.stderr)
        return 1
    skip = set(filter(None, args.skip.split(",")))
    steps: list[tuple[str, Callable[[], None]]] = [
        ("correctness", lambda: correctness(device, results, save)),
        (
            "speed",
            lambda: speed(
                device, SMALL if args.dry_run else LLAMA_8B, args.items or (16 if args.dry_run else 128), results, save
            ),
        ),
    ]
    for name, fn in steps:
        if name in skip:
            continue
        t = time.perf_counter()
        try:
            fn()
        except Exception as e:
            results["errors"][name] = (
                f"{type(e).__name__}: "
                f"{str(e).splitlines()[0][:300] if str(e) else ''}\n{traceback.format_exc()[-2000:]}"
            )
        results[f"{name}_seconds"] = round(time.perf_counter() - t, 1)
        save()
    if results["correctness"]:
        families_ok = all(
            all(r.get(d, {}).get("ok") for d in ("float32", "bfloat16")) for r in results["correctness"].values()
        )
        results["all_families_ok"] = families_ok and results.get("cli_info", {}).get("rc") == 0
    else:
        results["all_families_ok"] = None
    save()
    print(
        json.dumps(
            {k: results[k] for k in ("device", "gpu", "all_families_ok", "speed", "errors") if k in results},
            indent=1,
            default=str,
        )
    )
    return 0 if not results["errors"] and results["all_families_ok"] in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
