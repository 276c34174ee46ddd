"""The registry of the nine bias axes: BBQ category, default prompt corpus, CrowS-Pairs type, ready pairs.

Default corpora follow the reference code where an axis has its own corpus in
`prompt_corpora/` (age, disability, gender, race, religion, socioeconomic, sexuality).
Nationality and physical appearance have none; both default to `genericqa`, the mixed
bias-themed question corpus, because it is the one that holds questions about them
(26 of its 500 prompts are about nationality, immigrants or accents, against 2 in `race`;
it asks about weight, tattoos and looks, which `generic`, a set of neutral tasks, never does).

`ready_pairs` names the `prompt_corpora/pairs/` files on the axis's theme; StereoSet's
"race" domain is mostly countries and nationalities, so it serves both race/ethnicity and
nationality.
"""

from __future__ import annotations

from dataclasses import dataclass

from lens_steer.errors import LensSteerError


@dataclass(frozen=True)
class Axis:
    """One bias axis and where its data comes from."""

    name: str
    bbq_category: str
    default_corpus: str
    crows_bias_type: str | None
    ready_pairs: tuple[str, ...]


AXES: dict[str, Axis] = {
    a.name: a
    for a in (
        Axis("age", "Age", "age", "age", ()),
        Axis("disability", "Disability_status", "disability", "disability", ()),
        Axis("gender_identity", "Gender_identity", "gender", "gender", ("stereoset-gender",)),
        Axis("nationality", "Nationality", "genericqa", "nationality", ("stereoset-race",)),
        Axis("physical_appearance", "Physical_appearance", "genericqa", "physical-appearance", ()),
        Axis("race_ethnicity", "Race_ethnicity", "race", "race-color", ("stereoset-race",)),
        Axis("religion", "Religion", "religion", "religion", ("stereoset-religion",)),
        Axis("ses", "SES", "socioeconomic", "socioeconomic", ()),
        Axis("sexual_orientation", "Sexual_orientation", "sexuality", "sexual-orientation", ()),
    )
}

AXIS_NAMES: tuple[str, ...] = tuple(AXES)

# The intersectional BBQ categories, held out of every optimisation (out-of-distribution axes).
OOD_CATEGORIES: tuple[str, ...] = ("Race_x_gender", "Race_x_SES")

_ALIASES: dict[str, str] = {
    "gender": "gender_identity",
    "race": "race_ethnicity",
    "ethnicity": "race_ethnicity",
    "race_color": "race_ethnicity",
    "disability_status": "disability",
    "sexuality": "sexual_orientation",
    "socioeconomic": "ses",
    "socioeconomic_status": "ses",
    "appearance": "physical_appearance",
}


def _norm(name: str) -> str:
    """Lower-case, with '-', ' ' and '/' read as '_'."""
    out = name.strip().lower()
    for ch in "- /":
        out = out.replace(ch, "_")
    return out


def _lookup() -> dict[str, str]:
    table = {_norm(a.name): a.name for a in AXES.values()}
    table.update({_norm(a.bbq_category): a.name for a in AXES.values()})
    table.update({_norm(a.crows_bias_type): a.name for a in AXES.values() if a.crows_bias_type})
    table.update(_ALIASES)
    return table


_LOOKUP = _lookup()


def get_axis(name: str) -> Axis:
    """The axis called `name`: its snake name, BBQ category, CrowS-Pairs type or a common alias."""
    if not isinstance(name, str):
        raise LensSteerError(f"axis must be a string, got {type(name).__name__}; valid axes: {', '.join(AXIS_NAMES)}")
    key = _norm(name)
    if key in _LOOKUP:
        return AXES[_LOOKUP[key]]
    if key in {_norm(c) for c in OOD_CATEGORIES}:
        raise LensSteerError(
            f"{name!r} is an out-of-distribution BBQ category, not an axis; valid axes: {', '.join(AXIS_NAMES)}"
        )
    raise LensSteerError(f"unknown axis {name!r}; valid axes: {', '.join(AXIS_NAMES)}")
