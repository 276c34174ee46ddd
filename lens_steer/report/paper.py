"""The paper this project reproduces: its citation, its published BBQ and MMLU numbers, and its four claims."""

from __future__ import annotations

from typing import Any

CITATION = (
    'Siddique et al. 2025, "Shifting Perspectives: Steering Vector Ensembles for Robust Bias Mitigation in LLMs", '
    "arXiv 2503.05371"
)
SHORT_CITATION = "Siddique et al. (2025)"
PAPER_URL = "https://arxiv.org/abs/2503.05371"

PAPER_MODELS: tuple[str, ...] = ("Mistral-7B-Instruct-v0.1", "Llama-3.1-8B-Instruct", "Qwen2.5-7B-Instruct")
PAPER_AXES: tuple[str, ...] = (
    "age",
    "physical_appearance",
    "disability",
    "gender_identity",
    "nationality",
    "race_ethnicity",
    "religion",
    "sexual_orientation",
    "ses",
)
PAPER_AXIS_LABELS: dict[str, str] = {
    "age": "age",
    "physical_appearance": "physical appearance",
    "disability": "disability",
    "gender_identity": "gender",
    "nationality": "nationality",
    "race_ethnicity": "race",
    "religion": "religion",
    "sexual_orientation": "sexual orientation",
    "ses": "SES",
}


def _paper_rows(*rows: tuple[float, float, float]) -> dict[str, dict[str, float]]:
    return {axis: {"baseline": b, "isv": i, "sve": s} for axis, (b, i, s) in zip(PAPER_AXES, rows, strict=True)}


PAPER_TABLE: dict[str, Any] = {
    "source": f"{CITATION}, v1",
    "metric": "BBQ accuracy %, ambiguous and disambiguated pooled; reference letter scoring by generation; no "
    "held-out split",
    "models": {
        "Mistral-7B-Instruct-v0.1": {
            "bbq": _paper_rows(
                (43.9, 55.2, 59.0),
                (52.2, 62.0, 67.3),
                (50.4, 66.4, 65.4),
                (51.6, 63.9, 64.4),
                (55.4, 72.3, 73.6),
                (56.5, 66.2, 71.7),
                (56.5, 66.6, 70.3),
                (49.1, 61.8, 68.3),
                (52.4, 63.7, 69.3),
            ),
            "mean_gain": {"isv": 12.2, "sve": 15.7},
            "mmlu": {"baseline": 50.1, "sve": 46.6},
        },
        "Llama-3.1-8B-Instruct": {
            "bbq": _paper_rows(
                (62.2, 67.0, 67.9),
                (63.1, 65.1, 66.9),
                (68.4, 74.3, 74.7),
                (66.2, 76.1, 72.6),
                (76.1, 81.8, 82.4),
                (80.7, 84.1, 86.8),
                (75.8, 78.3, 79.9),
                (79.7, 82.5, 81.6),
                (68.9, 74.5, 75.2),
            ),
            "mean_gain": {"isv": 4.7, "sve": 5.2},
            "mmlu": {"baseline": 57.5, "sve": 58.1},
        },
        "Qwen2.5-7B-Instruct": {
            "bbq": _paper_rows(
                (74.3, 80.0, 80.6),
                (75.6, 77.1, 77.2),
                (77.6, 79.7, 77.9),
                (77.5, 83.2, 82.1),
                (82.5, 85.3, 83.9),
                (88.6, 91.0, 91.1),
                (78.2, 80.7, 81.1),
                (84.7, 87.4, 86.1),
                (86.0, 89.4, 89.0),
            ),
            "mean_gain": {"isv": 3.2, "sve": 2.7},
            "mmlu": {"baseline": 66.7, "sve": 66.9},
        },
    },
}

CLAIMS: dict[str, str] = {
    "isv_every_axis": "ISV beats the baseline on every axis",
    "sve_beats_isv": "SVE beats the mean ISV on bias (BBQ accuracy) and keeps MMLU",
    "sve_ood": "SVE is steadier out of distribution (intersectional categories never used in optimisation)",
    "merged_worse": 'One "merged datasets" vector does worse than SVE',
}
