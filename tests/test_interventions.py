"""Tests for lens_steer.steering.interventions and lens_steer.extract.fit: each kind's edit against its formula
worked in numpy, under steer() against plain TransformerLens hooks written here, exact under the prefix tree and
the KV cache, its random control of its own kind, digests, files and store keys."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from _one_line import assert_one_line_error
from _tiny_models import make_tiny, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.errors import LensSteerError, VectorError
from lens_steer.extract.activations import PairActivations
from lens_steer.extract.fit import fit_ablation, fit_ace, fit_gated, fit_leace, fit_probe
from lens_steer.forward.engine import final_residual
from lens_steer.forward.questions import Question
from lens_steer.forward.scoring import score_questions
from lens_steer.model.load import model_identity
from lens_steer.steering.hooks import steer
from lens_steer.steering.interventions import (
    KINDS,
    Additive,
    AffineEdit,
    DirectionalAblation,
    GatedAdditive,
    Intervention,
    LeaceErasure,
    ModelDiffEdit,
    OptimizedVector,
    intervention_of,
    load_intervention,
)
from lens_steer.steering.vectors import SteeringVector, VectorMetadata
from lens_steer.tasks.store import steering_spec

D = 16


def meta(d: int = D, name: str = "m") -> VectorMetadata:
    return VectorMetadata(model_name=name, d_model=d)


def rand(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def examples(d: int = D, name: str = "m", layers: tuple[int, ...] = (0, 1)) -> list[Intervention]:
    """One intervention of every kind at `layers`."""
    m = meta(d, name)
    vec = SteeringVector({la: rand(10 + la, d) for la in layers}, m)
    q = {la: torch.linalg.qr(rand(20 + la, d, 2))[0] for la in layers}
    return [
        Additive.of(vec, 1.5),
        OptimizedVector(m, vec, 0.5),
        DirectionalAblation(m, {la: rand(30 + la, d) for la in layers}),
        AffineEdit(m, {la: rand(40 + la, d) for la in layers}, {la: rand(50 + la, d) for la in layers}),
        ModelDiffEdit(m, {la: rand(60 + la, d) for la in layers}, {la: rand(70 + la, d) for la in layers}),
        LeaceErasure(m, q, {la: q[la].T.contiguous() for la in layers}, {la: rand(80 + la, d) for la in layers}),
        GatedAdditive(m, vec, 2.0, {la: rand(90 + la, d) for la in layers}, {la: 0.1 * la for la in layers}),
    ]


def numpy_edit(iv: Intervention, layer: int, x: np.ndarray) -> np.ndarray:
    """Each kind's formula, written again in numpy."""
    t = {k: v.double().numpy() for k, v in iv.tensors().items()}
    if iv.kind in ("additive", "optimized"):
        return x + iv.coeff * t[f"{layer}.vector"]  # type: ignore[attr-defined]
    if iv.kind == "gated":
        fire = (x @ t[f"{layer}.probe_weight"] + iv.probe_bias[layer]) > 0  # type: ignore[attr-defined]
        return x + fire[..., None] * iv.coeff * t[f"{layer}.vector"]  # type: ignore[attr-defined]
    if iv.kind == "leace":
        left, right, b = t[f"{layer}.proj_left"], t[f"{layer}.proj_right"], t[f"{layer}.bias"]
        return x - (x - b) @ right.T @ left.T
    u = t[f"{layer}.direction"] / np.linalg.norm(t[f"{layer}.direction"])
    if iv.kind == "ablation":
        return x - (x @ u)[..., None] * u
    return x - (x @ u)[..., None] * u + (t[f"{layer}.reference"] @ u) * u  # ace, model_diff


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_edits_as_its_formula(kind: str) -> None:
    iv = next(i for i in examples() if i.kind == kind)
    x = rand(1, 5, D)
    for layer in iv.layers:
        got = iv.edit(layer, x).double().numpy()
        np.testing.assert_allclose(got, numpy_edit(iv, layer, x.double().numpy()), atol=1e-5)


