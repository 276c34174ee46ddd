"""Interventions on the residual stream as values: one class per kind, each a position-wise edit of the activation
at its hook points, with a digest, a JSON description and a matched random control of its own kind.

Every edit is a function of one position's activation alone, so an intervention gives the same numbers under a
prefix tree, a KV cache or one full forward per item. Kinds (`KINDS`):

- `additive`: x + c * v_l at each of the vector's layers (one layer, a band or all layers); `optimized` is the same
  edit with a vector fitted by gradient (BiPO / ReFT-lite).
- `ablation`: x - (x . u_l) u_l, u_l a unit direction (directional ablation; usually every layer).
- `ace`: affine concept editing, x - (x . u_l) u_l + (mu_l . u_l) u_l: the projection set to a reference mean's;
  `model_diff` is the same edit along the organism-minus-base direction with the base model's mean as reference.
- `leace`: LEACE erasure x - P_l (x - b_l), P_l = L_l R_l of rank k (fitted by the `concept-erasure` package).
- `gated`: x + c * v_l where a linear probe on the same hook's activation fires (sigmoid(x . w_l + b_l) > 0.5),
  token by token (CAST / FairSteer).

Random controls keep what an intervention's size is made of (per-layer norms, rank, reference, probe) and draw
its directions at random: the same kind, the same layers, the same strength.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import VectorError
from lens_steer.files import atomic_write_bytes
from lens_steer.steering.vectors import SteeringVector, VectorMetadata, hook_name

INTERVENTION_KEY = "lens_steer_intervention"  # safetensors metadata key of an intervention file


def _unit(v: Tensor, what: str) -> Tensor:
    """`v` at unit length (left as it is when it already is, so a saved direction reads back bit for bit)."""
    n = float(v.norm())
    if not math.isfinite(n) or n == 0:
        raise VectorError(
            f"{what} is zero or not finite and has no direction; fit it on data that separates the classes"
        )
    return v if abs(n - 1.0) < 1e-6 else v / n


def _random_directions(layers: tuple[int, ...], d_model: int, seed: int, salt: str) -> dict[int, Tensor]:
    """A seeded random unit direction per layer (Gaussian, normalised), independent of the order layers are asked."""
    out = {}
    for layer in layers:
        g = torch.Generator().manual_seed(int(hashlib.sha256(f"{salt}:{seed}:{layer}".encode()).hexdigest()[:12], 16))
        out[layer] = _unit(torch.randn(d_model, generator=g), "a random direction")
    return out


@dataclasses.dataclass(frozen=True)
class Intervention:
    """What every kind has: metadata (model, width, hook kind, provenance) and per-layer tensors; `edit` is the
    position-wise function applied at `blocks.{layer}.{hook}`."""

    kind: ClassVar[str] = "intervention"
    metadata: VectorMetadata

    # ---- what subclasses define ---------------------------------------------------------------
    @property
    def layers(self) -> tuple[int, ...]:
        """The layers edited, ascending."""
        raise NotImplementedError

    def edit(self, layer: int, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The edited activation at `layer` (same shape, dtype and device as `x`)."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The JSON-able parameters that are not tensors (coefficients, ranks, where the data came from)."""
        return {}

    def tensors(self) -> dict[str, Tensor]:
        """Every tensor that determines the edit, by name (`{layer}.{role}`)."""
        raise NotImplementedError

    def random_control(self, seed: int) -> Intervention:
        """The matched random control: the same kind, layers and strength, directions drawn at random (seeded)."""
        raise NotImplementedError

    # ---- shared --------------------------------------------------------------------------------
    @property
    def hook_names(self) -> dict[int, str]:
        """`{layer: hook point name}`."""
        return {layer: hook_name(layer, self.metadata.hook) for layer in self.layers}

    def describe(self) -> dict[str, Any]:
        """Kind, hook, layers and parameters: what a report or a store key says of it (no tensors)."""
        return {"kind": self.kind, "hook": self.metadata.hook, "layers": list(self.layers), **self.params()}

    def digest(self) -> str:
        """A hash of the kind, parameters and every tensor's values: two interventions with one digest edit alike."""
        h = hashlib.sha256(json.dumps(self.describe(), sort_keys=True, default=str).encode())
        for name, t in sorted(self.tensors().items()):
            h.update(name.encode())
            h.update(t.detach().to(torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def check_compatible(self, model: Any) -> None:
        """Raise a one-line VectorError unless the intervention fits `model` (width, layers, name, processing)."""
        probe = SteeringVector({self.layers[0]: torch.zeros(self.metadata.d_model)}, self.metadata)
        probe.check_compatible(model)
        n_layers = int(model.cfg.n_layers)
        bad = [layer for layer in self.layers if layer >= n_layers]
        if bad:
            raise VectorError(
                f"{self.kind} intervention layer {bad[0]} is outside the model's layers 0..{n_layers - 1}"
            )

    def __repr__(self) -> str:
        layers = self.layers
        span = f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]} ({len(layers)} layers)"
        extra = ", ".join(
            f"{k}={v}" for k, v in self.params().items() if k != "provenance" and not isinstance(v, (dict, list))
        )
        return (
            f"{type(self).__name__}({self.metadata.model_name}, {self.metadata.hook} "
            f"{span}{', ' + extra if extra else ''})"
        )

    def save(self, path: str | Path) -> Path:
        """Write safetensors: the tensors by name, kind / parameters / metadata as JSON."""
        from safetensors.torch import save

        header = {"kind": self.kind, "params": self.params(), "metadata": self.metadata.to_json()}
        tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in self.tensors().items()}
        return atomic_write_bytes(path, save(tensors, metadata={INTERVENTION_KEY: json.dumps(header)}))


