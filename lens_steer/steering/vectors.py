"""The `SteeringVector` value: one direction per layer at a named hook point, with metadata and a file format."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import VectorError
from lens_steer.files import atomic_write_bytes
from lens_steer.steering.formats import detect_format, read_vector_file
from lens_steer.version import __version__

if TYPE_CHECKING:
    from lens_steer.model.load import HookedModel
    from lens_steer.steering.hooks import PositionMode

HOOK_KINDS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
METADATA_KEY = "lens_steer"
# What coefficient 1 means, by the provenance "scale" a vector records (lens_steer.extract.activations writes the first
# three; "file" is an imported file's own coefficients; a scaled vector records "<factor> x <scale>").
SCALE_MEANINGS: dict[str, str] = {
    "contrast": "the mean positive-negative difference at each layer",
    "unit": "a unit-length direction at each layer",
    "raw": "the aggregator's output (mean_diff: the mean difference; PCA: unit length)",
    "file": "what the imported file applies (its coefficients multiplied in)",
}
_TENSOR_NAME = re.compile(r"^blocks\.(\d+)\.(hook_[a-z_]+)$")
_SCALED = re.compile(r"^(-?[0-9.]+(?:e[-+]?[0-9]+)?) x (.+)$")


def hook_name(layer: int, hook: str = "hook_resid_post") -> str:
    """The TransformerLens hook point name of `hook` in block `layer`."""
    if hook not in HOOK_KINDS:
        raise VectorError(f"unknown hook {hook!r}: use one of {', '.join(HOOK_KINDS)}")
    return f"blocks.{layer}.{hook}"


@dataclasses.dataclass(frozen=True)
class VectorMetadata:
    """Where a vector came from and what it is valid for."""

    model_name: str
    d_model: int
    hook: str = "hook_resid_post"
    method: str = "unknown"
    token_position: str = "last"
    processing: Mapping[str, bool] = dataclasses.field(default_factory=dict)
    provenance: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    lens_steer_version: str = __version__

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of every field."""
        return {
            "model_name": self.model_name,
            "d_model": self.d_model,
            "hook": self.hook,
            "method": self.method,
            "token_position": self.token_position,
            "processing": dict(self.processing),
            "provenance": _jsonable(self.provenance),
            "lens_steer_version": self.lens_steer_version,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], *, source: str = "metadata") -> VectorMetadata:
        """Parse `to_json` output; names the missing field on error."""
        try:
            return cls(
                model_name=str(obj["model_name"]),
                d_model=int(obj["d_model"]),
                hook=str(obj.get("hook", "hook_resid_post")),
                method=str(obj.get("method", "unknown")),
                token_position=str(obj.get("token_position", "last")),
                processing={str(k): bool(v) for k, v in dict(obj.get("processing", {})).items()},
                provenance=dict(obj.get("provenance", {})),
                lens_steer_version=str(obj.get("lens_steer_version", "unknown")),
            )
        except KeyError as e:
            raise VectorError(
                f"{source}: lens_steer metadata lacks field {e.args[0]!r}; re-save the vector with lens_steer"
            ) from None


