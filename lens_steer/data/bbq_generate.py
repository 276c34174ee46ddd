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

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lens_steer.data.bbq import BBQ_CATEGORIES
from lens_steer.data.bbq_templates import (
    Row,
    Vocab,
    fill,
    four_rows,
    lex_words,
    literal_list,
    load_templates,
    load_vocab,
    parse_word_lists,
    templates_root,
    unique,
)
from lens_steer.errors import DataError
from lens_steer.files import write_jsonl

# every BBQ category has templates (Filler_items.csv is not a category)
CATEGORIES: tuple[str, ...] = BBQ_CATEGORIES
INTERSECTIONAL: tuple[str, ...] = ("Race_x_SES", "Race_x_gender")


# categories whose second word is drawn from the non-target groups and whose pairs are also swapped
_SWAPPED_CATEGORIES = ("Race_ethnicity", "Religion", "Nationality", "Sexual_orientation")

# stereotyped_groups of the official files where the released templates were edited afterwards
# (seen in the official Gender_identity rows 300-1199; templates outside that range cannot be checked)
_OFFICIAL_STEREOTYPED_GROUPS: dict[tuple[str, str], list[str]] = {
    ("Gender_identity", "13"): ["woman"],
    ("Gender_identity", "14"): ["woman"],
    ("Gender_identity", "15"): ["woman"],
}


# ----------------------------------------------------------------------------- single categories


def _generate_single(
    cat: str, templates: list[Row], vocab: Vocab, rng: random.Random, where: str
) -> list[dict[str, Any]]:
    """Rows for a non-intersectional category."""
    out: list[dict[str, Any]] = []
    cat_words = vocab.category(cat)
    possible = unique(w["Name"] for w in cat_words)
    for line, t in enumerate(templates, start=2):
        here = f"{where} (template Q_id {t['Q_id']}, row {line})"
        words = cat_words
        raw_targets = t["Known_stereotyped_groups"]
        bias_targets = literal_list(raw_targets, here)
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
            word_list = unique(w["Name"] for w in words)
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
                    new_word_list = unique(w["Name"] for w in words if w["Info"] != word_cat)
                if cat == "Gender_identity" and proper:
                    gender = name_field(this_word, "gender")
                    info1 = gender
                    others = unique(n["Name"] for n in first_names if n["gender"] != gender)
                    new_word_list = rng.sample(others, 5)
                if cat == "Race_ethnicity" and proper:
                    gender = name_field(this_word, "gender")
                    eth = name_field(this_word, "ethnicity")
                    info1 = f"{gender}-{eth}"
                    lasts = unique(n["Name"] for n in vocab.first_names("last") if n["ethnicity"] == eth)
                    this_word = f"{this_word} {rng.choice(lasts)}"
                    other_first = [
                        n for n in first_full if n["ethnicity"] not in bias_targets and n["gender"] == gender
                    ]
                    other_first = rng.sample(other_first, 5)
                    other_last = [n for n in vocab.first_names("last") if n["ethnicity"] not in bias_targets]
                    new_word_list = []
                    for n in other_first:
                        lasts2 = unique(m["Name"] for m in other_last if m["ethnicity"] == n["ethnicity"])
                        full = f"{n['Name']} {rng.choice(lasts2)}"
                        new_word_list.append(full)
                        info2_of[full] = f"{n['gender']}-{n['ethnicity']}"

            for k, word2 in enumerate(new_word_list):
                lex = t["Lexical_diversity"]
                rand1, rand2 = lex_words(rng, lex, rand2)
                filled = fill(t, this_word, word2, lex, rand1, rand2)
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
                out += four_rows(rng, cat, filled, subcat, shown_targets, this_word, word2, info1, info2)
                if cat in _SWAPPED_CATEGORIES or proper or (cat == "SES" and subcat == "Occupation"):
                    filled = fill(t, word2, this_word, lex, rand1, rand2)
                    out += four_rows(rng, cat, filled, subcat, shown_targets, word2, this_word, info2, info1)
    return out


# ----------------------------------------------------------------------------- intersectional categories


