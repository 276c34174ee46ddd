"""Vector file formats: lm-eval .pt, control-vector GGUF, hf safetensors, plain {layer: tensor}; module names.

Each export is checked against the other tool's own semantics: lm-eval's `steered` model (imported where
installed, and a faithful re-implementation of its hook otherwise), llama.cpp's control-vector loader
(a faithful re-implementation of `common_control_vector_load_one` + `llama_adapter_cvec::apply`), and the
`gguf` package's reader for the file layout.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _arch_checkpoints import FAMILIES, write_checkpoint
from _hf_pair import hooked_logits, random_vector, tiny_pair
from _one_line import assert_one_line_error
from _tiny_models import single_thread  # noqa: F401
from safetensors.torch import save_file

from lens_steer.model.load import PROCESSING_FLAGS, model_identity
from lens_steer.steering import formats
from lens_steer.steering.export import export_vector, lm_eval_config
from lens_steer.steering.formats import architecture_of, hook_of_output, hook_site, module_names, output_site
from lens_steer.steering.hooks import steer
from lens_steer.steering.vectors import SteeringVector, load_vector

TOKENS = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12], [40, 41, 42, 43, 44, 45, 46, 47]])


@pytest.fixture(scope="module")
def pair() -> tuple[Any, Any]:
    return tiny_pair("llama")


def tl_logits(bridge: Any, vector: SteeringVector, coeff: float) -> torch.Tensor:
    with torch.inference_mode(), steer(bridge, [(vector, coeff)]):
        return bridge(TOKENS)


def same_vector(a: SteeringVector, b: SteeringVector) -> None:
    assert a.layers == b.layers
    for layer in a.layers:
        assert torch.equal(a.directions[layer], b.directions[layer]), layer
    for field in ("model_name", "d_model", "hook", "method", "token_position", "processing"):
        assert getattr(a.metadata, field) == getattr(b.metadata, field), field


# ---- module names -----------------------------------------------------------------------------------
def test_architecture_of_names_folders_and_models(pair: Any, tmp_path: Path) -> None:
    assert architecture_of("tiny-llama") == "llama" and architecture_of("smollm2-135m-instruct") == "llama"
    assert architecture_of(pair[1]) == pair[0].config.model_type == "llama"  # from the bridge's HF model
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert architecture_of(str(tmp_path)) == "qwen2"
    assert architecture_of("anything", "gpt2") == "gpt2"
    assert_one_line_error(lambda: architecture_of("no-such-model"), "'no-such-model'", "--arch")
    assert_one_line_error(lambda: architecture_of("x", "bert"), "'bert'", "llama")


def test_hook_sites_follow_the_residual_stream() -> None:
    llama, gpt2 = module_names("llama"), module_names("gpt2")
    assert hook_site("hook_resid_post", 3, llama) == ("layers.3", "output")
    assert hook_site("hook_resid_pre", 3, llama) == ("layers.3", "input")
    assert hook_site("hook_attn_out", 1, llama) == ("layers.1.self_attn", "output")
    assert hook_site("hook_mlp_out", 1, gpt2) == ("h.1.mlp", "output")
    assert output_site("hook_resid_pre", 3, llama) == "layers.2"  # block 3's input is block 2's output
    assert output_site("hook_resid_pre", 0, llama) == "embed_tokens"
    assert_one_line_error(
        lambda: output_site("hook_resid_pre", 0, gpt2), "blocks.0.hook_resid_pre"
    )  # wte + wpe: no one module
    assert_one_line_error(lambda: hook_site("hook_resid_mid", 1, llama), "hook_resid_mid")
    assert hook_of_output("layers.2", llama, 4) == ("hook_resid_post", 2)
    assert hook_of_output("embed_tokens", llama, 4) == ("hook_resid_pre", 0)
    assert hook_of_output("layers.0.mlp", llama, 4) == ("hook_mlp_out", 0)
    assert_one_line_error(lambda: hook_of_output("layers.4", llama, 4), "'layers.4'")
    assert_one_line_error(lambda: hook_of_output("lm_head", llama, 4), "'lm_head'")


def test_the_mapping_names_real_modules(pair: Any) -> None:
    hf, bridge = pair
    names = module_names(hf.config.model_type)
    base = dict(hf.base_model.named_modules())
    for layer in range(int(bridge.cfg.n_layers)):
        for hook in ("hook_resid_post", "hook_resid_pre", "hook_attn_out", "hook_mlp_out"):
            assert output_site(hook, layer, names) in base
            assert (
                hf.get_submodule(f"{names.base}.{hook_site(hook, layer, names)[0]}")
                is base[hook_site(hook, layer, names)[0]]
            )


# ---- lm-eval -----------------------------------------------------------------------------------------
def lm_eval_steer_reimplementation(hf_model: Any, steer_path: Path) -> Any:
    """A faithful re-implementation of lm-eval 0.4.13's `steered` model (lm_eval/models/hf_steered.py):
    torch.load the dict, per hookpoint `vector.to(dtype) * coefficient` for action "add", a forward hook on
    `model.base_model.named_modules()[hookpoint]` adding it to the output (its first element for tuples)."""
    config = torch.load(steer_path, weights_only=False)
    modules = dict(hf_model.base_model.named_modules())
    handles = []
    for hookpoint, info in config.items():
        assert info["action"] == "add" and info.get("bias") is None and info.get("head_index") is None
        add = info["steering_vector"].to(hf_model.dtype) * float(info.get("steering_coefficient", 1.0))

        def hook(module: Any, inp: Any, output: Any, add: torch.Tensor = add) -> Any:
            if isinstance(output, tuple):
                return (output[0] + add, *output[1:])
            return output + add

        handles.append(modules[hookpoint].register_forward_hook(hook))
    assert len(handles) == len(config), "Not all hookpoints could be resolved"
    return handles


@pytest.mark.parametrize(
    "hook,layers",
    [("hook_resid_post", [1, 3]), ("hook_resid_pre", [0, 2]), ("hook_attn_out", [1]), ("hook_mlp_out", [0, 3])],
)
def test_lm_eval_export_gives_lm_evals_logits(pair: Any, tmp_path: Path, hook: str, layers: list[int]) -> None:
    hf, bridge = pair
    vector = random_vector(bridge, layers, hook=hook, scale=3.0)
    path = export_vector(vector, "lm-eval", -1.5, tmp_path / "steer.pt")
    config = torch.load(path, weights_only=True)  # lm-eval <= 0.4.9 loads with weights_only=True
    assert all(
        entry["action"] == "add" and entry["steering_coefficient"] == -1.5 and entry["bias"] is None
        for entry in config.values()
    )
    expected = tl_logits(bridge, vector, -1.5)
    assert (expected - bridge(TOKENS)).abs().max() > 0.1  # the steering matters
    got = hooked_logits(hf, TOKENS, lm_eval_steer_reimplementation(hf, path))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_lm_eval_export_in_every_supported_family(family: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from lens_steer.model.load import load_model

    folder = write_checkpoint(family, tmp_path / family)
    bridge, hf = load_model(str(folder)), AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokens = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])
    for hook in ("hook_resid_post", "hook_resid_pre", "hook_attn_out", "hook_mlp_out"):
        layers = [1, 3] if hook == "hook_resid_pre" and module_names(hf.config.model_type).embed is None else [0, 3]
        vector = random_vector(bridge, layers, hook=hook, scale=2.0)
        path = export_vector(
            vector, "lm-eval", 1.0, tmp_path / f"{hook}.pt"
        )  # the architecture comes from the folder's config
        got = hooked_logits(hf, tokens, lm_eval_steer_reimplementation(hf, path))
        with torch.inference_mode(), steer(bridge, [(vector, 1.0)]):
            expected = bridge(tokens)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0, msg=lambda m: f"{family} {hook}: {m}")
        same_vector(load_vector(path, bridge), vector)


def test_lm_eval_export_through_lm_evals_own_steered_model(pair: Any, tmp_path: Path) -> None:
    try:
        from lm_eval.models.hf_steered import SteeredModel
    except ImportError as e:
        pytest.skip(
            f"lm-eval is not installed ({e}); pip install 'lens_steer[parity]'; the re-implementation test covers its "
            "hook"
        )
    from lens_steer.model.load import tiny_tokenizer

    hf, bridge = pair
    vector = random_vector(
        bridge, [0, 1, 3], hook="hook_resid_pre", scale=3.0, seed=1
    )  # embeddings + two layer outputs
    path = export_vector(vector, "lm-eval", 2.0, tmp_path / "steer.pt")
    lm = SteeredModel(pretrained=hf, steer_path=str(path), tokenizer=tiny_tokenizer(), device="cpu", batch_size=1)
    with torch.inference_mode():
        got = lm._model_call(TOKENS)
    torch.testing.assert_close(got, tl_logits(bridge, vector, 2.0), atol=1e-4, rtol=0)
    assert all(len(m._forward_hooks) == 0 for m in hf.modules())  # lm-eval removed its hooks


def test_lm_eval_round_trip_is_exact(pair: Any, tmp_path: Path) -> None:
    hf, bridge = pair
    for hook, layers in (("hook_resid_pre", [0, 3]), ("hook_attn_out", [2])):
        vector = random_vector(bridge, layers, hook=hook)
        back = load_vector(export_vector(vector, "lm-eval", 0.7, tmp_path / f"{hook}.pt"), bridge)
        same_vector(back, vector * 0.7)
        assert back.metadata.provenance["origin"] == "imported from lm-eval"


def test_lm_eval_file_of_another_tool_imports_by_module_name(pair: Any, tmp_path: Path) -> None:
    hf, bridge = pair
    d = model_identity(bridge).d_model
    v2, v3 = torch.randn(d), torch.randn(d)
    entry = {"action": "add", "bias": None}
    torch.save(
        {
            "layers.2": {**entry, "steering_vector": v2, "steering_coefficient": 2.0},
            "layers.3": {**entry, "steering_vector": v3, "steering_coefficient": -1.0},
        },
        tmp_path / "x.pt",
    )
    vec = load_vector(tmp_path / "x.pt", bridge)
    assert vec.metadata.hook == "hook_resid_post" and vec.layers == (2, 3)
    assert torch.equal(vec.directions[2], v2 * 2.0) and torch.equal(vec.directions[3], v3 * -1.0)
    assert vec.metadata.provenance["coefficients"] == {"layers.2": 2.0, "layers.3": -1.0}
    # the embeddings with layer outputs read as block inputs
    torch.save(
        {"embed_tokens": {**entry, "steering_vector": v2}, "layers.1": {**entry, "steering_vector": v3}},
        tmp_path / "pre.pt",
    )
    pre = load_vector(tmp_path / "pre.pt", bridge)
    assert pre.metadata.hook == "hook_resid_pre" and pre.layers == (0, 2)
    bad = [
        ({"layers.9": {**entry, "steering_vector": v2}}, ["'layers.9'"]),
        ({"model.layers.1": {**entry, "steering_vector": v2}}, ["'model.layers.1'"]),
        ({"layers.1": {**entry, "action": "clamp", "steering_vector": v2}}, ["'clamp'"]),
        (
            {"layers.1": {**entry, "steering_vector": v2}, "layers.1.mlp": {**entry, "steering_vector": v3}},
            ["different kinds"],
        ),
        ({"layers.1": {**entry, "steering_vector": torch.randn(d + 1)}}, [f"width {d + 1}", f"d_model {d}"]),
    ]
    for k, (config, needles) in enumerate(bad):
        torch.save(config, tmp_path / f"bad{k}.pt")
        assert_one_line_error(lambda: load_vector(tmp_path / f"bad{k}.pt", bridge), f"bad{k}.pt", *needles)
    assert_one_line_error(lambda: load_vector(tmp_path / "x.pt"), "pass the model")


# ---- GGUF --------------------------------------------------------------------------------------------
def llama_cpp_control_vector(path: Path, n_layer: int) -> tuple[int, dict[int, np.ndarray]]:
    """A faithful re-implementation of llama.cpp's loading: `common_control_vector_load_one` (direction.N at
    offset n_embd*(N-1), N >= 1, F32, 1-D, strength 1) then `llama_adapter_cvec::apply` (block il, 1 <= il <
    n_layer, reads offset n_embd*(il-1)). Returns n_embd and {il: the vector added to block il's l_out}."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    n_embd, data = -1, np.zeros(0, dtype=np.float32)
    for t in reader.tensors:
        name, idx = t.name.split(".", 1)
        assert (
            name == "direction"
            and int(idx) > 0
            and t.tensor_type == gguf.GGMLQuantizationType.F32
            and len(t.shape) == 1
        )
        n_embd = int(t.n_elements) if n_embd == -1 else n_embd
        layer_idx = int(idx)
        if data.size < n_embd * layer_idx:
            data = np.concatenate([data, np.zeros(n_embd * layer_idx - data.size, dtype=np.float32)])
        data[n_embd * (layer_idx - 1) : n_embd * layer_idx] += np.asarray(t.data, dtype=np.float32)
    tensors = {}
    for il in range(1, n_layer):
        off = n_embd * (il - 1)
        if off + n_embd <= data.size:
            tensors[il] = data[off : off + n_embd]
    return n_embd, tensors


def apply_at_layer_outputs(hf: Any, adds: dict[int, np.ndarray]) -> list[Any]:
    """Add each vector to the output of decoder layer il (llama.cpp's build_cvec at l_out)."""
    handles = []
    for il, vec in adds.items():
        add = torch.from_numpy(vec)
        handles.append(
            hf.model.layers[il].register_forward_hook(
                lambda m, i, o, add=add: (o[0] + add, *o[1:]) if isinstance(o, tuple) else o + add
            )
        )
    return handles


@pytest.mark.parametrize(
    "hook,layers,numbering", [("hook_resid_post", [1, 3], [1, 3]), ("hook_resid_pre", [2, 3], [1, 2])]
)
def test_gguf_layout_and_llama_cpp_semantics(
    pair: Any, tmp_path: Path, hook: str, layers: list[int], numbering: list[int]
) -> None:
    import gguf

    hf, bridge = pair
    vector = random_vector(bridge, layers, hook=hook, scale=3.0)
    path = export_vector(vector, "gguf", 1.5, tmp_path / "v.gguf")
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"  # repeng writes model_type here
    assert reader.get_field("controlvector.layer_count").contents() == len(layers)
    assert sorted(t.name for t in reader.tensors) == [f"direction.{n}" for n in numbering]
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}
    n_embd, adds = llama_cpp_control_vector(path, int(bridge.cfg.n_layers))
    assert n_embd == model_identity(bridge).d_model
    assert [
        il for il, v in sorted(adds.items()) if np.any(v != 0)
    ] == numbering  # gaps are zero-filled, as in llama.cpp
    got = hooked_logits(hf, TOKENS, apply_at_layer_outputs(hf, adds))
    torch.testing.assert_close(got, tl_logits(bridge, vector, 1.5), atol=1e-4, rtol=0)
    back = load_vector(path, bridge)
    same_vector(back, vector * 1.5)
    assert (
        back.metadata.provenance["origin"] == "imported from gguf"
        and back.metadata.provenance["gguf_layers"] == numbering
    )


