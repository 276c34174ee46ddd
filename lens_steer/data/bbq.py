"""BBQ items: loading, row validation, and which answer is unknown / biased for each question.

The biased answer follows lm-evaluation-harness's BBQ task (`lm_eval/tasks/bbq/utils.py`,
`process_docs`): an answer's groups are its `answer_info` text and group joined by "_", with
intersectional "M-"/"F-"/"lowSES-"/"highSES-" prefixes split off, "lowSES"/"highSES"/"nonObese"/
"nonDisabled"/"nonTrans" spelled as two words, "woman"/"man"/"girl"/"boy" tagged F/M, all lower-cased
and split on "_". For a negative question an answer is biased when one of its groups is a stereotyped
group; for a non-negative question a non-unknown answer is biased when none of its groups is. A
question can thus have zero or two biased answers (e.g. Gender_identity "man" vs "boy" with
stereotyped group "woman"); `biased_indices` keeps them all, `biased_index` is set only when there is
exactly one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from lens_steer.axes import AXES, OOD_CATEGORIES, get_axis
from lens_steer.data.file_rows import jsonl_objects
from lens_steer.data.root import resolve_data_root
from lens_steer.errors import DataError, LensSteerError
from lens_steer.specs import parse_names

# the nine axes' categories and the two intersectional ones (lens_steer.axes), sorted as the file names are
BBQ_CATEGORIES: tuple[str, ...] = tuple(sorted({a.bbq_category for a in AXES.values()} | set(OOD_CATEGORIES)))
LOAD_SOURCES: tuple[str, ...] = ("official", "generated", "mixed")
ITEM_SOURCES: tuple[str, ...] = ("official", "partial", "generated")
POLARITIES: tuple[str, ...] = ("neg", "nonneg")
CONDITIONS: tuple[str, ...] = ("ambig", "disambig")
UNKNOWN_GROUP = "unknown"
# The "unknown" phrasings lm-evaluation-harness's BBQ task scores as choices (copied there from HELM); any of
# them counts as the unknown answer. They are exactly BBQ's own unknown-answer texts.
LM_EVAL_UNKNOWN_RESPONSES = (
    "Unknown",
    "Cannot answer",
    "Can't be determined",
    "Cannot be determined",
    "Can't answer",
    "Not known",
    "Not enough info",
    "Not enough information",
    "Not answerable",
    "Undetermined",
)

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


def lm_eval_groups(text: str, group: str, answer: str = "") -> tuple[str, ...]:
    """The lower-cased groups lm-evaluation-harness reads from one `answer_info` entry [text, group]."""
    if not text and not group:
        # lm-eval's fix for rows with empty answer_info (e.g. Race_x_gender): "Latina" answers are Latino
        return ("latino",) if "Latina" in answer else ()
    s = f"{text}_{group}"
    for old, new in (("M-", "M_"), ("F-", "F_"), ("lowSES-", "lowSES_"), ("highSES-", "highSES_")):
        s = s.replace(old, new)
    s = s.replace("lowSES", "low SES").replace("highSES", "high SES")
    s = s.replace("nonObese", "non Obese").replace("nonDisabled", "non Disabled").replace("nonTrans", "non Trans")
    if "woman" in s:
        s = s.replace("woman", "F_woman")
    elif "man" in s:
        s = s.replace("man", "M_man")
    s = s.replace("girl", "F_girl").replace("boy", "M_boy")
    return tuple(s.lower().split("_"))


def biased_answer_indices(
    polarity: str,
    answer_info_texts: Sequence[str],
    answer_groups: Sequence[str],
    stereotyped_groups: Sequence[str],
    answers: Sequence[str] = ("", "", ""),
) -> tuple[int, ...]:
    """Indices of the answers lm-evaluation-harness counts as biased for this question."""
    stereo = {g.lower() for g in stereotyped_groups}
    out = []
    for i, (text, group) in enumerate(zip(answer_info_texts, answer_groups)):
        if group.lower() == UNKNOWN_GROUP:
            continue
        groups = set(lm_eval_groups(text, group, answers[i]))
        if not groups:
            continue  # no group information at all: counted neither way
        in_stereo = not groups.isdisjoint(stereo)
        if (polarity == "neg" and in_stereo) or (polarity == "nonneg" and not in_stereo):
            out.append(i)
    return tuple(out)


def _find(haystack: str, needle: str) -> int:
    """Position of `needle` in `haystack` (exact, else case-insensitive), -1 if absent or empty."""
    if not needle:
        return -1
    pos = haystack.find(needle)
    return pos if pos >= 0 else haystack.lower().find(needle.lower())


def _names_prefix(context: str, texts: Sequence[str], groups: Sequence[str], answers: Sequence[str]) -> str:
    """The context up to the end of the first mention of both non-unknown answers (else its first sentence).

    Both people are introduced in the ambiguous context, which every variant's context starts with, so
    this prefix is shared by the four variants of one filled template and fixes the order of mention.
    """
    ends = []
    for text, group, ans in zip(texts, groups, answers):
        if group.lower() == UNKNOWN_GROUP:
            continue
        candidates = [text, ans]
        if ans.lower().startswith("the "):
            candidates.append(ans[4:])
        for cand in candidates:
            pos = _find(context, cand)
            if pos >= 0:
                ends.append(pos + len(cand))
                break
        else:
            m = _SENTENCE_END.search(context)
            return context[: m.end()] if m else context
    return context[: max(ends)]


@dataclass(frozen=True)
class BbqItem:
    """One BBQ question: a context, a question and three answers, one of them "unknown".

    ambig_context: the ambiguous context this item's context starts with (its own context for an
    ambiguous item; set by the loaders for a disambiguated one, "" when its partner is missing).
    """

    example_id: int
    question_index: str
    question_polarity: str
    context_condition: str
    category: str
    context: str
    question: str
    answers: tuple[str, str, str]
    label: int
    answer_groups: tuple[str, str, str]
    answer_info_texts: tuple[str, str, str]
    stereotyped_groups: tuple[str, ...]
    subcategory: str
    source: str
    ambig_context: str = ""

    @property
    def unknown_index(self) -> int:
        """Index of the "can't be determined" answer."""
        return [g.lower() for g in self.answer_groups].index(UNKNOWN_GROUP)

    @cached_property
    def biased_indices(self) -> tuple[int, ...]:
        """Every answer lm-evaluation-harness counts as biased (0, 1 or 2 of them)."""
        return biased_answer_indices(
            self.question_polarity, self.answer_info_texts, self.answer_groups, self.stereotyped_groups, self.answers
        )

    @property
    def biased_index(self) -> int | None:
        """The biased answer when exactly one non-unknown answer is biased, else None."""
        b = self.biased_indices
        return b[0] if len(b) == 1 else None

    @property
    def non_biased_index(self) -> int | None:
        """The other non-unknown answer when `biased_index` is set, else None."""
        b = self.biased_index
        if b is None:
            return None
        return next(i for i in range(3) if i != b and i != self.unknown_index)

    @property
    def is_ambiguous(self) -> bool:
        """True for ambiguous contexts (the correct answer is the unknown one)."""
        return self.context_condition == "ambig"

    @cached_property
    def group_key(self) -> tuple:
        """Identifies the filled template: its ambig/disambig x neg/nonneg variants share this key.

        The key is (category, question_index, answers, answer_info, ambiguous context). A disambiguated
        row whose ambiguous partner was not in the same file (`ambig_context` empty) falls back to the
        context up to both people's first mention.
        """
        base = (self.category, self.question_index, self.answers, self.answer_info_texts, self.answer_groups)
        if self.ambig_context:
            return base + ("ambig", self.ambig_context.strip())
        prefix = _names_prefix(self.context, self.answer_info_texts, self.answer_groups, self.answers)
        return base + ("prefix", prefix)


# ----------------------------------------------------------------------------- validation


def _bad(file: str, line: int, msg: str) -> DataError:
    return DataError(f"BBQ file {file} line {line}: {msg}")


def _str_field(obj: dict, key: str, file: str, line: int, *, allow_empty: bool = False) -> str:
    if key not in obj:
        raise _bad(file, line, f"missing field {key!r}")
    v = obj[key]
    if not isinstance(v, str):
        raise _bad(file, line, f"field {key!r} must be a string (got {type(v).__name__} {v!r})")
    if not allow_empty and not v.strip():
        raise _bad(file, line, f"field {key!r} must not be empty")
    return v


def _choice_field(obj: dict, key: str, choices: Sequence[str], file: str, line: int) -> str:
    v = _str_field(obj, key, file, line)
    if v not in choices:
        raise _bad(file, line, f"field {key!r} must be one of {', '.join(map(repr, choices))} (got {v!r})")
    return v


def parse_bbq_row(obj: dict[str, Any], *, file: str, line: int, source: str) -> BbqItem:
    """Validate one BBQ row (official schema) and return it as a BbqItem."""
    if not isinstance(obj, dict):
        raise _bad(file, line, f"expected a JSON object (got {type(obj).__name__})")
    if source not in ITEM_SOURCES:
        raise DataError(f"unknown BBQ item source {source!r}; choose one of {', '.join(ITEM_SOURCES)}")

    eid = obj.get("example_id")
    if "example_id" not in obj:
        raise _bad(file, line, "missing field 'example_id'")
    if isinstance(eid, bool) or not isinstance(eid, int) or eid < 0:
        raise _bad(file, line, f"field 'example_id' must be a non-negative integer (got {eid!r})")

    if "question_index" not in obj:
        raise _bad(file, line, "missing field 'question_index'")
    qi = obj["question_index"]
    if isinstance(qi, int) and not isinstance(qi, bool):
        qi = str(qi)
    if not isinstance(qi, str) or not qi.strip():
        raise _bad(file, line, f"field 'question_index' must be a non-empty string (got {qi!r})")

    polarity = _choice_field(obj, "question_polarity", POLARITIES, file, line)
    condition = _choice_field(obj, "context_condition", CONDITIONS, file, line)
    category = _choice_field(obj, "category", BBQ_CATEGORIES, file, line)
    context = _str_field(obj, "context", file, line)
    question = _str_field(obj, "question", file, line)
    answers = tuple(_str_field(obj, f"ans{i}", file, line) for i in range(3))

    if "label" not in obj:
        raise _bad(file, line, "missing field 'label'")
    label = obj["label"]
    if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1, 2):
        raise _bad(file, line, f"field 'label' must be 0, 1 or 2 (got {label!r})")

    info = obj.get("answer_info")
    if not isinstance(info, dict):
        raise _bad(file, line, f"field 'answer_info' must be an object with keys ans0, ans1, ans2 (got {info!r})")
    texts: list[str] = []
    groups: list[str] = []
    for i in range(3):
        entry = info.get(f"ans{i}")
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not all(isinstance(x, str) for x in entry):
            raise _bad(
                file, line, f"field 'answer_info.ans{i}' must be a list [text, group] of two strings (got {entry!r})"
            )
        texts.append(entry[0])
        groups.append(entry[1])
    n_unknown = sum(g.lower() == UNKNOWN_GROUP for g in groups)
    if n_unknown != 1:
        raise _bad(file, line, f"'answer_info' must give exactly one answer the group 'unknown' (got groups {groups})")
    unknown = [g.lower() for g in groups].index(UNKNOWN_GROUP)

    meta = obj.get("additional_metadata")
    if not isinstance(meta, dict):
        raise _bad(file, line, f"field 'additional_metadata' must be an object (got {meta!r})")
    stereo = meta.get("stereotyped_groups")
    if not isinstance(stereo, (list, tuple)) or not all(isinstance(g, str) for g in stereo):
        raise _bad(
            file, line, f"field 'additional_metadata.stereotyped_groups' must be a list of strings (got {stereo!r})"
        )
    sub = meta.get("subcategory", "")
    if sub is None:
        sub = ""
    if not isinstance(sub, str):
        raise _bad(file, line, f"field 'additional_metadata.subcategory' must be a string (got {sub!r})")

    if condition == "ambig" and label != unknown:
        raise _bad(file, line, f"ambiguous item must have the unknown answer {unknown} as label (got {label})")
    if condition == "disambig" and label == unknown:
        raise _bad(file, line, f"disambiguated item must not have the unknown answer {unknown} as label")

    return BbqItem(
        example_id=eid,
        question_index=qi,
        question_polarity=polarity,
        context_condition=condition,
        category=category,
        context=context,
        question=question,
        answers=answers,  # type: ignore[arg-type]
        label=label,
        answer_groups=tuple(groups),  # type: ignore[arg-type]
        answer_info_texts=tuple(texts),  # type: ignore[arg-type]
        stereotyped_groups=tuple(stereo),
        subcategory=sub,
        source=source,
        ambig_context=context if condition == "ambig" else "",
    )


def attach_ambig_contexts(items: Sequence[BbqItem]) -> list[BbqItem]:
    """Give each disambiguated item the ambiguous context it extends (same template and answers).

    A disambiguated context is its ambiguous context plus the disambiguating text; the longest
    matching ambiguous context among items with the same category, question_index, answers and
    answer_info is taken. Items without a match keep an empty `ambig_context`.
    """

    def bucket(it: BbqItem) -> tuple:
        return (it.category, it.question_index, it.answers, it.answer_info_texts, it.answer_groups)

    ambig: dict[tuple, set[str]] = {}
    for it in items:
        if it.context_condition == "ambig":
            ambig.setdefault(bucket(it), set()).add(it.context.strip())
    out = []
    for it in items:
        if it.context_condition == "disambig" and not it.ambig_context:
            found = [a for a in ambig.get(bucket(it), ()) if it.context.startswith(a)]
            if found:
                it = replace(it, ambig_context=max(found, key=len))
        out.append(it)
    return out


# ----------------------------------------------------------------------------- loading


def normalize_category(name: str) -> str:
    """The official spelling of a BBQ category: its name in any case, or any name of its axis
    (`lens_steer.axes.get_axis`: "ses", "gender", "disability", ...)."""
    for c in BBQ_CATEGORIES:
        if c.lower() == str(name).strip().lower():
            return c
    try:
        return get_axis(str(name)).bbq_category
    except LensSteerError:
        raise DataError(
            f"unknown BBQ category {name!r}; choose one of {', '.join(BBQ_CATEGORIES)} or an axis name"
        ) from None


def parse_categories(spec: Sequence[str] | str) -> list[str]:
    """BBQ categories from a comma list or a list of names (any that `normalize_category` reads), first of
    duplicates kept."""
    return list(parse_names(spec, "BBQ category", BBQ_CATEGORIES, resolve=normalize_category, error=DataError))


def load_bbq_file(path: str | Path, *, source: str, category: str | None = None) -> list[BbqItem]:
    """Every row of one BBQ JSONL file, validated; `category`, if given, must match every row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"BBQ file {path} not found")
    items: list[BbqItem] = []
    seen: dict[int, int] = {}
    for n, obj in jsonl_objects(path.read_bytes(), f"BBQ file {path}", fix="fix or re-download the file"):
        item = parse_bbq_row(obj, file=str(path), line=n, source=source)
        if category is not None and item.category != category:
            raise _bad(str(path), n, f"category {item.category!r} in a file of category {category!r}")
        if item.example_id in seen:
            raise _bad(str(path), n, f"duplicate example_id {item.example_id} (first on line {seen[item.example_id]})")
        seen[item.example_id] = n
        items.append(item)
    if not items:
        raise DataError(f"BBQ file {path} holds no rows")
    return attach_ambig_contexts(items)


