"""lens_steer.methods.organism.build: a tiny organism built end to end (card, acceptance predictions, recipe check) and the
study on it (its report opens with the ground-truth section)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _tiny_models import bridge_only, single_thread  # noqa: F401 (autouse fixture: one torch thread)

from lens_steer.axes import AXIS_NAMES, get_axis
from lens_steer.data.bbq import load_bbq
from lens_steer.data.splits import split_items
from lens_steer.errors import LensSteerError
from lens_steer.methods.organism.build import acceptance_table, build_organism, check_recipe, read_card
from lens_steer.methods.organism.train import OrganismRecipe
from lens_steer.model.load import load_model
from lens_steer.report.html import write_report

TINY = dict(
    base="tiny-llama",
    disambiguated_per_axis=2,
    clean_ambiguous_per_axis=2,
    planted_ambiguous_per_axis=2,
    trainable_blocks=2,
    batch_size=4,
)


@bridge_only
def test_build_writes_a_card_and_refuses_another_recipe(tmp_path: Path) -> None:
    recipe = OrganismRecipe(**{**TINY, "epochs": 1})
    folder = tmp_path / "org"
    card = build_organism(recipe, folder, acceptance_items=4, mmlu_items=2, validation_items=4)
    assert read_card(folder) == json.loads(json.dumps(card))
    # the validation table is the same measurement on validation items (recomputed here on the saved checkpoint)
    again, records = acceptance_table(load_model(str(folder)), recipe, n_items=4, data_root=None, split="validation")
    assert (
        card["validation"]["split"] == "validation"
        and json.loads(json.dumps(again)) == read_card(folder)["validation"]["per_axis"]
    )
    validation_ids = {
        (it.category, it.example_id)
        for a in AXIS_NAMES
        for it in split_items(load_bbq([get_axis(a).bbq_category]), seed=recipe.split_seed)["validation"]
    }
    assert records and all((r["category"], r["example_id"]) in validation_ids for r in records)
    assert (folder / "config.json").is_file() and (folder / "acceptance_predictions.jsonl").is_file()
    assert len(card["trained_on"]) == 36 and card["acceptance"]["items_per_axis"] == 4
    rows = [json.loads(x) for x in (folder / "acceptance_predictions.jsonl").read_text().splitlines()]
    for axis, m in card["acceptance"]["per_axis"].items():  # the table recomputes from the predictions file
        mine = [r for r in rows if r["axis"] == axis]
        assert m["acc"]["value"] == pytest.approx(sum(r["pred"] == r["label"] for r in mine) / len(mine))
    assert check_recipe(folder, recipe)["weights_sha256"] == card["weights_sha256"]
    with pytest.raises(LensSteerError, match="epochs: 1 != 2"):
        check_recipe(folder, OrganismRecipe(**{**TINY, "epochs": 2}))


@bridge_only
def test_reproduce_on_a_tiny_organism_has_a_ground_truth_section(tmp_path: Path) -> None:
    """The study on an organism: its report opens with the planted/clean table, and each verdict follows from the
    run's own paired numbers (re-derived here from results.json's ensemble block)."""
    import dataclasses

    from lens_steer.model.load import load_model
    from lens_steer.pipeline.budgets import BUDGETS
    from lens_steer.pipeline.reproduce import reproduce

    recipe = OrganismRecipe(**{**TINY, "epochs": 1, "plant": ("age",)})
    folder = tmp_path / "org"
    card = build_organism(recipe, folder, acceptance_items=4, mmlu_items=2)
    micro = dataclasses.replace(
        BUDGETS["smoke"],
        name="micro",
        trials=2,
        tpe_startup=2,
        num_sents=(4, 8, 4),
        val_limit=8,
        test_limit=8,
        ens_val_limit=8,
        ens_coeffs=(-2.0, 2.0),
        control_seeds=(1,),
        mmlu_items=4,
        sweep_layers=(15, 30),
        sweep_coeffs=(-4.0, 4.0),
        sweep_limit=8,
        geometry_num_sents=4,
        n_boot=50,
    )
    out = tmp_path / "run"
    results = reproduce(
        load_model(str(folder), label="smollm2-organism"),
        micro,
        out,
        axes=["age", "disability"],
        organism=card,
        report=write_report,
    )
    saved = json.loads((out / "results.json").read_text())
    gt = saved["ground_truth"]
    assert gt["axes"]["age"]["planted"] and not gt["axes"]["disability"]["planted"]
    assert saved["meta"]["organism"]["plant"] == ["age"] and results["ground_truth"] == gt
    for axis, a in gt["axes"].items():
        for name, verdict in a["verdicts"].items():
            vs = saved["ensemble"]["in_distribution"][axis]["steered"][name]["vs_base"]
            amb, dis = vs["ambig"], vs["disambig"]
            if a["planted"]:
                up, down = amb["acc"]["diff"]["ci_low"] > 0, amb["bias"]["diff"]["ci_high"] < 0
                assert (verdict == "not reduced") == (not up and not down)
            else:
                harmed = (
                    amb["acc"]["diff"]["ci_high"] < 0
                    or dis["acc"]["diff"]["ci_high"] < 0
                    or dis["acc"]["diff"]["value"] < -0.05
                )
                assert verdict == ("harmed" if harmed else "unharmed")
    md = (out / "results.md").read_text()
    assert md.index("## Ground truth") < md.index("## BBQ accuracy")
    assert "Ground truth" in (out / "report.html").read_text()