def test_gguf_written_as_repeng_writes_it_imports(pair: Any, tmp_path: Path) -> None:
    import gguf

    _, bridge = pair
    d = model_identity(bridge).d_model
    dirs = {1: np.arange(d, dtype=np.float32), 3: -np.ones(d, dtype=np.float32)}

    def repeng_export(
        path: Path, directions: dict[int, np.ndarray], arch: str = "controlvector"
    ) -> Path:  # repeng's export_gguf
        writer = gguf.GGUFWriter(str(path), arch)
        writer.add_string(f"{arch}.model_hint", "llama")
        writer.add_uint32(f"{arch}.layer_count", len(directions))
        for layer in directions:
            writer.add_tensor(f"direction.{layer}", directions[layer])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    vec = load_vector(repeng_export(tmp_path / "r.gguf", dirs), bridge)
    assert vec.metadata.hook == "hook_resid_post" and vec.metadata.model_name == "tiny-llama" and vec.layers == (1, 3)
    assert (
        torch.equal(vec.directions[1], torch.from_numpy(dirs[1])) and vec.metadata.provenance["model_hint"] == "llama"
    )
    assert_one_line_error(
        lambda: load_vector(repeng_export(tmp_path / "wide.gguf", {1: np.ones(d + 2, dtype=np.float32)}), bridge),
        "wide.gguf",
        f"width {d + 2}",
    )
    assert_one_line_error(
        lambda: load_vector(repeng_export(tmp_path / "deep.gguf", {9: np.ones(d, dtype=np.float32)}), bridge),
        "deep.gguf",
        "layer 9",
        "0..3",
    )
    assert_one_line_error(
        lambda: load_vector(repeng_export(tmp_path / "zero.gguf", {0: np.ones(d, dtype=np.float32)}), bridge),
        "direction.0",
    )
    assert_one_line_error(
        lambda: load_vector(
            repeng_export(tmp_path / "model.gguf", {1: np.ones(d, dtype=np.float32)}, arch="llama"), bridge
        ),
        "'llama'",
        "not a control vector",
    )


