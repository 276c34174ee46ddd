"""README's "Supported model families" table, from a run of the architecture matrix (tests/test_architectures.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/family_matrix.py [--junit results.xml]

Runs the matrix with pytest (or reads a JUnit XML it wrote) and prints one Markdown row per family: the
family facts from `lens_steer.model.architectures` and, per path, "pass" when every test of that path passed on
the family, "skip" (with the reason) or "FAIL n/m".
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _arch_checkpoints import FAMILIES  # noqa: E402

from lens_steer.model.architectures import family_of  # noqa: E402

PATHS = [  # (column, test function names)
    (
        "load by path",
        ("test_load_model_by_path_matches_plain_hf", "test_decoder_layer_paths_name_the_modules_of_each_family"),
    ),
    ("`info`", ("test_info_command_on_the_folder",)),
    (
        "system prompt",
        (
            "test_system_prompt_is_never_dropped_and_the_mode_is_recorded",
            "test_persona_pairs_and_their_vector_record_the_system_prompt_mode",
        ),
    ),
    ("extraction (3 methods)", ("test_extraction_with_each_method_equals_hf_hidden_states",)),
    ("steering (3 position modes)", ("test_steered_logits_equal_an_hf_forward_hook",)),
    ("greedy: KV = no KV = HF", ("test_greedy_generation_same_with_and_without_kv_cache_and_as_hf",)),
    (
        "residual reuse",
        (
            "test_blocks_run_from_a_stored_residual_equal_a_full_forward",
            "test_blocks_run_from_stored_residuals_with_a_kv_cache_equal_one_sequence",
        ),
    ),
    ("shared-prompt cloze", ("test_cloze_with_the_shared_prompt_cache_equals_separate_forwards",)),
    ("2 search trials", ("test_two_search_trials",)),
    ("bf16", ("test_bfloat16_load_scores_close_to_float32_and_vectors_stay_float32",)),
    ("export (hf, lm-eval, gguf)", ("test_exported_vector_steers_plain_hf_as_lens_steer_does",)),
]
_ID = re.compile(r"^(?P<fn>test_\w+)\[(?P<params>[^\]]+)\]$")
SYSTEM = {
    "accepted": "system turn",
    "refused": "refused: folded into user turn",
    "dropped": "dropped: folded into user turn",
    "none": "no template (plain text)",
}


def run_matrix(junit: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "test_architectures.py"),
        f"--junitxml={junit}",
    ]
    subprocess.run(cmd, cwd=ROOT, check=False)


def outcomes(junit: Path) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """{(test function, family): [(outcome, skip reason)]} from a JUnit XML file."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
    for case in ET.parse(junit).getroot().iter("testcase"):
        m = _ID.match(case.get("name", ""))
        if not m:
            continue
        family = next((p for p in m.group("params").split("-") if p in FAMILIES), None)
        if family is None:
            continue
        skipped = case.find("skipped")
        failed = case.find("failure") is not None or case.find("error") is not None
        state = "fail" if failed else "skip" if skipped is not None else "pass"
        reason = (skipped.get("message", "") if skipped is not None else "").removeprefix("Skipped: ")
        out[(m.group("fn"), family)].append((state, reason))
    return out


def cell(results: list[tuple[str, str]]) -> str:
    if not results:
        return "not run"
    fails = sum(s == "fail" for s, _ in results)
    if fails:
        return f"FAIL {fails}/{len(results)}"
    skips = [r for s, r in results if s == "skip"]
    if len(skips) == len(results):
        return f"skip ({skips[0][:60]})"
    return "pass" + (f" ({len(skips)} skipped)" if skips else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--junit", default=None, help="read this JUnit XML instead of running the matrix")
    args = parser.parse_args()
    junit = Path(args.junit) if args.junit else Path(tempfile.mkdtemp()) / "matrix.xml"
    if not args.junit:
        run_matrix(junit)
    res = outcomes(junit)
    print("| family (HF class) | system prompt | sliding window | " + " | ".join(c for c, _ in PATHS) + " |")
    print("|---" * (3 + len(PATHS)) + "|")
    for key, fam in FAMILIES.items():
        info = family_of(fam.architecture)
        window = (
            {"never": "none", "config": "if the config sets one", "interleaved": "interleaved layers"}[
                info.sliding_window
            ]
            if info
            else "?"
        )
        cells = [cell([r for fn in fns for r in res.get((fn, key), [])]) for _, fns in PATHS]
        print(
            f"| {info.name if info else key} (`{fam.architecture}`) | {SYSTEM[fam.system_turn]} | {window} | "
            + " | ".join(cells)
            + " |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