@dataclasses.dataclass(frozen=True)
class SteeringVector:
    """Directions `{layer: [d_model]}` added at `blocks.{layer}.{metadata.hook}`."""

    directions: Mapping[int, Float[Tensor, " d_model"]]
    metadata: VectorMetadata

    def __post_init__(self) -> None:
        if not self.directions:
            raise VectorError("a steering vector needs at least one layer")
        clean: dict[int, Tensor] = {}
        for layer, vec in sorted(self.directions.items()):
            if not isinstance(layer, int) or layer < 0:
                raise VectorError(f"layer {layer!r} must be a non-negative int")
            vec = torch.as_tensor(vec).detach().to(dtype=torch.float32, device="cpu").reshape(-1)
            if vec.shape[0] != self.metadata.d_model:
                raise VectorError(
                    f"layer {layer} direction has width {vec.shape[0]} but d_model is {self.metadata.d_model}; "
                    "extract the vector from the model it is meant for"
                )
            if not torch.isfinite(vec).all():
                raise VectorError(f"layer {layer} direction contains NaN or inf; re-extract the vector")
            clean[layer] = vec
        object.__setattr__(self, "directions", clean)
        hook_name(0, self.metadata.hook)  # validates the hook kind

    # ---- views -----------------------------------------------------------------------------
    @property
    def layers(self) -> tuple[int, ...]:
        """The steered layers, ascending."""
        return tuple(self.directions)

    @property
    def hook_names(self) -> dict[int, str]:
        """`{layer: hook point name}`."""
        return {layer: hook_name(layer, self.metadata.hook) for layer in self.directions}

    def norms(self) -> dict[int, float]:
        """L2 norm of each layer's direction."""
        return {layer: float(v.norm()) for layer, v in self.directions.items()}

    @property
    def scale(self) -> str | None:
        """What coefficient 1 means (provenance "scale"; see SCALE_MEANINGS), None where the vector does not say."""
        scale = self.metadata.provenance.get("scale")
        return str(scale) if scale is not None else None

    @property
    def coeff(self) -> float | None:
        """The coefficient chosen for this vector (an ISV's, provenance "coeff"), None where none was chosen."""
        coeff = self.metadata.provenance.get("coeff")
        return float(coeff) if isinstance(coeff, (int, float)) and not isinstance(coeff, bool) else None

    def __repr__(self) -> str:
        meta = self.metadata
        name = meta.model_name if len(meta.model_name) <= 48 else "..." + meta.model_name[-45:]
        coeff = f", coeff={self.coeff:g}" if self.coeff is not None else ""
        return (
            f"SteeringVector(model={name!r}, hook={meta.hook!r}, layers={layer_summary(self.layers)}, "
            f"norms={norm_summary(self.norms())}, method={meta.method!r}, scale={self.scale!r}{coeff})"
        )

    # ---- arithmetic (a result keeps no stored coefficient: that was chosen for the vector it came from) --------
    def _with(self, directions: Mapping[int, Tensor], **provenance: Any) -> SteeringVector:
        kept = {k: v for k, v in self.metadata.provenance.items() if k != "coeff"}
        meta = dataclasses.replace(self.metadata, provenance={**kept, **provenance})
        return SteeringVector(dict(directions), meta)

    def __mul__(self, scalar: float) -> SteeringVector:
        if not isinstance(scalar, (int, float)) or not math.isfinite(scalar):
            raise VectorError(f"a steering vector can only be scaled by a finite number, not {scalar!r}")
        scaled = {k: v * float(scalar) for k, v in self.directions.items()}
        if self.scale is None or scalar == 1:
            return self._with(scaled)
        factor, base = scale_factor(self.scale)
        return self._with(scaled, scale=f"{factor * float(scalar):g} x {base}")

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> SteeringVector:
        if scalar == 0:
            raise VectorError("cannot divide a steering vector by 0")
        return self * (1.0 / scalar)

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return sum_vectors([self, other])

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return sum_vectors([self, -other])

    def normalized(self) -> SteeringVector:
        """Each layer's direction scaled to unit length."""
        out = {}
        for layer, v in self.directions.items():
            n = v.norm()
            if n == 0:
                raise VectorError(f"layer {layer} direction is zero and cannot be normalised")
            out[layer] = v / n
        return self._with(out, scale="unit")

    def select_layers(self, layers: Sequence[int]) -> SteeringVector:
        """The same vector restricted to `layers`."""
        missing = [layer for layer in layers if layer not in self.directions]
        if missing:
            raise VectorError(f"vector has no layer {missing[0]}; it has layers {list(self.layers)}")
        return self._with({layer: self.directions[layer] for layer in layers})

    # ---- compatibility -----------------------------------------------------------------------
    def check_compatible(self, model: HookedModel) -> None:
        """Raise a one-line VectorError unless the vector fits `model` (width, layers, name, processing)."""
        from lens_steer.model.load import model_identity

        ident = model_identity(model)
        meta = self.metadata
        if meta.d_model != ident.d_model:
            raise VectorError(
                f"vector width {meta.d_model} does not match model {ident.name!r} (d_model {ident.d_model}); "
                f"it was extracted from {meta.model_name!r}"
            )
        if meta.model_name != ident.name:
            raise VectorError(
                f"vector was extracted from model {meta.model_name!r}, not {ident.name!r}; "
                "extract a new vector from this model"
            )
        bad = [layer for layer in self.directions if layer >= ident.n_layers]
        if bad:
            raise VectorError(f"vector layer {bad[0]} is outside the model's layers 0..{ident.n_layers - 1}")
        if meta.processing and dict(meta.processing) != dict(ident.processing):
            raise VectorError(
                f"vector was extracted with weight processing {dict(meta.processing)} but the model has "
                f"{dict(ident.processing)}; load the model with the same processing"
            )

    @contextmanager
    def apply(self, model: HookedModel, coeff: float = 1.0, positions: PositionMode = "all") -> Iterator[None]:
        """Context manager adding `coeff * direction` at the vector's hook points while open."""
        from lens_steer.steering.hooks import steer

        with steer(model, [(self, coeff)], positions=positions):
            yield

    # ---- file format -----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write safetensors: one `[d_model]` float32 tensor per hook point, metadata JSON under 'lens_steer'."""
        from safetensors.torch import save

        tensors = {self.hook_names[layer]: v.contiguous() for layer, v in self.directions.items()}
        blob = save(tensors, metadata={METADATA_KEY: json.dumps(self.metadata.to_json())})
        return atomic_write_bytes(path, blob)