def _per_layer(tensors: Mapping[str, Tensor], role: str) -> dict[int, Tensor]:
    return {int(k.split(".")[0]): v for k, v in tensors.items() if k.split(".", 1)[1] == role}


# ---- additive ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, repr=False)
class Additive(Intervention):
    """x + coeff * v_l at each layer of `vector` (a steering vector: one layer, a band, or every layer)."""

    kind: ClassVar[str] = "additive"
    vector: SteeringVector = dataclasses.field(default=None)  # type: ignore[assignment]
    coeff: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.vector, SteeringVector):
            raise VectorError(f"{self.kind} needs a SteeringVector, got {type(self.vector).__name__}")
        if not isinstance(self.coeff, (int, float)) or not math.isfinite(self.coeff):
            raise VectorError(f"steering coefficient must be a finite number, got {self.coeff!r}")

    @classmethod
    def of(cls, vector: SteeringVector, coeff: float) -> Additive:
        """`coeff * vector`, with the vector's own metadata."""
        return cls(vector.metadata, vector, float(coeff))

    @property
    def layers(self) -> tuple[int, ...]:
        return self.vector.layers

    def edit(self, layer: int, x: Tensor) -> Tensor:
        return x + (self.coeff * self.vector.directions[layer]).to(device=x.device, dtype=x.dtype)

    def params(self) -> dict[str, Any]:
        return {"coeff": float(self.coeff), "method": self.vector.metadata.method}

    def tensors(self) -> dict[str, Tensor]:
        return {f"{layer}.vector": v for layer, v in self.vector.directions.items()}

    def random_control(self, seed: int) -> Intervention:
        dirs = _random_directions(self.layers, self.metadata.d_model, seed, "additive")
        norms = self.vector.norms()
        meta = dataclasses.replace(
            self.metadata, method="random_control", provenance={"operation": "random_control", "seed": seed}
        )
        rand = SteeringVector({layer: dirs[layer] * norms[layer] for layer in self.layers}, meta)
        return dataclasses.replace(self, metadata=meta, vector=rand)


@dataclasses.dataclass(frozen=True, repr=False)
class OptimizedVector(Additive):
    """An additive vector fitted by gradient on the behaviour itself (BiPO / ReFT-lite); applied as `Additive`."""

    kind: ClassVar[str] = "optimized"


# ---- projections -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, repr=False)
class DirectionalAblation(Intervention):
    """x - (x . u_l) u_l at every layer of `directions` (each normalised to unit length)."""

    kind: ClassVar[str] = "ablation"
    directions: Mapping[int, Tensor] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise VectorError(f"a {self.kind} intervention needs at least one layer")
        clean = {
            int(k): _unit(torch.as_tensor(v, dtype=torch.float32).reshape(-1), f"layer {k}'s direction")
            for k, v in sorted(self.directions.items())
        }
        for layer, u in clean.items():
            if u.shape[0] != self.metadata.d_model:
                raise VectorError(
                    f"layer {layer} direction has width {u.shape[0]} but d_model is {self.metadata.d_model}"
                )
        object.__setattr__(self, "directions", clean)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.directions)

    def edit(self, layer: int, x: Tensor) -> Tensor:
        u = self.directions[layer].to(device=x.device, dtype=x.dtype)
        return x - (x @ u)[..., None] * u

    def tensors(self) -> dict[str, Tensor]:
        return {f"{layer}.direction": u for layer, u in self.directions.items()}

    def random_control(self, seed: int) -> Intervention:
        meta = dataclasses.replace(
            self.metadata, method="random_control", provenance={"operation": "random_control", "seed": seed}
        )
        return dataclasses.replace(
            self, metadata=meta, directions=_random_directions(self.layers, self.metadata.d_model, seed, self.kind)
        )