# ---- hf and plain ---------------------------------------------------------------------------------------
def test_hf_export_names_full_modules_and_round_trips(pair: Any, tmp_path: Path) -> None:
    from safetensors import safe_open

    hf, bridge = pair
    vector = random_vector(bridge, [0, 2], hook="hook_resid_pre")
    path = export_vector(vector, "hf", 2.0, tmp_path / "v.safetensors")
    with safe_open(str(path), framework="pt") as f:
        keys, meta = sorted(f.keys()), f.metadata()
        assert torch.equal(f.get_tensor("model.layers.2"), vector.directions[2] * 2.0)
    assert keys == ["model.layers.0", "model.layers.2"] and all(hf.get_submodule(k) is not None for k in keys)
    assert json.loads(meta["lens_steer_hf"])["model.layers.0"]["site"] == "input"
    same_vector(load_vector(path, bridge), vector * 2.0)


def test_plain_files_import_as_layer_outputs(pair: Any, tmp_path: Path) -> None:
    _, bridge = pair
    d = model_identity(bridge).d_model
    a, b = torch.randn(d), torch.randn(d)
    torch.save({1: a, 3: b}, tmp_path / "p.pt")
    save_file({"1": a, "3": b}, str(tmp_path / "p.safetensors"))
    for name in ("p.pt", "p.safetensors"):
        vec = load_vector(tmp_path / name, bridge)
        assert vec.metadata.hook == "hook_resid_post" and vec.layers == (1, 3) and torch.equal(vec.directions[3], b)
        assert vec.metadata.provenance["origin"] == "imported from plain"
        assert vec.metadata.processing == {f: False for f in PROCESSING_FLAGS}
    torch.save({"layer_one": a}, tmp_path / "bad.pt")
    assert_one_line_error(lambda: load_vector(tmp_path / "bad.pt", bridge), "'layer_one'", "layer number")
    torch.save([a, b], tmp_path / "list.pt")
    assert_one_line_error(lambda: load_vector(tmp_path / "list.pt", bridge), "list")
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01 not a vector")
    assert_one_line_error(lambda: load_vector(tmp_path / "junk.bin", bridge), "junk.bin", "GGUF")