def test_projections_do_what_they_promise() -> None:
    x = rand(2, 7, D)
    abl = examples()[2]
    u = abl.directions[0]  # type: ignore[attr-defined]
    assert float((abl.edit(0, x) @ u).abs().max()) < 1e-5  # nothing left along u
    ace = examples()[3]
    u, ref = ace.directions[1], ace.reference[1]  # type: ignore[attr-defined]
    np.testing.assert_allclose((ace.edit(1, x) @ u).numpy(), float(ref @ u) * np.ones(7), atol=1e-5)


def test_leace_erasure_equals_the_concept_erasure_package_and_erases_the_label() -> None:
    from concept_erasure import LeaceEraser

    pos, neg = rand(3, 40, D) + 2 * rand(4, D), rand(5, 40, D)
    acts = PairActivations({3: pos}, {3: neg}, "hook_resid_post", "m", D, {}, {})
    iv = fit_leace(acts)
    x = torch.cat([pos, neg])
    theirs = LeaceEraser.fit(x.double(), torch.cat([torch.zeros(40), torch.ones(40)]).double()[:, None])(x.double())
    np.testing.assert_allclose(iv.edit(3, x).double().numpy(), theirs.numpy(), atol=1e-4)
    erased = iv.edit(3, x)
    assert float((erased[:40].mean(0) - erased[40:].mean(0)).norm()) < 1e-4  # class means equal: no linear signal


def test_fitted_directions_are_the_mean_difference() -> None:
    pos, neg = rand(6, 30, D), rand(7, 30, D)
    acts = PairActivations({2: pos}, {2: neg}, "hook_resid_post", "m", D, {}, {"builder": "x"})
    diff = (pos - neg).mean(0)
    u = diff / diff.norm()
    torch.testing.assert_close(fit_ablation(acts).directions[2], u)
    ace = fit_ace(acts)
    torch.testing.assert_close(ace.directions[2], u)
    torch.testing.assert_close(ace.reference[2], pos.mean(0))
    assert ace.metadata.provenance == {"builder": "x"}


def test_probe_separates_separable_labels_and_gates_where_it_fires() -> None:
    x = rand(8, 60, D)
    w_true = rand(9, D)
    y = [int(v > 0) for v in (x @ w_true).tolist()]
    w, b = fit_probe(x, y)
    pred = ((x @ w + b) > 0).int().tolist()
    assert sum(p == t for p, t in zip(pred, y)) >= 58  # separable: (almost) every label recovered
    vec = SteeringVector({1: rand(11, D)}, meta())
    gated = fit_gated(vec, 3.0, {1: x}, y)
    out = gated.edit(1, x)
    fired = torch.tensor(pred, dtype=torch.bool)
    torch.testing.assert_close(out[fired], x[fired] + 3.0 * vec.directions[1])
    torch.testing.assert_close(out[~fired], x[~fired])
    assert_one_line_error(lambda: fit_probe(x, [1] * 60), "one class", error=LensSteerError)


@pytest.mark.parametrize("kind", list(KINDS))
def test_random_control_is_the_same_kind_and_size_with_other_directions(kind: str) -> None:
    iv = next(i for i in examples() if i.kind == kind)
    c1, c1b, c2 = iv.random_control(1), iv.random_control(1), iv.random_control(2)
    assert type(c1) is type(iv) and c1.layers == iv.layers
    assert c1.digest() == c1b.digest() != c2.digest() != iv.digest()
    x = rand(12, 4, D)
    for layer in iv.layers:
        change, ctrl_change = iv.edit(layer, x) - x, c1.edit(layer, x) - x
        if iv.kind in ("additive", "optimized", "gated"):
            v, cv = iv.vector.directions[layer], c1.vector.directions[layer]  # type: ignore[attr-defined]
            assert float(cv.norm()) == pytest.approx(float(v.norm()), rel=1e-5)
            assert abs(float(torch.nn.functional.cosine_similarity(v, cv, dim=0))) < 0.9
        if iv.kind == "leace":
            assert c1.rank == iv.rank  # type: ignore[attr-defined]
        assert not torch.allclose(change, ctrl_change)
    if iv.kind == "gated":
        assert c1.probe_bias == iv.probe_bias  # the same gate: the same positions edited  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_and_load_give_the_same_intervention(kind: str, tmp_path: Any) -> None:
    iv = next(i for i in examples() if i.kind == kind)
    back = load_intervention(iv.save(tmp_path / f"{kind}.safetensors"))
    assert type(back) is type(iv) and back.digest() == iv.digest() and back.describe() == iv.describe()
    x = rand(13, 3, D)
    torch.testing.assert_close(back.edit(1, x), iv.edit(1, x))