def sum_vectors(vectors: Sequence[SteeringVector]) -> SteeringVector:
    """Per-layer sum over the union of layers; vectors must share model, width and hook."""
    _check_same_space(vectors)
    out: dict[int, Tensor] = {}
    for vec in vectors:
        for layer, v in vec.directions.items():
            out[layer] = out[layer] + v if layer in out else v.clone()
    first = vectors[0].metadata
    meta = dataclasses.replace(
        first,
        method="sum",
        provenance={"operation": "sum", "parts": [v.metadata.to_json() for v in vectors], **_common_scale(vectors)},
    )
    return SteeringVector(out, meta)


def mean_vectors(vectors: Sequence[SteeringVector], weights: Sequence[float] | None = None) -> SteeringVector:
    """Per-layer (weighted) mean; a layer missing from a vector counts as zero there."""
    _check_same_space(vectors)
    if weights is None:
        weights = [1.0] * len(vectors)
    if len(weights) != len(vectors) or not all(math.isfinite(w) for w in weights) or sum(weights) == 0:
        raise VectorError(f"need one finite weight per vector with a non-zero sum, got {list(weights)}")
    total = float(sum(weights))
    summed = sum_vectors([v * (w / total) for v, w in zip(vectors, weights)])
    meta = dataclasses.replace(
        summed.metadata,
        method="mean",
        provenance={
            "operation": "mean",
            "weights": list(weights),
            "parts": [v.metadata.to_json() for v in vectors],
            **_common_scale(vectors),
        },
    )
    return SteeringVector(dict(summed.directions), meta)


def _common_scale(vectors: Sequence[SteeringVector]) -> dict[str, str]:
    """`{"scale": s}` when every vector has scale s, else nothing (a sum or mean of them is in that unit)."""
    scales = {v.scale for v in vectors}
    return {"scale": str(scales.pop())} if len(scales) == 1 and None not in scales else {}


def scale_factor(scale: str) -> tuple[float, str]:
    """A scale as (factor, base scale): "2 x contrast" -> (2.0, "contrast"), "contrast" -> (1.0, "contrast")."""
    match = _SCALED.match(scale)
    return (float(match.group(1)), match.group(2)) if match else (1.0, scale)


def scale_meaning(scale: str | None) -> str:
    """What coefficient 1 means for a vector of `scale`, in words."""
    if scale is None:
        return "not recorded (the vector's own length)"
    factor, base = scale_factor(scale)
    words = SCALE_MEANINGS.get(base, base)
    return words if factor == 1 else f"{factor:g} x {words}"