def official_path(category: str, data_root: str | Path | None = None) -> tuple[Path, str] | None:
    """The offline file for a category and its item source ("official" or "partial"), or None."""
    root = resolve_data_root(data_root)
    for folder, src in (("data", "official"), ("partial", "partial")):
        p = root / "bbq" / folder / f"{category}.jsonl"
        if p.is_file():
            return p, src
    return None


def available_categories(data_root: str | Path | None = None) -> tuple[str, ...]:
    """Categories with an official or partial file under the data root."""
    return tuple(c for c in BBQ_CATEGORIES if official_path(c, data_root) is not None)


def partial_categories(data_root: str | Path | None = None) -> tuple[str, ...]:
    """Categories available only as an incomplete (partial) official file."""
    out = []
    for c in BBQ_CATEGORIES:
        found = official_path(c, data_root)
        if found is not None and found[1] == "partial":
            out.append(c)
    return tuple(out)


def _generated_path(category: str, generated_dir: str | Path | None) -> Path | None:
    if generated_dir is None:
        return None
    p = Path(generated_dir) / f"{category}.jsonl"
    return p if p.is_file() else None


def load_bbq(
    categories: Sequence[str] | str | None = None,
    *,
    data_root: str | Path | None = None,
    source: str = "official",
    generated_dir: str | Path | None = None,
) -> list[BbqItem]:
    """BBQ items of the given categories (all available ones if None), in category then file order.

    source: "official" (bbq/data, else bbq/partial), "generated" (`<generated_dir>/<Category>.jsonl`),
    or "mixed" (official/partial where available, else generated; never both for one category).
    """
    if source not in LOAD_SOURCES:
        raise DataError(f"unknown BBQ source {source!r}; choose one of {', '.join(LOAD_SOURCES)}")
    if source == "generated" and generated_dir is None:
        raise DataError("BBQ source 'generated' needs generated_dir, the folder written by `lens-steer bbq-generate`")
    root = resolve_data_root(data_root) if source != "generated" else None

    if categories is None:
        cats = [
            c
            for c in BBQ_CATEGORIES
            if (root is not None and official_path(c, root) is not None)
            or (source != "official" and _generated_path(c, generated_dir) is not None)
        ]
        if not cats:
            raise DataError(
                f"no BBQ files found for source {source!r} (data root {root}, generated_dir {generated_dir}); "
                "point --data-dir or $LENS_STEER_DATA at a folder with bbq/data/<Category>.jsonl"
            )
    else:
        cats = parse_categories(categories)

    items: list[BbqItem] = []
    for c in cats:
        found = official_path(c, root) if root is not None else None
        if source in ("official", "mixed") and found is not None:
            items += load_bbq_file(found[0], source=found[1], category=c)
            continue
        if source == "official":
            raise DataError(
                f"BBQ category {c} is unavailable offline: no bbq/data/{c}.jsonl or bbq/partial/{c}.jsonl under "
                f"{root}; generate it with `lens-steer bbq-generate` and load it with source 'generated' or 'mixed'"
            )
        gen = _generated_path(c, generated_dir)
        if gen is None:
            where = Path(generated_dir) / f"{c}.jsonl" if generated_dir is not None else "(no generated_dir given)"
            raise DataError(
                f"BBQ category {c}: no official file under {root} and no generated file {where}; "
                f"generate it with `lens-steer bbq-generate`"
            )
        items += load_bbq_file(gen, source="generated", category=c)
    return items