# ---- refusals: processing, hook points a format cannot carry; nothing written ------------------------------
def test_processing_is_refused_on_layernorm_and_harmless_on_rmsnorm(tmp_path: Path) -> None:
    _, gpt2_bridge = tiny_pair("gpt2", process_weights=True)
    ln_vector = random_vector(gpt2_bridge, [1])
    assert all(ln_vector.metadata.processing.values())
    for fmt, name in (("lm-eval", "v.pt"), ("gguf", "v.gguf"), ("hf", "v.safetensors")):
        assert_one_line_error(
            lambda: export_vector(ln_vector, fmt, 1.0, tmp_path / name, arch="gpt2"),
            "LayerNorm",
            "process_weights=False",
        )
        assert not (tmp_path / name).exists()
    hf, rms_bridge = tiny_pair("llama", process_weights=True)
    rms_vector = random_vector(rms_bridge, [1, 2], scale=3.0)
    assert all(rms_vector.metadata.processing.values())
    _, plain_bridge = tiny_pair("llama")
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(4)]
    with torch.inference_mode():
        processed_resid = rms_bridge.run_with_cache(TOKENS, names_filter=lambda n: n in names)[1]
        plain_resid = plain_bridge.run_with_cache(TOKENS, names_filter=lambda n: n in names)[1]
    assert all(
        torch.equal(processed_resid[n], plain_resid[n]) for n in names
    )  # processing leaves an RMSNorm residual alone
    path = export_vector(rms_vector, "lm-eval", 1.0, tmp_path / "rms.pt")
    got = torch.log_softmax(hooked_logits(hf, TOKENS, lm_eval_steer_reimplementation(hf, path)), -1)
    # center_unembed shifts each position's logits by a constant: compare log-probabilities
    torch.testing.assert_close(got, torch.log_softmax(tl_logits(rms_bridge, rms_vector, 1.0), -1), atol=1e-4, rtol=0)