def _generate_intersectional(
    cat: str, templates: list[Row], vocab: Vocab, rng: random.Random, where: str
) -> list[dict[str, Any]]:
    """Rows for Race_x_SES or Race_x_gender (variants a/b/c, each also swapped)."""
    out: list[dict[str, Any]] = []
    possible = unique(w["Name"] for w in vocab.category("Race_ethnicity"))
    ses_words = vocab.category("SES")
    first_full = vocab.first_names("first")
    all_last = vocab.first_names("last")
    opposite = {"M": "F", "F": "M", "lowSES": "highSES", "highSES": "lowSES"}

    def full_name(first: Row) -> tuple[str, str]:
        lasts = unique(n["Name"] for n in all_last if n["ethnicity"] == first["ethnicity"])
        return f"{first['Name']} {rng.choice(lasts)}", f"{first['gender']}-{first['ethnicity']}"

    for line, t in enumerate(templates, start=2):
        here = f"{where} (template Q_id {t['Q_id']}, row {line})"
        raw_targets = t["Known_stereotyped_race"]
        if len(raw_targets) > 0:
            bias_targets = literal_list(raw_targets, here)
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
            critical = literal_list(names_cell, here)
            critical_info = literal_list(t["Var2_info"], here)
            if target_var2 not in critical_info:
                raise DataError(
                    f"{here}: Known_stereotyped_var2 {target_var2!r} not in Var2_info {critical_info}; make them agree"
                )
            t_loc = critical_info.index(target_var2)
            t_gs, non_t_gs = critical[t_loc], critical[1 - t_loc]
        else:
            t_gs = unique(w["Name"] for w in ses_words if w["Info"] == target_var2)
            non_t_gs = unique(w["Name"] for w in ses_words if w["Info"] != target_var2)

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
                    diff = rng.sample(
                        [n for n in first_full if n["ethnicity"] not in bias_targets and n["gender"] == gender], 5
                    )
                    same = rng.sample(
                        [
                            n
                            for n in first_full
                            if n["ethnicity"] == eth and n["gender"] == gender and n["Name"] != first
                        ],
                        5,
                    )
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
                    t_gs = unique(w["Name"] for w in ses_words if w["Info"] == target_var2)
                    non_t_gs = unique(w["Name"] for w in ses_words if w["Info"] != target_var2)
                with_gs = not (proper and cat == "Race_x_gender")
                if isinstance(t_gs, list) and len(t_gs) > 0:
                    t_gs = rng.choice(t_gs)
                    non_t_gs = rng.choice(non_t_gs)
                if not (isinstance(t_gs, str) and isinstance(non_t_gs, str)):
                    if with_gs:
                        raise DataError(
                            f"{here}: no SES vocabulary word with Info {target_var2!r}; fix Known_stereotyped_var2"
                        )
                    t_gs, non_t_gs = "", ""  # unused: proper-name Race_x_gender rows carry no second-variable word
                lex = t["Lexical_diversity"]
                if len(lex) > 1:
                    rand1, rand2 = lex_words(rng, lex, rand2)

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
                    infos = [
                        f"{nontarget_var2}-{t_word}",
                        f"{target_var2}-{word2_race}",
                        f"{nontarget_var2}-{word2_race}",
                    ]
                elif proper:
                    n1_info = f"{target_var2}-{info1_static}"
                    infos = [
                        f"{nontarget_var2}-{info2_of[r_a]}",
                        f"{target_var2}-{info2_of[r_b]}",
                        f"{nontarget_var2}-{info2_of[r_b]}",
                    ]
                else:
                    n1_info = f"{target_var2}-{t_word}"
                    infos = [
                        f"{nontarget_var2}-{t_word}",
                        f"{target_var2}-{word2_race}",
                        f"{nontarget_var2}-{word2_race}",
                    ]

                variants = list(zip("abc", (r_a, r_b, r_c), (v_a, v_b, v_c), infos))
                for swap in (False, True):
                    for letter, race2, var2, inf2 in variants:
                        sub = f"intersectional_{letter}"
                        gs1, gs2 = (t_gs, var2) if with_gs else (None, None)
                        n1: str | list[str] = [t_word, t_gs] if with_gs else t_word
                        n2: str | list[str] = [race2, var2] if with_gs else race2
                        if not swap:
                            filled = fill(t, t_word, race2, lex, rand1, rand2, gs1, gs2)
                            out += four_rows(rng, cat, filled, sub, bias_targets, n1, n2, n1_info, inf2)
                        else:
                            filled = fill(t, race2, t_word, lex, rand1, rand2, gs2, gs1)
                            out += four_rows(rng, cat, filled, sub, bias_targets, n2, n1, inf2, n1_info)
    return out


# ----------------------------------------------------------------------------- public API


def generate_category(category: str, *, seed: int, data_root: str | Path | None = None) -> list[dict[str, Any]]:
    """BBQ rows in the official schema for one category, generated from the official templates."""
    if category not in CATEGORIES:
        raise DataError(f"unknown BBQ category {category!r}; choose one of {', '.join(CATEGORIES)}")
    tdir = templates_root(data_root) / "bbq" / "templates"
    vocab = load_vocab(tdir)
    templates = load_templates(tdir, category)
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
    tdir = templates_root(data_root) / "bbq" / "templates"
    vocab = load_vocab(tdir)
    possible = unique(w["Name"] for w in vocab.category(category))
    where = str(tdir / f"new_templates - {category}.csv")
    free: dict[tuple[str, str], bool] = {}
    for line, t in enumerate(load_templates(tdir, category), start=2):
        key = (t["Q_id"], t.get("version", "None"))
        ok = t.get("Proper_nouns_only", "") != "TRUE"
        lex = t["Lexical_diversity"]
        if len(lex) > 1:
            l1, l2 = parse_word_lists(lex)
            ok = ok and len(l1) <= 1 and len(l2) <= 1
        if len(t.get("Names", "")) <= 1:
            targets = literal_list(t["Known_stereotyped_groups"], f"{where} (row {line})")
            subcat = t.get("Subcategory", "")
            if len(subcat) > 1:
                ok = ok and len(unique(w["Name"] for w in vocab.category(category) if w["SubCat"] == subcat)) <= 5
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
