"""Generate BBQ items for every category from the official templates and vocabularies.

Follows the published construction of nyu-mll/BBQ (``generate_from_template_all_categories.py``,
the intersectional script for Race_x_SES / Race_x_gender, and ``utils.py``), re-implemented here:

* every template row with an ambiguous context is filled with pairs of group words (from its
  ``Names`` column, its ``Subcategory`` vocabulary, the category vocabulary, or proper names);
  every filled pair yields four rows: ambig/disambig x neg/nonneg, sharing one answer order and one
  "unknown" phrasing; the label is the unknown answer in ambiguous contexts and the answer named by
  the template in disambiguated ones;
* Race_ethnicity, Religion, Nationality, Sexual_orientation, proper-name templates and SES occupation
  templates are also written with the two words swapped; intersectional templates yield, per pair,
  the three variants a (same race, other gender/SES), b (other race, same gender/SES) and c (both
  differ), each also swapped (24 rows per pair);
* vocabulary downsampling (5 of a larger list, 6 first names for other categories), last names,
  lexical-diversity words, the unknown phrasing and the answer order are the random choices, drawn
  from a ``random.Random`` seeded by (seed, category); the official files were made with an
  unseeded RNG, so those choices cannot match them, while everything else does.

Quirks of the published code that shaped the official files, reproduced so that counts match:
``Names``/``Lexical_diversity`` lists are parsed by splitting on ``;`` and only the *last* segment
may define the second list (so ``NAME2: [...]; NAME1: [...]`` and lists containing ``;`` give no
second list and produce no rows, e.g. Disability_status 4b and 19b are absent from the official
file); a one-word ``WORD2`` list fills ``{{WORD2}}`` with the empty string; answer groups in
``answer_info`` are found by substring match of the slot words in the answer texts; "a" becomes "an"
before a vowel only when one of the slot words starts with a vowel. ``question_index`` is the
template's ``Q_id`` as a string, ``version`` is ``"None"`` where the template has no version column,
and the intersectional rows carry ``subcategory`` ``intersectional_a|b|c`` as in the published
intersectional script.

Where the official files differ from that procedure, the files are followed (evidence: the six
complete official files and the official Gender_identity / Race_ethnicity / SES rows 300-1199):
two answers that substring matching gives the same slot word ("tattoos" inside "no tattoos") get
each its own text (the words after their common prefix) and the group of the longest slot word they
contain; an answer whose slot word the match misses after slotting changed it ("an one percenter",
"Latina woman") gets its distinctive words and the other slot's group; Gender_identity templates 13-15
carry stereotyped_groups ``["woman"]`` (the released templates say ``["F"]``).
``Filler_items.csv`` is not a bias category and is not generated.
"""

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
from lens_steer.files import write_jsonl

CATEGORIES: tuple[str, ...] = (
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Race_x_SES",
    "Race_x_gender",
    "Religion",
    "SES",
    "Sexual_orientation",
)
INTERSECTIONAL: tuple[str, ...] = ("Race_x_SES", "Race_x_gender")

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

# categories whose second word is drawn from the non-target groups and whose pairs are also swapped
_SWAPPED_CATEGORIES = ("Race_ethnicity", "Religion", "Nationality", "Sexual_orientation")
_AN_RE = re.compile(r"(\s[aA])(\s[aAeEiIoOuU])")
_VOWEL_START = re.compile(r"^[aeiou]")

Row = dict[str, str]

# stereotyped_groups of the official files where the released templates were edited afterwards
# (seen in the official Gender_identity rows 300-1199; templates outside that range cannot be checked)
_OFFICIAL_STEREOTYPED_GROUPS: dict[tuple[str, str], list[str]] = {
    ("Gender_identity", "13"): ["woman"],
    ("Gender_identity", "14"): ["woman"],
    ("Gender_identity", "15"): ["woman"],
}


# ----------------------------------------------------------------------------- data files


