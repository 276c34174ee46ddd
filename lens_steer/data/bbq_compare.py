"""Compare generated BBQ rows with an official BBQ file: cell counts, schema, value sets, labels, identical rows."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

Cell = tuple[str, str, str]  # (question_index, question_polarity, context_condition)
TemplateKey = tuple[str, str]  # (question_index, version)

# value sets compared field by field: name -> how to read the values of one row
_VALUE_FIELDS: dict[str, Any] = {
    "question_index": lambda r: [r["question_index"]],
    "question_polarity": lambda r: [r["question_polarity"]],
    "context_condition": lambda r: [r["context_condition"]],
    "category": lambda r: [r["category"]],
    "label": lambda r: [r["label"]],
    "subcategory": lambda r: [r["additional_metadata"]["subcategory"]],
    "version": lambda r: [r["additional_metadata"]["version"]],
    "stereotyped_groups": lambda r: [json.dumps(r["additional_metadata"]["stereotyped_groups"])],
    "source": lambda r: [r["additional_metadata"]["source"]],
    "answer_groups": lambda r: [v[1] for v in r["answer_info"].values()],
    "unknown_phrasings": lambda r: [v[0] for v in r["answer_info"].values() if v[1] == "unknown"],
}


def _label_group(r: dict[str, Any]) -> str:
    return r["answer_info"][f"ans{r['label']}"][1]


def _block_together(rows: Sequence[dict[str, Any]], start: int) -> bool:
    """Rows start..start+3 form one item: same template and answers, all four cells, contexts nested."""
    block = rows[start : start + 4]
    if len(block) < 4:
        return False
    answers = {(r["ans0"], r["ans1"], r["ans2"], r["question_index"]) for r in block}
    cells = {(r["question_polarity"], r["context_condition"]) for r in block}
    ambig = {r["context"] for r in block if r["context_condition"] == "ambig"}
    nested = len(ambig) == 1 and all(
        r["context"].startswith(next(iter(ambig))) for r in block if r["context_condition"] == "disambig"
    )
    return len(answers) == 1 and len(cells) == 4 and nested


# properties of the label and of the item structure, each measured on both sides
_PROPERTIES: dict[str, Any] = {
    "ambig rows: label is the 'unknown' answer": (
        lambda r: r["context_condition"] == "ambig",
        lambda r: _label_group(r) == "unknown",
    ),
    "disambig rows: label is a named (not 'unknown') answer": (
        lambda r: r["context_condition"] == "disambig",
        lambda r: _label_group(r) != "unknown",
    ),
    "exactly one 'unknown' answer per row": (
        lambda r: True,
        lambda r: sum(v[1] == "unknown" for v in r["answer_info"].values()) == 1,
    ),
    "label in 0..2": (lambda r: True, lambda r: r["label"] in (0, 1, 2)),
}


def canonical_row(r: dict[str, Any]) -> tuple[Any, ...]:
    """A row up to its random parts (unknown phrasing, answer order, example_id)."""
    info = r["answer_info"]
    named = sorted((r[f"ans{i}"], tuple(info[f"ans{i}"])) for i in range(3) if info[f"ans{i}"][1] != "unknown")
    target = "<unknown>" if _label_group(r) == "unknown" else r[f"ans{r['label']}"]
    m = r["additional_metadata"]
    return (
        r["question_index"],
        r["question_polarity"],
        r["context_condition"],
        r["category"],
        r["context"],
        r["question"],
        m["subcategory"],
        tuple(m["stereotyped_groups"]),
        m["version"],
        m["source"],
        tuple(named),
        target,
    )


def _exact(r: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in r.items() if k != "example_id"}, sort_keys=True)


def _template_key(r: dict[str, Any]) -> TemplateKey:
    return (str(r["question_index"]), str(r["additional_metadata"]["version"]))


def _sort_key(k: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple((0, int(x), "") if str(x).isdigit() else (1, 0, str(x)) for x in k)


@dataclass
class ComparisonReport:
    """How generated rows of one category compare with the official file."""

    category: str
    n_generated: int
    n_official: int
    cell_counts: dict[Cell, tuple[int, int]]  # cell -> (generated, official)
    schema_differences: list[str]
    value_set_differences: dict[str, tuple[list[str], list[str]]]  # field -> (only generated, only official)
    properties: dict[str, tuple[float, float]]  # property -> (fraction generated, fraction official)
    items_together: tuple[float, float]  # fraction of 4-row blocks forming one item (generated, official)
    random_free_templates: list[TemplateKey]
    identical_templates: list[TemplateKey]  # random-free templates whose rows match exactly (up to random parts)
    differing_templates: dict[TemplateKey, tuple[int, int, int]]  # key -> (generated, official, in common)
    identical_rows: int  # rows of random-free templates found in the official file (up to random parts)
    random_free_rows: int  # official rows of random-free templates
    exact_rows: int  # rows equal field for field (example_id aside), random parts included
    notes: list[str] = field(default_factory=list)

    @property
    def mismatched_cells(self) -> list[Cell]:
        """Cells whose row counts differ."""
        return [c for c, (g, o) in self.cell_counts.items() if g != o]

    @property
    def counts_match(self) -> bool:
        return self.n_generated == self.n_official and not self.mismatched_cells

    @property
    def properties_match(self) -> bool:
        return all(abs(g - o) < 1e-12 for g, o in self.properties.values()) and (
            abs(self.items_together[0] - self.items_together[1]) < 1e-12
        )

    @property
    def ok(self) -> bool:
        """Counts, schema, value sets, label semantics and random-free rows all agree."""
        return (
            self.counts_match
            and not self.schema_differences
            and not self.value_set_differences
            and self.properties_match
            and not self.differing_templates
        )

    def to_text(self) -> str:
        """A human-readable summary."""
        bad = self.mismatched_cells
        lines = [
            f"BBQ {self.category}: generated {self.n_generated} rows, official {self.n_official} rows -> "
            + ("MATCH" if self.ok else "DIFFERENCES"),
            f"  cells (question_index x polarity x context): {len(self.cell_counts)}, "
            f"{len(self.cell_counts) - len(bad)} with equal row counts, {len(bad)} differ",
        ]
        for c in bad[:10]:
            g, o = self.cell_counts[c]
            lines.append(f"    {c}: generated {g}, official {o}")
        lines.append(f"  schema: {'same' if not self.schema_differences else '; '.join(self.schema_differences)}")
        if not self.value_set_differences:
            lines.append(f"  value sets ({', '.join(_VALUE_FIELDS)}): same")
        for name, (only_g, only_o) in self.value_set_differences.items():
            lines.append(
                f"  value set {name}: only generated {only_g[:5]}{'...' if len(only_g) > 5 else ''}, "
                f"only official {only_o[:5]}{'...' if len(only_o) > 5 else ''}"
            )
        for name, (g, o) in self.properties.items():
            lines.append(f"  {name}: generated {g:.1%}, official {o:.1%}")
        g, o = self.items_together
        lines.append(f"  four variants of an item consecutive and consistent: generated {g:.1%}, official {o:.1%}")
        lines.append(
            f"  random-free templates: {len(self.random_free_templates)}, identical {len(self.identical_templates)}, "
            f"differ {len(self.differing_templates)}; their rows found in the official file: "
            f"{self.identical_rows}/{self.random_free_rows} (up to the unknown phrasing and answer order)"
        )
        for k, (gn, on, common) in sorted(self.differing_templates.items(), key=lambda kv: _sort_key(kv[0])):
            lines.append(f"    template {k}: generated {gn}, official {on}, in common {common}")
        lines.append(
            f"  rows identical field for field (answer order and unknown phrasing included): {self.exact_rows}"
        )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def compare_with_official(
    category: str,
    generated_rows: Sequence[dict[str, Any]],
    official_rows: Sequence[dict[str, Any]],
    *,
    random_free: Collection[TemplateKey] | None = None,
) -> ComparisonReport:
    """Compare generated rows with the official rows of `category`.

    `random_free` lists the (question_index, version) templates that draw nothing at random
    (``bbq_generate.random_free_templates``); their rows must equal the official ones up to the
    unknown phrasing and answer order. Without it, no template is checked for identity.
    """
    notes: list[str] = []
    cells: Counter[Cell] = Counter()
    cells_o: Counter[Cell] = Counter()
    for r in generated_rows:
        cells[(str(r["question_index"]), r["question_polarity"], r["context_condition"])] += 1
    for r in official_rows:
        cells_o[(str(r["question_index"]), r["question_polarity"], r["context_condition"])] += 1
    cell_counts = {c: (cells[c], cells_o[c]) for c in sorted(set(cells) | set(cells_o), key=_sort_key)}

    schema: list[str] = []
    for name, get in (
        ("row keys", lambda r: tuple(r)),
        ("additional_metadata keys", lambda r: tuple(r["additional_metadata"])),
    ):
        kg = {get(r) for r in generated_rows}
        ko = {get(r) for r in official_rows}
        if kg != ko:
            schema.append(f"{name}: generated {sorted(kg)} vs official {sorted(ko)}")
    for key in ("example_id", "question_index", "label", "context", "answer_info"):
        tg = {type(r[key]).__name__ for r in generated_rows if key in r}
        to = {type(r[key]).__name__ for r in official_rows if key in r}
        if tg != to:
            schema.append(f"type of {key}: generated {sorted(tg)} vs official {sorted(to)}")
    cats = {r.get("category") for r in generated_rows} | {r.get("category") for r in official_rows}
    if cats - {category}:
        notes.append(f"rows of other categories present: {sorted(map(str, cats - {category}))}")

    values: dict[str, tuple[list[str], list[str]]] = {}
    for name, get in _VALUE_FIELDS.items():
        vg = {str(v) for r in generated_rows for v in get(r)}
        vo = {str(v) for r in official_rows for v in get(r)}
        if vg != vo:
            values[name] = (sorted(vg - vo), sorted(vo - vg))

    props: dict[str, tuple[float, float]] = {}
    for name, (applies, holds) in _PROPERTIES.items():
        fr = []
        for rows in (generated_rows, official_rows):
            sel = [r for r in rows if applies(r)]
            fr.append(sum(1 for r in sel if holds(r)) / len(sel) if sel else 1.0)
        props[name] = (fr[0], fr[1])
    together = []
    for rows in (generated_rows, official_rows):
        ordered = sorted(rows, key=lambda r: int(r["example_id"]))
        n_blocks = len(ordered) // 4
        ok = sum(_block_together(ordered, 4 * b) for b in range(n_blocks))
        together.append(ok / n_blocks if n_blocks else 1.0)

    by_g: dict[TemplateKey, Counter[tuple[Any, ...]]] = defaultdict(Counter)
    by_o: dict[TemplateKey, Counter[tuple[Any, ...]]] = defaultdict(Counter)
    for r in generated_rows:
        by_g[_template_key(r)][canonical_row(r)] += 1
    for r in official_rows:
        by_o[_template_key(r)][canonical_row(r)] += 1
    free = sorted({(str(a), str(b)) for a, b in (random_free or ())}, key=_sort_key)
    identical, differing = [], {}
    same_rows = free_rows = 0
    for k in free:
        g, o = by_g.get(k, Counter()), by_o.get(k, Counter())
        common = sum((g & o).values())
        same_rows += common
        free_rows += sum(o.values())
        if g == o:
            identical.append(k)
        else:
            differing[k] = (sum(g.values()), sum(o.values()), common)
    exact = sum((Counter(map(_exact, generated_rows)) & Counter(map(_exact, official_rows))).values())

    return ComparisonReport(
        category=category,
        n_generated=len(generated_rows),
        n_official=len(official_rows),
        cell_counts=cell_counts,
        schema_differences=schema,
        value_set_differences=values,
        properties=props,
        items_together=(together[0], together[1]),
        random_free_templates=free,
        identical_templates=identical,
        differing_templates=differing,
        identical_rows=same_rows,
        random_free_rows=free_rows,
        exact_rows=exact,
        notes=notes,
    )