def layer_summary(layers: Sequence[int]) -> str:
    """Layers in a short form: "[3]", "[3, 7]", "13-25 (13 layers)", or the first and last few of a long list."""
    layers = list(layers)
    if len(layers) <= 4:
        return str(layers)
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]} ({len(layers)} layers)"
    return f"[{', '.join(map(str, layers[:3]))}, ..., {layers[-1]}] ({len(layers)} layers)"


def norm_summary(norms: Mapping[int, float]) -> str:
    """Per-layer norms in a short form: each of up to four layers, else the range and the mean."""
    if len(norms) <= 4:
        return "{" + ", ".join(f"{layer}: {n:.3g}" for layer, n in norms.items()) + "}"
    values = list(norms.values())
    return f"{min(values):.3g}..{max(values):.3g} (mean {sum(values) / len(values):.3g})"


def _check_same_space(vectors: Sequence[SteeringVector]) -> None:
    if not vectors:
        raise VectorError("need at least one steering vector")
    first = vectors[0].metadata
    for vec in vectors[1:]:
        m = vec.metadata
        if (m.model_name, m.d_model, m.hook) != (first.model_name, first.d_model, first.hook):
            raise VectorError(
                f"cannot combine a vector for {m.model_name!r} ({m.d_model}, {m.hook}) with one for "
                f"{first.model_name!r} ({first.d_model}, {first.hook}); use vectors from one model and hook"
            )


def load_vector(path: str | Path, model: HookedModel | None = None) -> SteeringVector:
    """Read a vector written by `SteeringVector.save`, or imported from another tool's file (see
    `lens_steer.steering.formats`: lm-eval .pt, control-vector GGUF, plain {layer: tensor}); with `model`, refuse
    one that does not fit it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise VectorError(f"vector file {path} does not exist; create it with `lens-steer extract`")
    fmt = detect_format(path)
    if fmt != "lens_steer":
        imported = read_vector_file(path, fmt, model)
        meta = VectorMetadata.from_json(imported.metadata, source=str(path))
        return _checked_vector(path, imported.directions, _as_file_scale(meta), model)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise VectorError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    if METADATA_KEY not in header:
        raise VectorError(f"{path} has no '{METADATA_KEY}' metadata; it was not written by lens_steer")
    try:
        meta_obj = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise VectorError(f"{path}: '{METADATA_KEY}' metadata is not valid JSON ({e.msg})") from None
    meta = VectorMetadata.from_json(meta_obj, source=str(path))
    directions: dict[int, Tensor] = {}
    for name, tensor in tensors.items():
        match = _TENSOR_NAME.match(name)
        if not match or match.group(2) != meta.hook:
            raise VectorError(f"{path}: tensor {name!r} is not named blocks.<layer>.{meta.hook}")
        if tensor.ndim != 1:
            raise VectorError(f"{path}: tensor {name!r} has shape {tuple(tensor.shape)}, expected [{meta.d_model}]")
        directions[int(match.group(1))] = tensor
    return _checked_vector(path, directions, meta, model)


def _checked_vector(
    path: Path, directions: dict[int, Tensor], meta: VectorMetadata, model: HookedModel | None
) -> SteeringVector:
    try:
        vec = SteeringVector(directions, meta)
    except VectorError as e:
        raise VectorError(f"{path}: {e}") from None
    if model is not None:
        try:
            vec.check_compatible(model)
        except VectorError as e:
            raise VectorError(f"{path}: {e}") from None
    return vec


def _as_file_scale(meta: VectorMetadata) -> VectorMetadata:
    """An imported vector's metadata: coefficient 1 is what the file applies (its coefficients are multiplied in),
    so the scale is "file" and the exported vector's own scale and stored coefficient move under "exported"."""
    prov = dict(meta.provenance)
    before = {k: prov.pop(k) for k in ("scale", "coeff") if k in prov}
    return dataclasses.replace(meta, provenance={**prov, "scale": "file", **({"exported": before} if before else {})})


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