def load_bbq_hf(
    dataset_id: str = "oskarvanderwal/bbq",
    categories: Sequence[str] | str | None = None,
    *,
    split: str = "test",
    cache_dir: str | Path | None = None,
) -> list[BbqItem]:
    """BBQ items from a Hugging Face dataset with one config per category (needs network or a cache)."""
    try:
        import datasets  # noqa: PLC0415 - optional, heavy
    except ImportError as e:
        raise DataError(f"loading BBQ from the Hugging Face hub needs the `datasets` package ({e})") from None
    cats = list(BBQ_CATEGORIES) if categories is None else parse_categories(categories)
    items: list[BbqItem] = []
    for c in cats:
        try:
            ds = datasets.load_dataset(
                dataset_id, c, split=split, cache_dir=None if cache_dir is None else str(cache_dir)
            )
        except Exception as e:  # noqa: BLE001 - any hub/cache failure becomes one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise DataError(
                f"could not load BBQ {dataset_id} config {c} split {split}: {type(e).__name__}: {first}"
            ) from None
        rows = [
            parse_bbq_row(dict(r), file=f"hf:{dataset_id}/{c}/{split}", line=n, source="official")
            for n, r in enumerate(ds, 1)
        ]
        items += attach_ambig_contexts(rows)
    return items


def read_item_ids(path: str | Path) -> list[tuple[str, int]]:
    """`(category, example_id)` per line of a file of `category,example_id` lines (blank lines and `#` comments
    skipped)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"ids file {p} does not exist; give a file of 'category,example_id' lines")
    out: list[tuple[str, int]] = []
    for n, raw in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = [x.strip() for x in line.split(",")]
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{p}:{n}: expected 'category,example_id' (e.g. 'Age,12'), got {line[:60]!r}")
        out.append((normalize_category(parts[0]), int(parts[1])))
    if not out:
        raise DataError(f"ids file {p} names no item; write one 'category,example_id' per line")
    return out


def select_ids(items: Sequence[BbqItem], ids: Sequence[tuple[str, int]], *, where: str = "--ids") -> list[BbqItem]:
    """The items named by `ids`, in that order; a one-line error for an id no loaded item has."""
    by_key = {(it.category, it.example_id): it for it in items}
    missing = [k for k in ids if k not in by_key]
    if missing:
        cat, eid = missing[0]
        raise DataError(
            f"{where}: no loaded BBQ item {cat},{eid} ({len(missing)} missing); check the category (and --bbq-source) "
            "and the example id"
        )
    return [by_key[k] for k in ids]