@dataclasses.dataclass(frozen=True, repr=False)
class AffineEdit(DirectionalAblation):
    """Affine concept editing (ACE): x - (x . u_l) u_l + (mu_l . u_l) u_l, mu_l a reference mean activation."""

    kind: ClassVar[str] = "ace"
    reference: Mapping[int, Tensor] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if set(self.reference) != set(self.directions):
            raise VectorError(
                f"{self.kind}: the reference means' layers {sorted(self.reference)} differ from the directions' "
                f"{list(self.directions)}"
            )
        object.__setattr__(
            self,
            "reference",
            {int(k): torch.as_tensor(v, dtype=torch.float32).reshape(-1) for k, v in sorted(self.reference.items())},
        )

    def edit(self, layer: int, x: Tensor) -> Tensor:
        u = self.directions[layer].to(device=x.device, dtype=x.dtype)
        target = float(self.reference[layer] @ self.directions[layer])
        return x + (target - x @ u)[..., None] * u

    def tensors(self) -> dict[str, Tensor]:
        return {**super().tensors(), **{f"{layer}.reference": m for layer, m in self.reference.items()}}


@dataclasses.dataclass(frozen=True, repr=False)
class ModelDiffEdit(AffineEdit):
    """ACE along the organism-minus-base mean difference per layer, the base model's mean as reference (model
    diffing)."""

    kind: ClassVar[str] = "model_diff"


@dataclasses.dataclass(frozen=True, repr=False)
class LeaceErasure(Intervention):
    """LEACE: x - ((x - b_l) @ R_l^T) @ L_l^T per layer, with L_l `[d_model, k]`, R_l `[k, d_model]`, b_l
    `[d_model]`."""

    kind: ClassVar[str] = "leace"
    proj_left: Mapping[int, Tensor] = dataclasses.field(default_factory=dict)
    proj_right: Mapping[int, Tensor] = dataclasses.field(default_factory=dict)
    bias: Mapping[int, Tensor] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.proj_left or set(self.proj_left) != set(self.proj_right) or set(self.bias) != set(self.proj_left):
            raise VectorError("a leace intervention needs proj_left, proj_right and bias at the same, non-empty layers")
        d = self.metadata.d_model
        for layer in self.proj_left:
            left, right = self.proj_left[layer], self.proj_right[layer]
            if (
                left.ndim != 2
                or left.shape[0] != d
                or right.shape != (left.shape[1], d)
                or self.bias[layer].shape != (d,)
            ):
                raise VectorError(f"leace layer {layer}: expected proj_left [{d}, k], proj_right [k, {d}], bias [{d}]")
        for name in ("proj_left", "proj_right", "bias"):
            object.__setattr__(
                self, name, {int(k): v.detach().to(torch.float32) for k, v in sorted(getattr(self, name).items())}
            )

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.proj_left)

    @property
    def rank(self) -> int:
        """The erased subspace's dimension."""
        return int(next(iter(self.proj_left.values())).shape[1])

    def edit(self, layer: int, x: Tensor) -> Tensor:
        left = self.proj_left[layer].to(device=x.device, dtype=x.dtype)
        right = self.proj_right[layer].to(device=x.device, dtype=x.dtype)
        b = self.bias[layer].to(device=x.device, dtype=x.dtype)
        return x - ((x - b) @ right.T) @ left.T

    def params(self) -> dict[str, Any]:
        return {"rank": self.rank}

    def tensors(self) -> dict[str, Tensor]:
        out = {}
        for layer in self.layers:
            out.update(
                {
                    f"{layer}.proj_left": self.proj_left[layer],
                    f"{layer}.proj_right": self.proj_right[layer],
                    f"{layer}.bias": self.bias[layer],
                }
            )
        return out

    def random_control(self, seed: int) -> Intervention:
        """An orthogonal projection onto a random subspace of the same rank, about the same bias."""
        d, k = self.metadata.d_model, self.rank
        left, right = {}, {}
        for layer in self.layers:
            g = torch.Generator().manual_seed(
                int(hashlib.sha256(f"leace:{seed}:{layer}".encode()).hexdigest()[:12], 16)
            )
            q, _ = torch.linalg.qr(torch.randn(d, k, generator=g))
            left[layer], right[layer] = q, q.T.contiguous()
        meta = dataclasses.replace(
            self.metadata, method="random_control", provenance={"operation": "random_control", "seed": seed}
        )
        return dataclasses.replace(self, metadata=meta, proj_left=left, proj_right=right)


