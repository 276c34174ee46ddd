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
_TENSOR_NAME = re.compile(r"^blocks\.(\d+)\.(hook_[a-z_]+)$")


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

    # ---- arithmetic ------------------------------------------------------------------------
    def _with(self, directions: Mapping[int, Tensor], **provenance: Any) -> SteeringVector:
        meta = dataclasses.replace(self.metadata, provenance={**self.metadata.provenance, **provenance})
        return SteeringVector(dict(directions), meta)

    def __mul__(self, scalar: float) -> SteeringVector:
        if not isinstance(scalar, (int, float)) or not math.isfinite(scalar):
            raise VectorError(f"a steering vector can only be scaled by a finite number, not {scalar!r}")
        return self._with({k: v * float(scalar) for k, v in self.directions.items()})

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
        return self._with(out)

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
        provenance={"operation": "sum", "parts": [v.metadata.to_json() for v in vectors]},
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
        provenance={"operation": "mean", "weights": list(weights), "parts": [v.metadata.to_json() for v in vectors]},
    )
    return SteeringVector(dict(summed.directions), meta)


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
        return _checked_vector(
            path, imported.directions, VectorMetadata.from_json(imported.metadata, source=str(path)), model
        )
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


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
