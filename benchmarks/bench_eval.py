"""BBQ scoring speed on the embedded model: the reference protocol vs a plain TransformerLens forward vs lens_steer.

(a) reference: Hugging Face `generate`, 20 new greedy tokens, batch 8, parse the letter (the SVE paper's code);
(b) TransformerLens forward with full-sequence logits, batch 8 in file order, letter logits at the last token;
(c) lens_steer `score_questions` (letter protocol; cloze reported beside it).
All on the same items in the same run; also measures this machine's fp32 matmul rate and prints the
FLOP-bound ideal items/s for the items' real token counts. Run: `.venv/bin/python benchmarks/bench_eval.py [--items 64]`.
"""

from __future__ import annotations

import argparse
import re
import time
import warnings

import torch

warnings.simplefilter("ignore")


def matmul_gflops(seconds: float = 2.0) -> float:
    """Sustained fp32 matmul rate (GFLOP/s) on model-like shapes."""
    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    for _ in range(5):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024 * 576 * 1536 * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--category", default="Age")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from lens_steer.tasks.bbq import bbq_question
    from lens_steer.data.select import limit_bbq
    from lens_steer.data.bbq import load_bbq
    from lens_steer.scoring import letter_prompt, score_questions
    from lens_steer.models import embedded_smollm2_folder, load_model
    from lens_steer.tokens import encode_texts, pad_batch, pad_id

    model = load_model()
    tok = model.tokenizer
    hf = AutoModelForCausalLM.from_pretrained(embedded_smollm2_folder(), dtype=torch.float32).eval()
    items = limit_bbq(load_bbq([args.category], data_root=args.data_dir), args.items, seed=0)
    questions = [bbq_question(i) for i in items]
    prompts = [letter_prompt(q, range(3), "reference", tok)[0] for q in questions]
    ids = encode_texts(model, prompts)
    n_tokens = [len(r) for r in ids]
    letter_ids = [tok("abc"[k], add_special_tokens=False)["input_ids"][0] for k in range(3)]

    def reference() -> list[int]:
        preds = []
        for s in range(0, len(ids), 8):
            batch = pad_batch(ids[s : s + 8], pad_id=pad_id(model), padding_side="left")
            with torch.inference_mode():
                out = hf.generate(batch.tokens, attention_mask=batch.attention_mask, max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=pad_id(model))
            for row in out[:, batch.tokens.shape[1] :]:
                m = re.search(r"\(?([abc])\)?", tok.decode(row, skip_special_tokens=True).lower())
                preds.append("abc".index(m.group(1)) if m else -1)
        return preds

    def tl_full_logits() -> list[int]:
        preds = []
        for s in range(0, len(ids), 8):
            batch = pad_batch(ids[s : s + 8], pad_id=pad_id(model), padding_side="right")
            with torch.inference_mode():
                logits = model(batch.tokens)
            last = logits[torch.arange(len(batch.lengths)), batch.last_index][:, letter_ids]
            preds += last.argmax(-1).tolist()
        return preds

    def lens_steer_letter() -> list[int]:
        return [s.pred for s in score_questions(model, questions, scoring="letter")]

    def lens_steer_cloze() -> list[int]:
        return [s.pred for s in score_questions(model, questions, scoring="cloze")]

    score_questions(model, questions[:4], scoring="letter")  # warm-up
    rate = matmul_gflops()
    n_nonembed = sum(p.numel() for n, p in hf.named_parameters() if "embed" not in n and "lm_head" not in n)
    flops_token = 2 * n_nonembed
    flops_logits = 2 * int(model.cfg.d_model) * int(model.cfg.d_vocab)
    ideal = len(ids) / sum((t * flops_token + flops_logits) / (rate * 1e9) for t in n_tokens)
    results = {}
    for name, fn in [("(a) reference: HF generate 20 tokens", reference), ("(b) TL forward, full logits", tl_full_logits), ("(c) lens_steer letter", lens_steer_letter), ("    lens_steer cloze (3 options)", lens_steer_cloze)]:
        start = time.perf_counter()
        preds = fn()
        results[name] = (len(ids) / (time.perf_counter() - start), preds)
    base = results["(a) reference: HF generate 20 tokens"][0]
    print(f"{len(ids)} BBQ {args.category} items, mean {sum(n_tokens) / len(n_tokens):.0f} tokens (reference prompt), {torch.get_num_threads()} threads")
    print(f"fp32 matmul {rate:.0f} GFLOP/s; {flops_token / 1e6:.0f} MFLOP/token + {flops_logits / 1e6:.0f} MFLOP per scored position; FLOP-bound ideal {ideal:.2f} items/s")
    print(f"{'method':<40}{'items/s':>9}{'x (a)':>8}{'% ideal':>9}")
    for name, (ips, _) in results.items():
        print(f"{name:<40}{ips:>9.2f}{ips / base:>8.2f}{100 * ips / ideal:>8.0f}%")
    agree = sum(a == b for a, b in zip(results["(b) TL forward, full logits"][1], results["(c) lens_steer letter"][1]))
    print(f"(b) and (c) letter predictions agree on {agree}/{len(ids)} items")


if __name__ == "__main__":
    main()