def test_bad_files_and_values_give_one_line_errors(tmp_path: Any) -> None:
    vec = SteeringVector({0: rand(1, D)}, meta())
    assert_one_line_error(lambda: load_intervention(tmp_path / "none.safetensors"), "does not exist", error=VectorError)
    path = vec.save(tmp_path / "v.safetensors")
    assert_one_line_error(lambda: load_intervention(path), "load_vector", error=VectorError)
    assert_one_line_error(lambda: DirectionalAblation(meta(), {0: torch.zeros(D)}), "no direction", error=VectorError)
    assert_one_line_error(lambda: Additive.of(vec, float("nan")), "finite", error=VectorError)
    assert_one_line_error(lambda: intervention_of(vec, 1.0, examples()[2]), "not both", error=VectorError)
    assert intervention_of(vec, 0.0, None) is None and intervention_of(None, 1.0, None) is None


def test_digests_and_store_keys_tell_kinds_apart() -> None:
    ivs = examples()
    assert len({i.digest() for i in ivs}) == len(ivs)
    specs = [steering_spec(i, 0.0) for i in ivs]
    assert len({str(s) for s in specs}) == len(ivs)  # an ablation never reads back an additive result
    add = ivs[0]
    assert steering_spec(add, 0.0) == steering_spec(add.vector, add.coeff)  # type: ignore[attr-defined]


def test_repr_is_short() -> None:
    for iv in examples(d=576):
        text = repr(iv)
        assert len(text) < 200 and iv.kind != "" and type(iv).__name__ in text


# ---- on a model: steer() against plain hooks, exact under the prefix tree and the KV cache ----------------
@pytest.fixture(scope="module")
def model() -> Any:
    return make_tiny("bridge")


def model_examples(model: Any) -> list[Intervention]:
    ident = model_identity(model)
    out = []
    for iv in examples(ident.d_model, ident.name, layers=(0, 1)):
        m = VectorMetadata(model_name=ident.name, d_model=ident.d_model, processing=ident.processing)
        extra = {"vector": SteeringVector(dict(iv.vector.directions), m)} if isinstance(iv, Additive) else {}
        out.append(dataclasses.replace(iv, metadata=m, **extra))
    return out


def hooked_logits(model: Any, ids: torch.Tensor, iv: Intervention | None) -> torch.Tensor:
    """Logits under plain TransformerLens hooks that apply the numpy formula (no lens_steer hook code)."""

    def make(layer: int) -> Any:
        def fn(t: torch.Tensor, *, hook: Any) -> torch.Tensor:
            return torch.from_numpy(numpy_edit(iv, layer, t.double().numpy())).to(t.dtype)  # type: ignore[arg-type]

        return fn

    hooks = [] if iv is None else [(name, make(layer)) for layer, name in iv.hook_names.items()]
    with torch.inference_mode():
        return model.run_with_hooks(ids, fwd_hooks=hooks).float()


@pytest.mark.parametrize("kind", list(KINDS))
def test_steer_applies_each_kind_as_plain_hooks_would(model: Any, kind: str) -> None:
    iv = next(i for i in model_examples(model) if i.kind == kind)
    ids = model.to_tokens("The quick brown fox jumps")
    with steer(model, iv), torch.inference_mode():
        got = model(ids).float()
    torch.testing.assert_close(got, hooked_logits(model, ids, iv), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, hooked_logits(model, ids, None), atol=1e-3)  # it changed something
    with torch.inference_mode():
        after = model(ids).float()
    torch.testing.assert_close(after, hooked_logits(model, ids, None))  # the hooks are gone