def test_exports_that_a_format_cannot_carry_write_nothing(pair: Any, tmp_path: Path) -> None:
    _, bridge = pair
    cases = [
        (random_vector(bridge, [1], hook="hook_attn_out"), "gguf", "v.gguf", ["hook_attn_out", "block outputs"]),
        (random_vector(bridge, [0, 2]), "gguf", "v.gguf", ["blocks.0.hook_resid_post", "direction.0"]),
        (random_vector(bridge, [1], hook="hook_resid_pre"), "gguf", "v.gguf", ["blocks.1.hook_resid_pre"]),
        (random_vector(bridge, [1], hook="hook_resid_mid"), "lm-eval", "v.pt", ["hook_resid_mid"]),
        (random_vector(bridge, [1], hook="hook_resid_mid"), "hf", "v.safetensors", ["hook_resid_mid"]),
        (random_vector(bridge, [1]), "lm-eval", "v.safetensors", [".pt"]),
        (random_vector(bridge, [1]), "onnx", "v.onnx", ["'onnx'", "lm-eval"]),
    ]
    for vector, fmt, name, needles in cases:
        assert_one_line_error(lambda: export_vector(vector, fmt, 1.0, tmp_path / name), *needles)
        assert list(tmp_path.iterdir()) == []
    assert_one_line_error(
        lambda: export_vector(random_vector(bridge, [1]), "gguf", float("nan"), tmp_path / "v.gguf"), "finite"
    )
    assert list(tmp_path.iterdir()) == []


