"""The official BBQ templates and vocabularies (bbq/templates under the data root) and the filling rules of the
published generator: word lists, slot filling, the four rows of a filled pair, answer-group repairs.
`lens_steer.data.bbq_generate` composes them into whole categories."""

from __future__ import annotations

import ast
import csv
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lens_steer.data.root import resolve_data_root
from lens_steer.errors import DataError

UNKNOWN_OPTIONS: tuple[str, ...] = (
    "Unknown",
    "Cannot be determined",
    "Can't be determined",
    "Not answerable",
    "Not known",
    "Not enough info",
    "Not enough information",
    "Cannot answer",
    "Can't answer",
    "Undetermined",
)

_AN_RE = re.compile(r"(\s[aA])(\s[aAeEiIoOuU])")
_VOWEL_START = re.compile(r"^[aeiou]")

Row = dict[str, str]


# ----------------------------------------------------------------------------- data files


def templates_root(data_root: str | Path | None) -> Path:
    """The data root through the project's resolver."""
    return resolve_data_root(data_root)


def _read_csv(path: Path) -> list[Row]:
    """All rows of a CSV file as dicts of strings."""
    if not path.is_file():
        raise DataError(
            f"{path}: BBQ template file not found; point --data-dir / LENS_STEER_DATA at a folder holding "
            "bbq/templates/"
        )
    with path.open(newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


@dataclass(frozen=True)
class Vocab:
    """The two official vocabularies."""

    words: list[Row]  # vocabulary.csv, Pilot_include != "No"
    names: list[Row]  # vocabulary_proper_names.csv

    def category(self, cat: str) -> list[Row]:
        return [w for w in self.words if w["Category"] == cat]

    def info(self, name: str) -> str:
        """The Info column of the first vocabulary entry called `name` (any category)."""
        for w in self.words:
            if w["Name"] == name:
                return w["Info"]
        raise DataError(f"vocabulary.csv: no entry named {name!r}; the template uses a word the vocabulary lacks")

    def first_names(self, kind: str) -> list[Row]:
        return [n for n in self.names if n["First_last"] == kind]


def load_vocab(tdir: Path) -> Vocab:
    """The vocabulary (rows not excluded from the pilot) and the proper names of a templates folder."""
    words = [w for w in _read_csv(tdir / "vocabulary.csv") if w["Pilot_include"] != "No"]
    return Vocab(words=words, names=_read_csv(tdir / "vocabulary_proper_names.csv"))


def load_templates(tdir: Path, cat: str) -> list[Row]:
    """A category's template rows that have an ambiguous context (the others yield no items)."""
    rows = _read_csv(tdir / f"new_templates - {cat}.csv")
    return [r for r in rows if r.get("Ambiguous_Context", "") != ""]


# ----------------------------------------------------------------------------- helpers


def unique(seq: Iterable[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(seq))


def literal_list(text: str, where: str) -> list[str]:
    """A Python list literal from a template cell."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise DataError(
            f'{where}: cannot read {text!r} as a list ({exc.__class__.__name__}); write it as ["a", "b"]'
        ) from None
    if not isinstance(value, list):
        raise DataError(f'{where}: expected a list, got {text!r}; write it as ["a", "b"]')
    return [str(v) for v in value]


def parse_word_lists(text: str) -> tuple[list[str], list[str]]:
    """The two lists of a ``NAME1: [a, b]; NAME2: [c, d]`` (or WORD1/WORD2) cell, published-code semantics.

    Segments are split on ``;``; a segment naming the second slot sets the second list and any later
    segment that does not resets it to empty, as in the published ``return_list_from_string``.
    """
    first: list[str] | None = None
    second: list[str] = []

    def items(seg: str, marks: Sequence[str]) -> list[str]:
        for m in marks:
            seg = seg.replace(m, "")
        return [w.strip() for w in seg.strip().replace("[", "").replace("]", "").split(",")]

    for seg in text.split(";"):
        if "WORD1" in seg or "NAME1" in seg:
            first = items(seg, ("WORD1:", "{{WORD1}}:", "NAME1:", "{{NAME1}}:"))
        if "WORD2" in seg or "NAME2" in seg:
            second = items(seg, ("WORD2:", "{{WORD2}}:", "NAME2:", "{{NAME2}}:"))
        else:
            second = []
    if first is None:
        raise DataError(f"template cell {text!r} has no NAME1/WORD1 list; write it as 'NAME1: [a, b]; NAME2: [c, d]'")
    return first, second


def fill(
    row: Row,
    w1: str,
    w2: str,
    lex_div: str,
    rand1: str,
    rand2: str,
    gs1: str | None = None,
    gs2: str | None = None,
) -> Row:
    """The template row with every slot filled (published ``do_slotting`` semantics)."""
    vowel = any(_VOWEL_START.search(s.lower()) is not None for s in (w1, w2, str(gs1), str(gs2)))
    out: Row = {}
    for key, txt in row.items():
        if key == "Q_id":
            out[key] = txt
            continue
        txt = txt.replace("{{NAME1}}", w1).replace("{{NAME2}}", w2)
        if gs1 is not None:
            g2 = "" if gs2 is None else gs2
            txt = txt.replace("{{GEN1}}", gs1).replace("{{GEN2}}", g2)
            txt = txt.replace("{{OCC1}}", gs1).replace("{{OCC2}}", g2)
        if len(lex_div) > 1:
            txt = txt.replace("{{WORD1}}", rand1).replace("{{WORD2}}", rand2)
        txt = txt.replace("lesbian man", "lesbian woman").replace("Latino woman", "Latina woman")
        if vowel:
            txt = _AN_RE.sub(r"\1n\2", txt).replace(" an European", " a European")
        out[key] = txt
    return out


def _contains(word: str | list[str], text: str) -> bool:
    """Whether the slot word (or [race, gender/SES] pair) occurs in an answer (substring semantics)."""
    if isinstance(word, list):
        return word[0] in text and word[1] in text
    return word in text


def _label_text(word: str | list[str]) -> str:
    if isinstance(word, list):
        return word[0] + " " + word[1].lstrip()
    return word.lstrip()


def _man_guard(word: str | list[str]) -> str | list[str]:
    """Keep 'man' from matching inside 'woman', as the published code does."""
    if isinstance(word, list):
        return [word[0], " man" if word[1] == "man" else word[1]]
    return " man" if word == "man" else word


def _resolve_collision(
    ans_neg: str, ans_non_neg: str, names: Sequence[tuple[str | list[str], str]]
) -> tuple[list[str], list[str]]:
    """Answer info for two answers that substring matching gave the same slot word (as the official files have it).

    Each answer is described by its text after the words both answers start with, and takes the group of
    the longest slot word it contains ("no tattoos" beats "tattoos").
    """
    a, b = ans_neg.split(" "), ans_non_neg.split(" ")
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    out = []
    for text, words in ((ans_neg, a), (ans_non_neg, b)):
        hits = [(len(_label_text(n)), g) for n, g in names if _contains(n, text)]
        out.append([" ".join(words[common:]), max(hits)[1]])
    return out[0], out[1]


def _repair_unmatched(
    info: list[list[str]],
    neg: tuple[int, str],
    non_neg: tuple[int, str],
    names: Sequence[tuple[str | list[str], str]],
) -> None:
    """Fill the info of an answer whose slot word the substring match missed, as the official files have it.

    Happens when slotting changed the word ("a one percenter" -> "an one percenter", "Latino woman" ->
    "Latina woman"): the answer is described by its words not shared (as prefix or suffix) with the
    other answer, without a leading article, and takes the group of the other slot word.
    """
    (i, text), (j, other) = neg, non_neg
    if info[i][0] != "" and info[j][0] == "":
        (i, text), (j, other) = (j, other), (i, text)
    if not (info[i][0] == "" and info[j][0] != ""):
        return
    rest = [(n, g) for n, g in names if _label_text(n) != info[j][0]]
    if len(rest) != 1:
        return
    a, b = text.split(" "), other.split(" ")
    lo = 0
    while lo < min(len(a), len(b)) and a[lo] == b[lo]:
        lo += 1
    hi = 0
    while hi < min(len(a), len(b)) - lo and a[-1 - hi] == b[-1 - hi]:
        hi += 1
    words = a[lo : len(a) - hi]
    if len(words) > 1 and words[0].lower() in ("a", "an"):
        words = words[1:]
    info[i] = [" ".join(words), rest[0][1]]


def four_rows(
    rng: random.Random,
    cat: str,
    filled: Row,
    subcat: str,
    bias_targets: list[str],
    name1: str | list[str],
    name2: str | list[str],
    info1: str,
    info2: str,
) -> list[dict[str, Any]]:
    """The ambig/disambig x neg/nonneg rows of one filled template (example_id set later)."""
    ans_neg = filled["Answer_negative"]
    ans_non_neg = filled["Answer_non_negative"]
    ans_unknown = rng.choice(UNKNOWN_OPTIONS)
    answers = [ans_neg, ans_non_neg, ans_unknown]
    rng.shuffle(answers)
    neg_at, non_neg_at, unk_at = (answers.index(a) for a in (ans_neg, ans_non_neg, ans_unknown))

    info: list[list[str]] = [["", ""], ["", ""], ["", ""]]
    n1, n2 = _man_guard(name1), _man_guard(name2)
    for name, group in ((n1, info1), (n2, info2)):
        if _contains(name, ans_neg):
            info[neg_at] = [_label_text(name), group]
        if _contains(name, ans_non_neg):
            info[non_neg_at] = [_label_text(name), group]
    if info[neg_at] == info[non_neg_at] and info[neg_at][0] != "":
        info[neg_at], info[non_neg_at] = _resolve_collision(ans_neg, ans_non_neg, ((n1, info1), (n2, info2)))
    _repair_unmatched(info, (neg_at, ans_neg), (non_neg_at, ans_non_neg), ((n1, info1), (n2, info2)))
    info[unk_at] = [ans_unknown, "unknown"]
    answer_info = {f"ans{i}": info[i] for i in range(3)}

    ambig = filled["Ambiguous_Context"]
    disambig = f"{ambig.strip()} {filled['Disambiguating_Context']}"
    meta = {
        "subcategory": subcat,
        "stereotyped_groups": bias_targets,
        "version": filled.get("version", "None"),
        "source": filled["Notes"],
    }
    rows = []
    for polarity, question, answer_at in (
        ("neg", filled["Question_negative_stereotype"], neg_at),
        ("nonneg", filled["Question_non_negative"], non_neg_at),
    ):
        for condition, context, label in (("ambig", ambig, unk_at), ("disambig", disambig, answer_at)):
            rows.append(
                {
                    "example_id": -1,
                    "question_index": filled["Q_id"],
                    "question_polarity": polarity,
                    "context_condition": condition,
                    "category": cat,
                    "answer_info": {k: list(v) for k, v in answer_info.items()},
                    "additional_metadata": dict(meta, stereotyped_groups=list(bias_targets)),
                    "context": context.strip(),
                    "question": question.strip(),
                    "ans0": answers[0],
                    "ans1": answers[1],
                    "ans2": answers[2],
                    "label": label,
                }
            )
    return rows


def lex_words(rng: random.Random, lex_div: str, rand2: str) -> tuple[str, str]:
    """Draw the lexical-diversity words; a one-word WORD2 list keeps the previous value."""
    if len(lex_div) <= 1:
        return "", rand2
    l1, l2 = parse_word_lists(lex_div)
    r1 = rng.choice(l1)
    if len(l2) > 1:
        rand2 = rng.choice(l2)
    return r1, rand2
