"""The spec languages of the command line and of configuration files, one parser per kind.

- layer lists (`parse_layers`): an int, a JSON list of ints, or text '15', '10-14', '3,5,7', '10-14,20' (ranges
  inclusive); sorted and distinct, 0-based, checked against the model's depth when it is given;
- integer lists (`parse_ints`, e.g. seeds): the same grammar, any non-negative integers;
- coefficient grids (`parse_coeffs`): 'start:stop:step' (stop included) or a list '-1,0.5,2'; sorted and distinct;
- name lists (`parse_names`, e.g. axes, BBQ categories, baselines): 'age, religion' or a list of names; each checked
  against the valid names or canonicalised by a resolver, first of duplicates kept, order kept.

Every error is one line naming the spec and how to write it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from lens_steer.errors import LensSteerError


def _ints(spec: Any, what: str) -> list[int]:
    """The integers a spec names, in order, with ranges expanded; raises on unreadable or backwards parts."""
    bad = LensSteerError(f"cannot read {what} {spec!r}; write one like 15, a range like '10-14' or a list like '3,5,7'")
    if isinstance(spec, bool):
        raise bad
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        if any(isinstance(x, bool) or not isinstance(x, int) for x in spec):
            raise bad
        return list(spec)
    if not isinstance(spec, str):
        raise bad
    out: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        try:
            cut = part.find("-", 1)
            a, b = (int(part[:cut]), int(part[cut + 1 :])) if cut > 0 else (int(part), int(part))
        except ValueError:
            raise bad from None
        if b < a:
            raise LensSteerError(f"{what} {spec!r}: range {part!r} runs backwards; write low-high like '{b}-{a}'")
        out.extend(range(a, b + 1))
    return out


def parse_ints(spec: Any, what: str = "integers") -> tuple[int, ...]:
    """Non-negative integers (e.g. seeds) from an int, a list, or text like '1,2,3' or '1-3'; sorted and distinct."""
    out = _ints(spec, what)
    if not out:
        raise LensSteerError(f"no {what} given in {spec!r}; write e.g. '1,2,3' or '1-3'")
    if min(out) < 0:
        raise LensSteerError(f"{what} {spec!r}: {min(out)} is negative; give non-negative integers")
    return tuple(sorted(set(out)))


def parse_layers(spec: Any, what: str = "layers", n_layers: int | None = None) -> tuple[int, ...]:
    """0-based layer indices from an int, a list of ints, or text like '15', '10-14', '3,5,7'; sorted and distinct.
    With `n_layers`, every layer must lie in 0..n_layers-1."""
    out = _ints(spec, what)
    if not out:
        raise LensSteerError(f"no {what} given in {spec!r}; write e.g. '10,15' or '10-15'")
    if min(out) < 0:
        raise LensSteerError(
            f"{what} {spec!r}: {min(out)} is negative; give 0-based block indices (`lens-steer info` lists a model's "
            "layers)"
        )
    if n_layers is not None and max(out) >= n_layers:
        raise LensSteerError(f"layer {max(out)} in {spec!r} is outside the model's layers 0..{n_layers - 1}")
    return tuple(sorted(set(out)))


def layer_label(layers: Sequence[int]) -> str:
    """The text `parse_layers` reads back: '15' for one layer, '13-25' for a contiguous band, else '3,5,7'."""
    ls = sorted(set(int(x) for x in layers))
    if len(ls) == 1:
        return str(ls[0])
    if ls == list(range(ls[0], ls[-1] + 1)):
        return f"{ls[0]}-{ls[-1]}"
    return ",".join(str(x) for x in ls)


def parse_coeffs(text: str, what: str = "coefficient grid") -> tuple[float, ...]:
    """'-2:2:0.5' (start:stop:step, stop included) or '0.5,1,2' into sorted, distinct, finite coefficients."""
    spec = text.strip()
    try:
        if ":" in spec:
            parts = [float(p) for p in spec.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or not all(math.isfinite(p) for p in parts):
                raise LensSteerError(f"{what} {text!r} needs a positive finite step; write e.g. '-2:2:0.5'")
            n = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 10) for i in range(max(n, 0))]
        else:
            values = [float(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise LensSteerError(
            f"cannot read {what} {text!r}; write start:stop:step like '-2:2:0.5' or a list like '-1,1'"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise LensSteerError(
            f"{what} {text!r} holds a non-finite value; write finite numbers like '-2:2:0.5' or '-1,1'"
        )
    if not values:
        raise LensSteerError(f"{what} {text!r} is empty (stop below start?); write e.g. '-2:2:0.5'")
    return tuple(sorted(set(0.0 if v == 0 else v for v in values)))


def parse_names(
    spec: str | Sequence[str],
    what: str,
    valid: Sequence[str] | None = None,
    *,
    resolve: Callable[[str], str] | None = None,
    error: type[LensSteerError] = LensSteerError,
) -> tuple[str, ...]:
    """The names in a comma list 'a, b' (or a sequence of names): stripped, empty parts dropped, each mapped by
    `resolve` (e.g. an alias to its canonical name; it raises its own one-line error for an unknown one), the first
    of duplicates kept, in order; at least one. With `valid`, a name outside it is a one-line `error` listing it."""
    if isinstance(spec, str):
        parts = spec.split(",")
    elif isinstance(spec, Sequence) and all(isinstance(x, str) for x in spec):
        parts = list(spec)
    else:
        raise error(f"cannot read {what} list {spec!r}; write names separated by commas, like 'a,b'")
    names = [p.strip() for p in parts if p.strip()]
    choices = f" of {', '.join(valid)}" if valid is not None else ""
    if not names:
        raise error(f"empty {what} list; name at least one{choices}")
    if resolve is not None:
        names = [resolve(n) for n in names]
    for n in names:
        if valid is not None and n not in valid:
            raise error(f"unknown {what} {n!r}; choose one{choices}")
    return tuple(dict.fromkeys(names))


__all__ = ["layer_label", "parse_coeffs", "parse_ints", "parse_layers", "parse_names"]