def test_detect_format_reads_content_not_names(pair: Any, tmp_path: Path) -> None:
    _, bridge = pair
    vector = random_vector(bridge, [1, 2])
    lens = vector.save(tmp_path / "a.bin")
    gg = export_vector(vector, "gguf", 1.0, tmp_path / "b.gguf")
    (tmp_path / "b.safetensors").write_bytes(gg.read_bytes())
    buffer = io.BytesIO()
    torch.save(lm_eval_config(vector, 1.0, "llama"), buffer)
    (tmp_path / "c.gguf").write_bytes(buffer.getvalue())
    assert [formats.detect_format(p) for p in (lens, tmp_path / "b.safetensors", tmp_path / "c.gguf")] == [
        "lens_steer",
        "gguf",
        "lm-eval",
    ]
    same_vector(load_vector(lens), vector)
    assert_one_line_error(lambda: formats.read_vector_file(lens, "lens_steer"), "unknown vector format")


@pytest.mark.integration
def test_lm_eval_export_on_the_embedded_model(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from lens_steer.model.load import EMBEDDED_MODEL, checkpoint_folder, load_model

    bridge = load_model()
    hf = AutoModelForCausalLM.from_pretrained(checkpoint_folder(EMBEDDED_MODEL), dtype=torch.float32).eval()
    tokens = torch.tensor([bridge.tokenizer("The capital of France is", add_special_tokens=False)["input_ids"]])
    vector = random_vector(bridge, [10, 20], scale=4.0)
    path = export_vector(vector, "lm-eval", 1.0, tmp_path / "steer.pt")
    with torch.inference_mode(), steer(bridge, [(vector, 1.0)]):
        expected = bridge(tokens)
    try:
        from lm_eval.models.hf_steered import SteeredModel
    except ImportError:  # lm-eval not installed: its hook, re-implemented
        handles = lm_eval_steer_reimplementation(hf, path)
        with torch.inference_mode():
            got = hf(tokens).logits
        for h in handles:
            h.remove()
    else:
        lm = SteeredModel(pretrained=hf, steer_path=str(path), tokenizer=bridge.tokenizer, device="cpu", batch_size=1)
        with torch.inference_mode():
            got = lm._model_call(tokens)
    assert (expected - bridge(tokens)).abs().max() > 0.1
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