# ---- gated -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, repr=False)
class GatedAdditive(Additive):
    """x + coeff * v_l at the positions where a linear probe on the same activation fires:
    sigmoid(x . w_l + b_l) > 0.5."""

    kind: ClassVar[str] = "gated"
    probe_weight: Mapping[int, Tensor] = dataclasses.field(default_factory=dict)
    probe_bias: Mapping[int, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if set(self.probe_weight) != set(self.vector.layers) or set(self.probe_bias) != set(self.vector.layers):
            raise VectorError(
                f"gated: a probe is needed at every steered layer {list(self.vector.layers)}, got "
                f"{sorted(self.probe_weight)}"
            )
        object.__setattr__(
            self,
            "probe_weight",
            {int(k): torch.as_tensor(v, dtype=torch.float32).reshape(-1) for k, v in sorted(self.probe_weight.items())},
        )
        object.__setattr__(self, "probe_bias", {int(k): float(v) for k, v in sorted(self.probe_bias.items())})

    def gate(self, layer: int, x: Tensor) -> Tensor:
        """Whether the probe fires at each position: bools of `x`'s shape without its last axis."""
        w = self.probe_weight[layer].to(device=x.device, dtype=x.dtype)
        return (x @ w + self.probe_bias[layer]) > 0  # sigmoid(z) > 0.5  <=>  z > 0

    def edit(self, layer: int, x: Tensor) -> Tensor:
        delta = (self.coeff * self.vector.directions[layer]).to(device=x.device, dtype=x.dtype)
        return x + self.gate(layer, x)[..., None].to(x.dtype) * delta

    def params(self) -> dict[str, Any]:
        return {**super().params(), "probe_bias": {str(k): v for k, v in self.probe_bias.items()}}

    def tensors(self) -> dict[str, Tensor]:
        return {**super().tensors(), **{f"{layer}.probe_weight": w for layer, w in self.probe_weight.items()}}


def intervention_of(
    vector: SteeringVector | None, coeff: float, intervention: Intervention | None
) -> Intervention | None:
    """The one intervention a call asks for: `intervention`, or `coeff * vector` as `Additive`, or None (nothing,
    or a vector at coefficient 0); both at once is an error."""
    if intervention is not None:
        if vector is not None:
            raise VectorError("pass either an intervention or a vector with a coefficient, not both")
        return intervention
    if vector is None or coeff == 0:
        return None
    return Additive.of(vector, coeff)


KINDS: dict[str, type[Intervention]] = {
    cls.kind: cls
    for cls in (Additive, OptimizedVector, DirectionalAblation, AffineEdit, ModelDiffEdit, LeaceErasure, GatedAdditive)
}


def load_intervention(path: str | Path, model: Any = None) -> Intervention:
    """Read a file written by `Intervention.save`; with `model`, refuse one that does not fit it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise VectorError(f"intervention file {path} does not exist; write it with Intervention.save")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get(INTERVENTION_KEY)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise VectorError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]})") from None
    if header is None:
        raise VectorError(
            f"{path} has no '{INTERVENTION_KEY}' metadata; it is not an intervention file (a steering vector loads "
            "with load_vector)"
        )
    obj = json.loads(header)
    kind = obj.get("kind")
    if kind not in KINDS:
        raise VectorError(f"{path}: unknown intervention kind {kind!r}; known: {', '.join(KINDS)}")
    meta = VectorMetadata.from_json(obj["metadata"], source=str(path))
    params = obj.get("params", {})
    cls = KINDS[kind]
    if issubclass(cls, Additive):
        vector = SteeringVector(_per_layer(tensors, "vector"), meta)
        extra: dict[str, Any] = {}
        if cls is GatedAdditive:
            extra = {
                "probe_weight": _per_layer(tensors, "probe_weight"),
                "probe_bias": {int(k): v for k, v in params["probe_bias"].items()},
            }
        out: Intervention = cls(meta, vector, float(params["coeff"]), **extra)  # type: ignore[call-arg]
    elif cls is LeaceErasure:
        out = LeaceErasure(
            meta, _per_layer(tensors, "proj_left"), _per_layer(tensors, "proj_right"), _per_layer(tensors, "bias")
        )
    elif issubclass(cls, AffineEdit):
        out = cls(meta, _per_layer(tensors, "direction"), _per_layer(tensors, "reference"))  # type: ignore[call-arg]
    else:
        out = cls(meta, _per_layer(tensors, "direction"))  # type: ignore[call-arg]
    if model is not None:
        out.check_compatible(model)
    return out


__all__ = [
    "KINDS",
    "Additive",
    "AffineEdit",
    "DirectionalAblation",
    "GatedAdditive",
    "Intervention",
    "LeaceErasure",
    "ModelDiffEdit",
    "OptimizedVector",
    "intervention_of",
    "load_intervention",
]