def _data_root(data_root: str | Path | None) -> Path:
    """The data root through the project's resolver."""
    return resolve_data_root(data_root)


def _read_csv(path: Path) -> list[Row]:
    """All rows of a CSV file as dicts of strings."""
    if not path.is_file():
        raise DataError(f"{path}: BBQ template file not found; point --data-dir / LENS_STEER_DATA at a folder holding bbq/templates/")
    with path.open(newline="", encoding="utf-8") as f:
        return [dict(r) for r in csv.DictReader(f)]


@dataclass(frozen=True)
class _Vocab:
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


def _load_vocab(tdir: Path) -> _Vocab:
    words = [w for w in _read_csv(tdir / "vocabulary.csv") if w["Pilot_include"] != "No"]
    return _Vocab(words=words, names=_read_csv(tdir / "vocabulary_proper_names.csv"))


def _load_templates(tdir: Path, cat: str) -> list[Row]:
    rows = _read_csv(tdir / f"new_templates - {cat}.csv")
    return [r for r in rows if r.get("Ambiguous_Context", "") != ""]


# ----------------------------------------------------------------------------- helpers


def _unique(seq: Iterable[str]) -> list[str]:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(seq))


def _literal_list(text: str, where: str) -> list[str]:
    """A Python list literal from a template cell."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise DataError(f"{where}: cannot read {text!r} as a list ({exc.__class__.__name__}); write it as [\"a\", \"b\"]") from None
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list, got {text!r}; write it as [\"a\", \"b\"]")
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


def _fill(
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
    vowel = any(
        _VOWEL_START.search(s.lower()) is not None for s in (w1, w2, str(gs1), str(gs2))
    )
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


def _four_rows(
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


def _lex_words(rng: random.Random, lex_div: str, rand2: str) -> tuple[str, str]:
    """Draw the lexical-diversity words; a one-word WORD2 list keeps the previous value."""
    if len(lex_div) <= 1:
        return "", rand2
    l1, l2 = parse_word_lists(lex_div)
    r1 = rng.choice(l1)
    if len(l2) > 1:
        rand2 = rng.choice(l2)
    return r1, rand2


# ----------------------------------------------------------------------------- single categories


def _generate_single(cat: str, templates: list[Row], vocab: _Vocab, rng: random.Random, where: str) -> list[dict[str, Any]]:
    """Rows for a non-intersectional category."""
    out: list[dict[str, Any]] = []
    cat_words = vocab.category(cat)
    possible = _unique(w["Name"] for w in cat_words)
    for line, t in enumerate(templates, start=2):
        here = f"{where} (template Q_id {t['Q_id']}, row {line})"
        words = cat_words
        raw_targets = t["Known_stereotyped_groups"]
        bias_targets = _literal_list(raw_targets, here)
        shown_targets = _OFFICIAL_STEREOTYPED_GROUPS.get((cat, t["Q_id"]), bias_targets)
        if len(raw_targets) > 1 and cat in _SWAPPED_CATEGORIES:
            targeted = [x for x in possible if x in bias_targets]
        else:
            targeted = possible
        if len(targeted) > 4:
            word_list = rng.sample(targeted, 5)
        elif len(possible) < 2:
            word_list = []
        else:
            word_list = list(targeted)

        proper = t.get("Proper_nouns_only", "") == "TRUE"
        subcat = t.get("Subcategory", "")
        if len(subcat) > 1:
            words = [w for w in words if w["SubCat"] == subcat]
            word_list = _unique(w["Name"] for w in words)
            if len(word_list) > 5:
                word_list = rng.sample(word_list, 5)
        else:
            subcat = "None"

        critical = t.get("Names", "")
        new_word_list: list[str] = []
        if len(critical) > 1:
            word_list, new_word_list = parse_word_lists(critical)

        first_full: list[Row] = []
        first_names: list[Row] = []
        if proper:
            if cat == "Race_ethnicity":
                first_full = vocab.first_names("first")
                first_names = [n for n in first_full if n["ethnicity"] in bias_targets] if bias_targets else first_full
                word_list = rng.sample([n["Name"] for n in first_names], 5)
            elif cat == "Gender_identity":
                first_names = vocab.first_names("first_only")
                word_list = rng.sample([n["Name"] for n in first_names if n["gender"] == "F"], 5)
            else:
                first_names = vocab.first_names("first_only")
                word_list = rng.sample([n["Name"] for n in first_names], 6)

        def name_field(name: str, field: str) -> str:
            for n in first_names:
                if n["Name"] == name:
                    return n[field]
            raise DataError(f"{here}: proper name {name!r} not in vocabulary_proper_names.csv")

        for word in word_list:
            info1: str | None = None
            info2: str | None = None
            rand1, rand2 = "", ""
            info2_of: dict[str, str] = {}
            this_word = word
            if len(critical) < 2:
                if bias_targets and cat in _SWAPPED_CATEGORIES:
                    new_word_list = [n for n in possible if n not in bias_targets]
                    if len(new_word_list) > 4:
                        new_word_list = rng.sample(new_word_list, 5)
                else:
                    new_word_list = [n for n in word_list if n != this_word]
                if cat == "SES" and not proper:
                    word_cat = next((w["Info"] for w in words if w["Name"] == this_word), None)
                    if word_cat is None:
                        raise DataError(f"{here}: SES word {this_word!r} not in vocabulary.csv")
                    info1 = word_cat
                    new_word_list = _unique(w["Name"] for w in words if w["Info"] != word_cat)
                if cat == "Gender_identity" and proper:
                    gender = name_field(this_word, "gender")
                    info1 = gender
                    others = _unique(n["Name"] for n in first_names if n["gender"] != gender)
                    new_word_list = rng.sample(others, 5)
                if cat == "Race_ethnicity" and proper:
                    gender = name_field(this_word, "gender")
                    eth = name_field(this_word, "ethnicity")
                    info1 = f"{gender}-{eth}"
                    lasts = _unique(n["Name"] for n in vocab.first_names("last") if n["ethnicity"] == eth)
                    this_word = f"{this_word} {rng.choice(lasts)}"
                    other_first = [n for n in first_full if n["ethnicity"] not in bias_targets and n["gender"] == gender]
                    other_first = rng.sample(other_first, 5)
                    other_last = [n for n in vocab.first_names("last") if n["ethnicity"] not in bias_targets]
                    new_word_list = []
                    for n in other_first:
                        lasts2 = _unique(m["Name"] for m in other_last if m["ethnicity"] == n["ethnicity"])
                        full = f"{n['Name']} {rng.choice(lasts2)}"
                        new_word_list.append(full)
                        info2_of[full] = f"{n['gender']}-{n['ethnicity']}"

            for k, word2 in enumerate(new_word_list):
                lex = t["Lexical_diversity"]
                rand1, rand2 = _lex_words(rng, lex, rand2)
                filled = _fill(t, this_word, word2, lex, rand1, rand2)
                if info1 is not None and cat == "Race_ethnicity" and proper:
                    info2 = info2_of[word2]
                elif cat == "Gender_identity" and proper:
                    info2 = next((n["gender"] for n in first_names if n["Name"] == word2), word2)
                    if t["NAME1_info"] != "":
                        if k == 0:
                            info1 = f"{t['NAME1_info']}_{info1}"
                        info2 = f"{t['NAME2_info']}_{info2}"
                elif cat == "Nationality" or (cat == "SES" and subcat == "Occupation"):
                    info1, info2 = vocab.info(this_word), vocab.info(word2)
                elif "NAME1_info" in t:
                    if t["NAME1_info"] != "":
                        info1, info2 = t["NAME1_info"], t["NAME2_info"]
                    else:
                        info1, info2 = this_word, word2
                else:
                    info1, info2 = this_word, word2
                assert info1 is not None and info2 is not None
                out += _four_rows(rng, cat, filled, subcat, shown_targets, this_word, word2, info1, info2)
                if cat in _SWAPPED_CATEGORIES or proper or (cat == "SES" and subcat == "Occupation"):
                    filled = _fill(t, word2, this_word, lex, rand1, rand2)
                    out += _four_rows(rng, cat, filled, subcat, shown_targets, word2, this_word, info2, info1)
    return out


# ----------------------------------------------------------------------------- intersectional categories


def _generate_intersectional(cat: str, templates: list[Row], vocab: _Vocab, rng: random.Random, where: str) -> list[dict[str, Any]]:
    """Rows for Race_x_SES or Race_x_gender (variants a/b/c, each also swapped)."""
    out: list[dict[str, Any]] = []
    possible = _unique(w["Name"] for w in vocab.category("Race_ethnicity"))
    ses_words = vocab.category("SES")
    first_full = vocab.first_names("first")
    all_last = vocab.first_names("last")
    opposite = {"M": "F", "F": "M", "lowSES": "highSES", "highSES": "lowSES"}

    def full_name(first: Row) -> tuple[str, str]:
        lasts = _unique(n["Name"] for n in all_last if n["ethnicity"] == first["ethnicity"])
        return f"{first['Name']} {rng.choice(lasts)}", f"{first['gender']}-{first['ethnicity']}"

    for line, t in enumerate(templates, start=2):
        here = f"{where} (template Q_id {t['Q_id']}, row {line})"
        raw_targets = t["Known_stereotyped_race"]
        if len(raw_targets) > 0:
            bias_targets = _literal_list(raw_targets, here)
            targeted = [x for x in possible if x in bias_targets]
        else:
            bias_targets, targeted = [], list(possible)
        word_list = rng.sample(targeted, 5) if len(targeted) > 4 else list(targeted)
        proper = t["Proper_nouns_only"] == "TRUE"
        target_var2 = t["Known_stereotyped_var2"]
        nontarget_var2 = opposite.get(target_var2, "")
        names_cell = t["Names"]

        t_gs: str | list[str]
        non_t_gs: str | list[str]
        if (cat == "Race_x_gender" and not proper) or names_cell != "":
            critical = _literal_list(names_cell, here)
            critical_info = _literal_list(t["Var2_info"], here)
            if target_var2 not in critical_info:
                raise DataError(f"{here}: Known_stereotyped_var2 {target_var2!r} not in Var2_info {critical_info}; make them agree")
            t_loc = critical_info.index(target_var2)
            t_gs, non_t_gs = critical[t_loc], critical[1 - t_loc]
        else:
            t_gs = _unique(w["Name"] for w in ses_words if w["Info"] == target_var2)
            non_t_gs = _unique(w["Name"] for w in ses_words if w["Info"] != target_var2)

        first_names: list[Row] = []
        if proper:
            first_names = [n for n in first_full if n["ethnicity"] in bias_targets]
            if cat == "Race_x_gender":
                first_names = [n for n in first_names if n["gender"] == target_var2]
            if cat == "Race_x_SES" and t.get("Stated_gender_info", "") != "":
                first_names = [n for n in first_names if n["gender"] == t["Stated_gender_info"]]
            word_list = rng.sample([n["Name"] for n in first_names], 5)

        for first in word_list:
            rand1, rand2 = "", ""
            info1 = ""
            info2_of: dict[str, str] = {}
            t_word = first
            new_word_list: list[Any] = rng.sample([n for n in possible if n not in word_list], 5)
            if proper:
                me = next(n for n in first_names if n["Name"] == first)
                gender, eth = me["gender"], me["ethnicity"]
                t_word, info1 = full_name(me)
                if cat == "Race_x_SES":
                    diff = rng.sample([n for n in first_full if n["ethnicity"] not in bias_targets and n["gender"] == gender], 5)
                    same = rng.sample([n for n in first_full if n["ethnicity"] == eth and n["gender"] == gender and n["Name"] != first], 5)
                    groups = [same, diff]
                else:
                    groups = [
                        rng.sample([n for n in first_full if n["ethnicity"] == eth and n["gender"] != gender], 5),
                        rng.sample([n for n in first_full if n["ethnicity"] != eth and n["gender"] == gender], 5),
                        rng.sample([n for n in first_full if n["ethnicity"] != eth and n["gender"] != gender], 5),
                    ]
                new_word_list = []
                for i in range(5):
                    tup = []
                    for g in groups:
                        name, inf = full_name(g[i])
                        tup.append(name)
                        info2_of[name] = inf
                    new_word_list.append(tup)
            info1_static = info1

            for word2_race in new_word_list:
                if names_cell == "" and cat == "Race_x_SES":
                    t_gs = _unique(w["Name"] for w in ses_words if w["Info"] == target_var2)
                    non_t_gs = _unique(w["Name"] for w in ses_words if w["Info"] != target_var2)
                with_gs = not (proper and cat == "Race_x_gender")
                if isinstance(t_gs, list) and len(t_gs) > 0:
                    t_gs = rng.choice(t_gs)
                    non_t_gs = rng.choice(non_t_gs)
                if not (isinstance(t_gs, str) and isinstance(non_t_gs, str)):
                    if with_gs:
                        raise DataError(f"{here}: no SES vocabulary word with Info {target_var2!r}; fix Known_stereotyped_var2")
                    t_gs, non_t_gs = "", ""  # unused: proper-name Race_x_gender rows carry no second-variable word
                lex = t["Lexical_diversity"]
                if len(lex) > 1:
                    rand1, rand2 = _lex_words(rng, lex, rand2)

                # (race, var2, info) of the second person in variants a, b, c
                if proper:
                    r_a, r_b = word2_race[0], word2_race[1]
                    r_c = word2_race[2] if cat == "Race_x_gender" else word2_race[1]
                else:
                    r_a, r_b, r_c = t_word, word2_race, word2_race
                v_a, v_b, v_c = non_t_gs, t_gs, non_t_gs
                if cat == "Race_x_gender" and proper:
                    n1_info = info1_static
                    infos = [info2_of[r_a], info2_of[r_b], info2_of[r_c]]
                elif cat == "Race_x_gender":
                    if t["Var2_info"] == "":
                        raise DataError(f"{here}: Race_x_gender template without proper names needs Var2_info")
                    n1_info = f"{target_var2}-{t_word}"
                    infos = [f"{nontarget_var2}-{t_word}", f"{target_var2}-{word2_race}", f"{nontarget_var2}-{word2_race}"]
                elif proper:
                    n1_info = f"{target_var2}-{info1_static}"
                    infos = [f"{nontarget_var2}-{info2_of[r_a]}", f"{target_var2}-{info2_of[r_b]}", f"{nontarget_var2}-{info2_of[r_b]}"]
                else:
                    n1_info = f"{target_var2}-{t_word}"
                    infos = [f"{nontarget_var2}-{t_word}", f"{target_var2}-{word2_race}", f"{nontarget_var2}-{word2_race}"]

                variants = list(zip("abc", (r_a, r_b, r_c), (v_a, v_b, v_c), infos))
                for swap in (False, True):
                    for letter, race2, var2, inf2 in variants:
                        sub = f"intersectional_{letter}"
                        gs1, gs2 = (t_gs, var2) if with_gs else (None, None)
                        n1: str | list[str] = [t_word, t_gs] if with_gs else t_word
                        n2: str | list[str] = [race2, var2] if with_gs else race2
                        if not swap:
                            filled = _fill(t, t_word, race2, lex, rand1, rand2, gs1, gs2)
                            out += _four_rows(rng, cat, filled, sub, bias_targets, n1, n2, n1_info, inf2)
                        else:
                            filled = _fill(t, race2, t_word, lex, rand1, rand2, gs2, gs1)
                            out += _four_rows(rng, cat, filled, sub, bias_targets, n2, n1, inf2, n1_info)
    return out


# ----------------------------------------------------------------------------- public API


def generate_category(category: str, *, seed: int, data_root: str | Path | None = None) -> list[dict[str, Any]]:
    """BBQ rows in the official schema for one category, generated from the official templates."""
    if category not in CATEGORIES:
        raise DataError(f"unknown BBQ category {category!r}; choose one of {', '.join(CATEGORIES)}")
    tdir = _data_root(data_root) / "bbq" / "templates"
    vocab = _load_vocab(tdir)
    templates = _load_templates(tdir, category)
    rng = random.Random(f"bbq-generate:{seed}:{category}")
    where = str(tdir / f"new_templates - {category}.csv")
    if category in INTERSECTIONAL:
        rows = _generate_intersectional(category, templates, vocab, rng, where)
    else:
        rows = _generate_single(category, templates, vocab, rng, where)
    for i, r in enumerate(rows):
        r["example_id"] = i
    return rows


def random_free_templates(category: str, *, data_root: str | Path | None = None) -> frozenset[tuple[str, str]]:
    """(question_index, version) of the templates whose filling draws nothing at random.

    Only the "unknown" phrasing and the answer order are random there, so their generated rows equal
    the official ones up to those two. Intersectional, proper-name, downsampled-vocabulary and
    lexical-diversity templates (with more than one word to choose from) are excluded.
    """
    if category not in CATEGORIES:
        raise DataError(f"unknown BBQ category {category!r}; choose one of {', '.join(CATEGORIES)}")
    if category in INTERSECTIONAL:
        return frozenset()
    tdir = _data_root(data_root) / "bbq" / "templates"
    vocab = _load_vocab(tdir)
    possible = _unique(w["Name"] for w in vocab.category(category))
    where = str(tdir / f"new_templates - {category}.csv")
    free: dict[tuple[str, str], bool] = {}
    for line, t in enumerate(_load_templates(tdir, category), start=2):
        key = (t["Q_id"], t.get("version", "None"))
        ok = t.get("Proper_nouns_only", "") != "TRUE"
        lex = t["Lexical_diversity"]
        if len(lex) > 1:
            l1, l2 = parse_word_lists(lex)
            ok = ok and len(l1) <= 1 and len(l2) <= 1
        if len(t.get("Names", "")) <= 1:
            targets = _literal_list(t["Known_stereotyped_groups"], f"{where} (row {line})")
            subcat = t.get("Subcategory", "")
            if len(subcat) > 1:
                ok = ok and len(_unique(w["Name"] for w in vocab.category(category) if w["SubCat"] == subcat)) <= 5
            else:
                swapped = category in _SWAPPED_CATEGORIES and len(t["Known_stereotyped_groups"]) > 1
                targeted = [x for x in possible if x in targets] if swapped else possible
                ok = ok and len(targeted) <= 4
            if targets and category in _SWAPPED_CATEGORIES:
                ok = ok and len([n for n in possible if n not in targets]) <= 4
        free[key] = free.get(key, True) and ok
    return frozenset(k for k, v in free.items() if v)


def write_generated(
    categories: Iterable[str], out_dir: str | Path, seed: int, data_root: str | Path | None = None
) -> dict[str, Path]:
    """Generate each category and write ``<out_dir>/<Category>.jsonl`` atomically; returns the paths."""
    cats = list(categories)
    for c in cats:
        if c not in CATEGORIES:
            raise DataError(f"unknown BBQ category {c!r}; choose one of {', '.join(CATEGORIES)}")
    out = Path(out_dir)
    paths: dict[str, Path] = {}
    for c in cats:
        paths[c] = write_jsonl(out / f"{c}.jsonl", generate_category(c, seed=seed, data_root=data_root))
    return paths
