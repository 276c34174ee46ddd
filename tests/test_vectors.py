"""Tests for lens_steer.steering.vectors: arithmetic by hand, the file format read byte by byte, every refusal."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from _one_line import assert_one_line_error
from _tiny_models import BACKENDS, make_tiny, single_thread  # noqa: F401 (autouse fixture)
from safetensors.torch import save_file

from lens_steer.errors import LensSteerError, VectorError
from lens_steer.model.load import PROCESSING_FLAGS, model_identity
from lens_steer.steering.vectors import (
    METADATA_KEY,
    SCALE_MEANINGS,
    SteeringVector,
    VectorMetadata,
    hook_name,
    load_vector,
    mean_vectors,
    scale_meaning,
    sum_vectors,
)
from lens_steer.version import __version__

D = 8


@pytest.fixture(scope="module", params=BACKENDS)
def model(request: pytest.FixtureRequest) -> Any:
    return make_tiny(request.param)


def meta(**kw: Any) -> VectorMetadata:
    base: dict[str, Any] = {
        "model_name": "m",
        "d_model": D,
        "method": "mean_diff",
        "processing": {f: False for f in PROCESSING_FLAGS},
    }
    base.update(kw)
    return VectorMetadata(**base)


def vec(values: dict[int, list[float]], **kw: Any) -> SteeringVector:
    return SteeringVector({k: torch.tensor(v) for k, v in values.items()}, meta(**kw))


def ramp(start: float) -> list[float]:
    return [start + i for i in range(D)]


def model_vector(model: Any, layers: list[int], seed: int = 0) -> SteeringVector:
    ident = model_identity(model)
    g = torch.Generator().manual_seed(seed)
    m = VectorMetadata(
        model_name=ident.name, d_model=ident.d_model, processing=ident.processing, provenance={"seed": seed}
    )
    return SteeringVector({layer: torch.randn(ident.d_model, generator=g) for layer in layers}, m)


# ---- values and arithmetic -----------------------------------------------------------------------
def test_hook_name_and_views() -> None:
    assert hook_name(3) == "blocks.3.hook_resid_post"
    assert hook_name(0, "hook_mlp_out") == "blocks.0.hook_mlp_out"
    v = vec({5: ramp(0), 2: ramp(1)}, hook="hook_resid_pre")
    assert v.layers == (2, 5)
    assert v.hook_names == {2: "blocks.2.hook_resid_pre", 5: "blocks.5.hook_resid_pre"}
    assert v.norms()[5] == pytest.approx(sum(x * x for x in ramp(0)) ** 0.5)
    assert v.directions[2].dtype == torch.float32


def test_arithmetic_matches_hand_computation() -> None:
    a = vec({1: ramp(0), 2: ramp(10)})
    b = vec({2: ramp(-3), 3: ramp(1)})
    s = a + b
    assert s.layers == (1, 2, 3)
    assert s.directions[1].tolist() == ramp(0)
    assert s.directions[2].tolist() == [x + y for x, y in zip(ramp(10), ramp(-3))]
    assert (a - b).directions[3].tolist() == [-x for x in ramp(1)]
    assert (2.5 * a).directions[2].tolist() == [2.5 * x for x in ramp(10)]
    assert (a * 2).directions[1].tolist() == (a / 0.5).directions[1].tolist()
    assert (-a).directions[1].tolist() == [-x for x in ramp(0)]
    m = mean_vectors([a, b])
    assert m.directions[2].tolist() == pytest.approx([(x + y) / 2 for x, y in zip(ramp(10), ramp(-3))])
    assert m.directions[1].tolist() == pytest.approx([x / 2 for x in ramp(0)])  # absent layer counts as zero
    w = mean_vectors([a, b], weights=[3, 1])
    assert w.directions[2].tolist() == pytest.approx([(3 * x + y) / 4 for x, y in zip(ramp(10), ramp(-3))])
    assert sum_vectors([a, b, a]).directions[1].tolist() == [2 * x for x in ramp(0)]
    n = a.normalized()
    assert n.directions[2].tolist() == pytest.approx([x / sum(y * y for y in ramp(10)) ** 0.5 for x in ramp(10)])
    assert a.select_layers([2]).layers == (2,)
    assert a.directions[1].tolist() == ramp(0)  # operands unchanged


def test_scale_and_stored_coefficient_follow_the_arithmetic() -> None:
    a = vec({1: ramp(0), 2: ramp(10)}, provenance={"scale": "contrast", "coeff": 2.5, "axis": "age"})
    b = vec({2: ramp(-3)}, provenance={"scale": "contrast"})
    assert (a.scale, a.coeff, b.coeff) == ("contrast", 2.5, None)
    assert vec({1: ramp(0)}).scale is None and vec({1: ramp(0)}, provenance={"coeff": True}).coeff is None
    # a stored coefficient was chosen for the vector itself: nothing derived from it keeps one
    for derived in (a * 2, -a, a / 4, a.normalized(), a.select_layers([2]), a + b, mean_vectors([a, b])):
        assert derived.coeff is None
    assert (
        (a * 2).scale == "2 x contrast" and (a * 2 * 3).scale == "6 x contrast" and (a / 4).scale == "0.25 x contrast"
    )
    assert (a * 1).scale == "contrast" and a.normalized().scale == "unit" and a.select_layers([2]).scale == "contrast"
    assert (a * 2).metadata.provenance["axis"] == "age"  # the rest of the provenance is kept
    assert mean_vectors([a, b]).scale == sum_vectors([a, b]).scale == "contrast"  # one unit in, that unit out
    assert mean_vectors([a, vec({2: ramp(1)})]).scale is None and (a + a * 2).scale is None
    assert scale_meaning("contrast") == SCALE_MEANINGS["contrast"]
    assert scale_meaning("0.5 x unit") == "0.5 x " + SCALE_MEANINGS["unit"] and "not recorded" in scale_meaning(None)


def test_repr_is_short_and_says_what_the_vector_is() -> None:
    d = 4096
    dirs = {layer: torch.full((d,), float(layer)) for layer in range(30)}
    prov = {"scale": "contrast", "coeff": -1.5, "example_ids": list(range(5000))}
    v = SteeringVector(dirs, meta(d_model=d, model_name="org/" + "x" * 200, method="pca_diff", provenance=prov))
    text = repr(v)
    assert len(text) <= 300 and text == str(v) and "tensor(" not in text
    norms = v.norms()
    assert f"{min(norms.values()):.3g}..{max(norms.values()):.3g} (mean {sum(norms.values()) / 30:.3g})" in text
    assert "layers=0-29 (30 layers)" in text and "hook='hook_resid_post'" in text and "method='pca_diff'" in text
    assert "scale='contrast'" in text and "coeff=-1.5" in text and ("x" * 40 + "'") in text  # the name's tail
    few = vec({3: ramp(0), 7: ramp(1)})
    assert f"norms={{3: {few.norms()[3]:.3g}, 7: {few.norms()[7]:.3g}}}" in repr(few) and "coeff" not in repr(few)
    assert "layers=[3, 7]" in repr(few) and "scale=None" in repr(few)
    gaps = vec({layer: ramp(layer) for layer in (1, 3, 5, 7, 9, 11)})
    assert "layers=[1, 3, 5, ..., 11] (6 layers)" in repr(gaps)


def test_value_refusals_are_one_line() -> None:
    cases = [
        (lambda: vec({1: [1.0] * (D - 1)}), ["width 7", "d_model is 8"]),
        (lambda: vec({1: [float("nan")] * D}), ["NaN"]),
        (lambda: vec({}), ["at least one layer"]),
        (lambda: vec({-1: ramp(0)}), ["-1"]),
        (lambda: vec({1: ramp(0)}, hook="hook_nothing"), ["'hook_nothing'", "hook_resid_post"]),
        (lambda: vec({1: ramp(0)}) * float("inf"), ["inf"]),
        (lambda: vec({1: ramp(0)}) / 0, ["by 0"]),
        (lambda: vec({1: [0.0] * D}).normalized(), ["layer 1", "zero"]),
        (lambda: vec({1: ramp(0)}).select_layers([4]), ["no layer 4"]),
        (lambda: vec({1: ramp(0)}) + vec({1: ramp(0)}, model_name="other"), ["'other'"]),
        (lambda: sum_vectors([]), ["at least one"]),
        (lambda: mean_vectors([vec({1: ramp(0)})], weights=[0.0]), ["non-zero"]),
    ]
    for fn, needles in cases:
        assert_one_line_error(fn, *needles, error=VectorError)


# ---- file format ----------------------------------------------------------------------------------
def _raw_header(path: Path) -> dict[str, Any]:
    """The safetensors JSON header, read by hand (8-byte little-endian length, then JSON)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


