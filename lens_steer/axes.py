"""The registry of the nine bias axes: one canonical name each, its BBQ category, default prompt corpus, CrowS-Pairs
type, ready pairs, the later paper's split-file name, and the other spellings it goes by (`get_axis` reads any).

Default corpora follow the reference code where an axis has its own corpus in
`prompt_corpora/` (age, disability, gender, race, religion, socioeconomic, sexuality).
Nationality and physical appearance have none; both default to `genericqa`, the mixed
bias-themed question corpus, because it is the one that holds questions about them
(26 of its 500 prompts are about nationality, immigrants or accents, against 2 in `race`;
it asks about weight, tattoos and looks, which `generic`, a set of neutral tasks, never does).

`ready_pairs` names the `prompt_corpora/pairs/` files on the axis's theme; StereoSet's
"race" domain is mostly countries and nationalities, so it serves both race/ethnicity and
nationality. `v2_name` is the axis's name in the later paper's `bbq_v2_splits/` files (None: not there).
"""

from __future__ import annotations

from dataclasses import dataclass

from lens_steer.errors import LensSteerError


@dataclass(frozen=True)
class Axis:
    """One bias axis, where its data comes from and the names it goes by."""

    name: str
    bbq_category: str
    default_corpus: str
    crows_bias_type: str | None
    ready_pairs: tuple[str, ...]
    v2_name: str | None
    aliases: tuple[str, ...] = ()  # other spellings (its own prompt corpus where no field above names it)

    @property
    def names(self) -> tuple[str, ...]:
        """Every name `get_axis` reads as this axis (besides case and '-', ' ', '/' for '_')."""
        given = (self.name, self.bbq_category, self.crows_bias_type, self.v2_name, *self.aliases)
        return tuple(dict.fromkeys(n for n in given if n))


AXES: dict[str, Axis] = {
    a.name: a
    for a in (
        Axis("age", "Age", "age", "age", (), "age"),
        Axis("disability", "Disability_status", "disability", "disability", (), "disability"),
        Axis("gender_identity", "Gender_identity", "gender", "gender", ("stereoset-gender",), "gender"),
        Axis("nationality", "Nationality", "genericqa", "nationality", ("stereoset-race",), "nationality"),
        Axis("physical_appearance", "Physical_appearance", "genericqa", "physical-appearance", (), "appearance"),
        Axis(
            "race_ethnicity",
            "Race_ethnicity",
            "race",
            "race-color",
            ("stereoset-race",),
            "race",
            ("ethnicity",),
        ),
        Axis("religion", "Religion", "religion", "religion", ("stereoset-religion",), "religion"),
        Axis("ses", "SES", "socioeconomic", "socioeconomic", (), "socioeconomic", ("socioeconomic_status",)),
        Axis("sexual_orientation", "Sexual_orientation", "sexuality", "sexual-orientation", (), None, ("sexuality",)),
    )
}

AXIS_NAMES: tuple[str, ...] = tuple(AXES)

# The intersectional BBQ categories, held out of every optimisation (out-of-distribution axes).
OOD_CATEGORIES: tuple[str, ...] = ("Race_x_gender", "Race_x_SES")


def normal_form(name: str) -> str:
    """`name` lower-cased, with '-', ' ' and '/' read as '_' (how `get_axis` compares names)."""
    out = name.strip().lower()
    for ch in "- /":
        out = out.replace(ch, "_")
    return out


def _lookup() -> dict[str, str]:
    """Normal form of every name -> its axis; a name claimed by two axes is a bug in the table."""
    table: dict[str, str] = {}
    for a in AXES.values():
        for n in a.names:
            key = normal_form(n)
            if table.setdefault(key, a.name) != a.name:
                raise AssertionError(f"axis name {n!r} is claimed by {table[key]} and {a.name}")
    return table


_LOOKUP = _lookup()


def get_axis(name: str) -> Axis:
    """The axis called `name`: its canonical name or any of its `names` (BBQ category, CrowS-Pairs type, v2 name,
    prompt corpus, aliases), in any case; an unknown name is a one-line error listing the canonical names."""
    if not isinstance(name, str):
        raise LensSteerError(f"axis must be a string, got {type(name).__name__}; valid axes: {', '.join(AXIS_NAMES)}")
    key = normal_form(name)
    if key in _LOOKUP:
        return AXES[_LOOKUP[key]]
    if key in {normal_form(c) for c in OOD_CATEGORIES}:
        raise LensSteerError(
            f"{name!r} is an out-of-distribution BBQ category, not an axis; valid axes: {', '.join(AXIS_NAMES)}"
        )
    raise LensSteerError(f"unknown axis {name!r}; valid axes: {', '.join(AXIS_NAMES)}")


def axis_name(name: str) -> str:
    """The canonical name of the axis `name` names (`get_axis`)."""
    return get_axis(name).name