QUESTIONS = [
    Question("Alice met Bob at the park.", "Who was late?", ("Alice", "Bob", "Can't be determined")),
    Question("Alice met Bob at the park.", "Who was early?", ("Alice", "Bob", "Can't be determined")),
    Question("A doctor and a nurse talked.", "Who was rude?", ("The doctor", "The nurse", "Unknown")),
]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_scores_the_same_over_the_prefix_tree_as_one_forward_per_option(model: Any, kind: str) -> None:
    iv = next(i for i in model_examples(model) if i.kind == kind)
    with steer(model, iv):
        tree = score_questions(model, QUESTIONS, scoring="cloze")
    for q, s in zip(QUESTIONS, tree):
        for k, opt in enumerate(s.option_token_ids):
            ids = torch.tensor([s.prompt_token_ids + opt])
            logp = torch.log_softmax(hooked_logits(model, ids, iv)[0], -1)
            n = len(s.prompt_token_ids)
            want = sum(float(logp[n - 1 + i, t]) for i, t in enumerate(opt))
            assert s.option_logliks[k] == pytest.approx(want, abs=2e-3)


def test_a_gated_kind_under_the_kv_cache_equals_a_full_forward(model: Any) -> None:
    iv = next(i for i in model_examples(model) if i.kind == "gated")
    ids = model.to_tokens("Once upon a time there")
    with steer(model, iv), torch.inference_mode():
        full = final_residual(model, ids, {})
        from transformers import DynamicCache

        cache = DynamicCache()
        first = final_residual(model, ids[:, :-2], {"past_key_values": cache})
        rest = final_residual(model, ids[:, -2:], {"past_key_values": cache})
    torch.testing.assert_close(torch.cat([first, rest], 1), full, atol=1e-4, rtol=1e-4)


def plain_hf_logits(hf_model: Any, ids: torch.Tensor, path: Any) -> torch.Tensor:
    """docs/interventions.md's recipe: the file read with safetensors alone, applied by plain PyTorch forward hooks on
    the Hugging Face decoder layers (no lens_steer code)."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["lens_steer_intervention"])
        t = {k: f.get_tensor(k) for k in f.keys()}
    kind, params = header["kind"], header["params"]

    def edit(layer: int, x: torch.Tensor) -> torch.Tensor:
        def g(role: str) -> torch.Tensor:
            return t[f"{layer}.{role}"].to(x.dtype)

        if kind in ("additive", "optimized"):
            return x + params["coeff"] * g("vector")
        if kind == "gated":
            fire = (x @ g("probe_weight") + params["probe_bias"][str(layer)]) > 0
            return x + fire[..., None] * params["coeff"] * g("vector")
        if kind == "leace":
            return x - ((x - g("bias")) @ g("proj_right").T) @ g("proj_left").T
        u = g("direction") / g("direction").norm()
        if kind == "ablation":
            return x - (x @ u)[..., None] * u
        return x + ((g("reference") @ u) - x @ u)[..., None] * u

    def hook(layer: int) -> Any:
        def fn(mod: Any, inp: Any, out: Any) -> Any:
            return (edit(layer, out[0]), *out[1:]) if isinstance(out, tuple) else edit(layer, out)

        return fn

    layers = sorted({int(k.split(".")[0]) for k in t})
    handles = [hf_model.model.layers[la].register_forward_hook(hook(la)) for la in layers]
    try:
        with torch.inference_mode():
            return hf_model(ids).logits.float()
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_saved_intervention_applied_by_plain_hf_hooks_equals_steer(model: Any, kind: str, tmp_path: Any) -> None:
    iv = next(i for i in model_examples(model) if i.kind == kind)
    path = iv.save(tmp_path / f"{kind}.safetensors")
    ids = model.to_tokens("The quick brown fox jumps")
    with steer(model, iv), torch.inference_mode():
        ours = model(ids).float()
    torch.testing.assert_close(plain_hf_logits(model.original_model, ids, path), ours, atol=1e-4, rtol=1e-4)