def test_save_writes_the_documented_format_and_round_trips(tmp_path: Path) -> None:
    v = vec({3: ramp(0), 7: ramp(-4)}, provenance={"builder": "jsonl", "n_pairs": 4}, token_position="last")
    path = v.save(tmp_path / "sub" / "v.safetensors")
    header = _raw_header(path)
    assert set(header) == {"__metadata__", "blocks.3.hook_resid_post", "blocks.7.hook_resid_post"}
    assert header["blocks.3.hook_resid_post"]["dtype"] == "F32"
    assert header["blocks.3.hook_resid_post"]["shape"] == [D]
    stored = json.loads(header["__metadata__"][METADATA_KEY])
    assert stored["model_name"] == "m" and stored["d_model"] == D and stored["hook"] == "hook_resid_post"
    assert stored["method"] == "mean_diff" and stored["lens_steer_version"] == __version__
    assert stored["provenance"] == {"builder": "jsonl", "n_pairs": 4}
    assert stored["processing"] == {f: False for f in PROCESSING_FLAGS}
    back = load_vector(path)
    assert back.metadata == v.metadata
    assert back.layers == (3, 7)
    for layer in (3, 7):
        assert torch.equal(back.directions[layer], v.directions[layer])
    assert [p.name for p in path.parent.iterdir()] == ["v.safetensors"]  # no temp file left behind


def test_round_trip_against_a_model(model: Any, tmp_path: Path) -> None:
    v = model_vector(model, [0, 2])
    back = load_vector(v.save(tmp_path / "v.safetensors"), model)
    assert back.metadata == v.metadata
    assert all(torch.equal(back.directions[k], v.directions[k]) for k in v.layers)


def _write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None) -> Path:
    save_file(tensors, str(path), metadata=None if metadata is None else {METADATA_KEY: json.dumps(metadata)})
    return path


def _refused(path: Path, model: Any, *needles: str) -> None:
    with pytest.raises(LensSteerError) as e:
        load_vector(path, model)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg


def test_every_load_refusal_is_one_line(model: Any, tmp_path: Path) -> None:
    ident = model_identity(model)
    good = model_vector(model, [1])
    good_meta = good.metadata.to_json()
    # missing file
    _refused(tmp_path / "absent.safetensors", model, "absent.safetensors", "does not exist")
    # not safetensors
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    _refused(junk, model, "junk.safetensors", "safetensors")
    # no lens_steer metadata
    _refused(
        _write(tmp_path / "nometa.safetensors", {"blocks.1.hook_resid_post": torch.zeros(ident.d_model)}, None),
        model,
        "nometa",
        "'lens_steer'",
    )
    # metadata lacking a field
    partial = {k: v for k, v in good_meta.items() if k != "d_model"}
    _refused(
        _write(tmp_path / "partial.safetensors", {"blocks.1.hook_resid_post": torch.zeros(ident.d_model)}, partial),
        model,
        "'d_model'",
    )
    # bad tensor name
    _refused(
        _write(tmp_path / "badname.safetensors", {"layer1": torch.zeros(ident.d_model)}, good_meta),
        model,
        "'layer1'",
        "blocks.<layer>.hook_resid_post",
    )
    # NaN
    nan = torch.zeros(ident.d_model)
    nan[3] = float("nan")
    _refused(
        _write(tmp_path / "nan.safetensors", {"blocks.1.hook_resid_post": nan}, good_meta),
        model,
        "nan.safetensors",
        "NaN",
    )
    # wrong width (file agrees with itself, not with the model)
    narrow = {**good_meta, "d_model": ident.d_model // 2}
    _refused(
        _write(tmp_path / "narrow.safetensors", {"blocks.1.hook_resid_post": torch.ones(ident.d_model // 2)}, narrow),
        model,
        f"width {ident.d_model // 2}",
        f"d_model {ident.d_model}",
    )
    # tensor width disagreeing with its own metadata
    _refused(
        _write(tmp_path / "mixed.safetensors", {"blocks.1.hook_resid_post": torch.ones(ident.d_model + 1)}, good_meta),
        model,
        f"width {ident.d_model + 1}",
    )
    # other model
    other = {**good_meta, "model_name": "some-other-model"}
    _refused(
        _write(tmp_path / "other.safetensors", {"blocks.1.hook_resid_post": torch.ones(ident.d_model)}, other),
        model,
        "'some-other-model'",
        repr(ident.name),
    )
    # other weight processing
    processed = {**good_meta, "processing": {f: True for f in PROCESSING_FLAGS}}
    _refused(
        _write(tmp_path / "proc.safetensors", {"blocks.1.hook_resid_post": torch.ones(ident.d_model)}, processed),
        model,
        "weight processing",
        "fold_ln",
    )
    # layer outside the model
    deep = f"blocks.{ident.n_layers}.hook_resid_post"
    _refused(
        _write(tmp_path / "deep.safetensors", {deep: torch.ones(ident.d_model)}, good_meta),
        model,
        f"layer {ident.n_layers}",
        f"0..{ident.n_layers - 1}",
    )
    # the same files load without a model where only the model disagrees
    assert load_vector(tmp_path / "other.safetensors").metadata.model_name == "some-other-model"


def test_processed_model_refuses_an_unprocessed_vector(tmp_path: Path) -> None:
    if "bridge" not in BACKENDS:
        pytest.skip("weight processing flags are set through the bridge's compatibility mode")
    plain = make_tiny("bridge")
    processed = make_tiny("bridge", process_weights=True)
    assert model_identity(processed).processing == {f: True for f in PROCESSING_FLAGS}
    path = model_vector(plain, [1]).save(tmp_path / "v.safetensors")
    _refused(path, processed, "weight processing")
    load_vector(path, plain)
