"""A corpus of bad inputs run through the installed `lens-steer` command, as a user would run it.

Every bad case must exit non-zero with exactly one line on stderr that names the file, line or value
and says how to fix it; no traceback; no file created or changed anywhere under the case's folder.
Inputs that are merely unusual (CRLF line ends, a UTF-8 BOM, unknown extra fields) must be accepted.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "bbq" / "data" / "Age.jsonl").is_file(),
    reason=f"missing data: shared BBQ data not found at {DATA}; set LENS_STEER_DATA",
)
CLI = Path(sys.executable).parent / "lens-steer"
TINY = ["--model", "tiny-llama"]
PAIRS = [{"positive": f"I am young and I like item {i}", "negative": f"I am old and I like item {i}"} for i in range(6)]


# ----------------------------------------------------------------------------- the world every case reads
def _bbq_lines(n: int = 24) -> list[str]:
    with (DATA / "bbq" / "data" / "Age.jsonl").open(encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(n)]


def _bbq_root(root: Path, lines: list[str], *, newline: str = "\n", bom: bool = False) -> Path:
    path = root / "bbq" / "data" / "Age.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + "".join(line + newline for line in lines).encode("utf-8"))
    return root


def _with_row(lines: list[str], index: int, change: Callable[[dict[str, Any]], None]) -> list[str]:
    rows = [json.loads(line) for line in lines]
    change(rows[index])
    return [json.dumps(r) for r in rows]


def _pairs_file(
    path: Path, rows: list[Any], *, newline: str = "\n", bom: bool = False, raw: bytes | None = None
) -> Path:
    if raw is not None:
        path.write_bytes(raw)
        return path
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + newline for r in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], d_model: int, model: str = "tiny-llama") -> Path:
    from safetensors.torch import save

    meta = {
        "model_name": model,
        "d_model": d_model,
        "hook": "hook_resid_post",
        "method": "mean_diff",
        "processing": {
            "fold_ln": False,
            "center_writing_weights": False,
            "center_unembed": False,
            "fold_value_biases": False,
        },
    }
    path.write_bytes(save(tensors, metadata={"lens_steer": json.dumps(meta)}))
    return path


class _RunsCode:
    """Unpickling this creates the canary file: proof that a loader executed code from data."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.canary, "w"))


def _hf_folder(path: Path, *, corrupt_weights: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from lens_steer.model.load import tiny_tokenizer

    tok = tiny_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        architectures=["LlamaForCausalLM"],
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    if corrupt_weights:
        weights = path / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:200])
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Every input file the cases name, built once; `{name}` placeholders in the cases refer to these paths."""
    w = tmp_path_factory.mktemp("world")
    lines = _bbq_lines()
    paths: dict[str, Path] = {"data": DATA, "w": w}
    (w / "empty_root").mkdir()
    paths["empty_root"] = w / "empty_root"
    truncated = list(lines)
    truncated[4] = truncated[4][: len(truncated[4]) // 2]
    paths["bbq_truncated"] = _bbq_root(w / "bbq_truncated", truncated)
    paths["bbq_label3"] = _bbq_root(w / "bbq_label3", _with_row(lines, 2, lambda r: r.update(label=3)))
    paths["bbq_no_info"] = _bbq_root(w / "bbq_no_info", _with_row(lines, 1, lambda r: r.pop("answer_info")))
    paths["bbq_not_utf8"] = _bbq_root(w / "bbq_not_utf8", lines)
    bad = paths["bbq_not_utf8"] / "bbq" / "data" / "Age.jsonl"
    bad.write_bytes(bad.read_bytes().replace(b"grandson", b"grands\xffn", 1))
    # merely unusual: accepted
    paths["bbq_crlf"] = _bbq_root(w / "bbq_crlf", lines, newline="\r\n")
    paths["bbq_bom"] = _bbq_root(w / "bbq_bom", lines, bom=True)
    paths["bbq_extra"] = _bbq_root(
        w / "bbq_extra", [json.dumps({**json.loads(x), "annotator_note": "<b>extra</b>", "x_id": 7}) for x in lines]
    )

    paths["pairs"] = _pairs_file(w / "pairs.jsonl", PAIRS)
    paths["pairs_empty"] = _pairs_file(w / "pairs_empty.jsonl", [])
    paths["pairs_one_side"] = _pairs_file(w / "pairs_one_side.jsonl", [PAIRS[0], {"positive": "only this side"}])
    paths["pairs_not_utf8"] = _pairs_file(
        w / "pairs_not_utf8.jsonl",
        [],
        raw=(json.dumps(PAIRS[0]) + "\n").encode() + b'{"positive": "caf\xe9", "negative": "tea"}\n',
    )
    paths["pairs_identical"] = _pairs_file(
        w / "pairs_identical.jsonl", [{"positive": p["positive"], "negative": p["positive"]} for p in PAIRS]
    )
    paths["pairs_not_json"] = _pairs_file(w / "pairs_not_json.jsonl", [PAIRS[0], "positive: a, negative: b"])
    paths["pairs_crlf"] = _pairs_file(w / "pairs_crlf.jsonl", PAIRS, newline="\r\n")
    paths["pairs_bom"] = _pairs_file(w / "pairs_bom.jsonl", PAIRS, bom=True)
    paths["pairs_extra"] = _pairs_file(
        w / "pairs_extra.jsonl", [{**p, "source": "another tool", "weight": 1.0} for p in PAIRS]
    )

    good = {"blocks.1.hook_resid_post": torch.randn(64, generator=torch.Generator().manual_seed(0))}
    paths["vec_good"] = _save_tensors(w / "good.safetensors", good, 64)
    paths["vec_text"] = w / "notes.safetensors"
    paths["vec_text"].write_text("this is a text file, not a vector\n")
    blob = paths["vec_good"].read_bytes()
    paths["vec_truncated"] = w / "truncated.safetensors"
    paths["vec_truncated"].write_bytes(blob[: len(blob) - 40])
    paths["canary"] = w / "canary-unpickled"
    paths["vec_pickle"] = w / "vector.pt"
    torch.save(
        {"blocks.1.hook_resid_post": good["blocks.1.hook_resid_post"], "payload": _RunsCode(paths["canary"])},
        paths["vec_pickle"],
    )
    for protocol in (4, 5):  # a legacy pickle written by plain pickle.dumps: torch warns about the protocol
        paths[f"vec_pickle{protocol}"] = w / f"legacy{protocol}.pt"
        paths[f"vec_pickle{protocol}"].write_bytes(
            pickle.dumps({"payload": _RunsCode(paths["canary"])}, protocol=protocol)
        )
    paths["vec_width"] = _save_tensors(w / "width32.safetensors", {"blocks.1.hook_resid_post": torch.ones(32)}, 32)
    nan = torch.ones(64)
    nan[3] = math.nan
    paths["vec_nan"] = _save_tensors(w / "nan.safetensors", {"blocks.1.hook_resid_post": nan}, 64)
    inf = torch.ones(64)
    inf[5] = math.inf
    paths["vec_inf"] = _save_tensors(w / "inf.safetensors", {"blocks.1.hook_resid_post": inf}, 64)

    (w / "model_no_config").mkdir()
    (w / "model_no_config" / "README.md").write_text("weights went missing\n")
    paths["model_no_config"] = w / "model_no_config"
    paths["model_corrupt"] = _hf_folder(w / "model_corrupt", corrupt_weights=True)

    paths["space_bad"] = w / "space_bad.json"
    paths["space_bad"].write_text('{"num_sents": [4, 8, 4],\n "layers": ["1"\n')
    paths["space_unknown_key"] = w / "space_unknown_key.json"
    paths["space_unknown_key"].write_text('{"num_sents": [4, 8, 4], "layerz": ["1"]}\n')
    paths["space_ok"] = w / "space_ok.json"
    paths["space_ok"].write_text('{"num_sents": [4, 8, 4], "layers": ["1", "2"]}\n')
    paths["a_file"] = w / "a_file.txt"
    paths["a_file"].write_text("an existing file, not a folder\n")
    paths["not_a_db"] = w / "not_a_db.sqlite"
    paths["not_a_db"].write_text("not a database\n")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    paths["db"] = w / "other.db"
    optuna.create_study(study_name="someone-else", storage=f"sqlite:///{paths['db']}")
    if os.geteuid() == 0:  # root ignores permission bits; /proc takes no new files and /proc/self is read-only
        paths["ro_db"] = Path("/proc/lens_steer_test/optuna.db")
        paths["ro_dir"] = Path("/proc/self")
    else:
        ro = w / "read_only"
        ro.mkdir()
        ro.chmod(0o555)
        paths["ro_db"] = ro / "optuna.db"
        paths["ro_dir"] = ro
    paths["port"] = Path(str(_free_port()))
    return {k: str(v) for k, v in paths.items()}


# ----------------------------------------------------------------------------- the cases
@dataclasses.dataclass(frozen=True)
class Case:
    """One command line with `{name}` placeholders and what its error line must contain."""

    id: str
    argv: tuple[str, ...]
    names: tuple[str, ...]  # substrings naming the file / line / value
    fix: tuple[str, ...]  # at least one of these words of advice
    env: tuple[tuple[str, str], ...] = ()


EVAL = ("eval", *TINY, "--bench", "bbq", "--categories", "Age", "--split", "all", "--limit", "4", "--n-boot", "10")
EXTRACT = ("extract", *TINY, "--layers", "1", "--out", "{out}/v.safetensors")
SWEEP = (
    "sweep",
    *TINY,
    "--axis",
    "age",
    "--layers",
    "1",
    "--limit",
    "4",
    "--n-boot",
    "0",
    "--num-sents",
    "3",
    "--data-dir",
    "{data}",
    "--out",
    "{out}",
)
SEARCH = (
    "search",
    *TINY,
    "--axis",
    "age",
    "--trials",
    "1",
    "--limit",
    "4",
    "--space",
    "{space_ok}",
    "--data-dir",
    "{data}",
)
# words of advice: an imperative, or the list of valid values
FIX = (
    "use",
    "pass",
    "set",
    "write",
    "give",
    "choose",
    "check",
    "save",
    "re-",
    "point",
    "create",
    "drop",
    "convert",
    "remove",
    "run",
    "install",
    "fix",
    "extract",
    "lower",
    "add",
    "must",
    "valid",
    "one of",
    "supports",
    "see ",
)

BAD: list[Case] = [
    # data
    Case(
        "data-root-without-bbq",
        ("eval", *TINY, "--bench", "bbq", "--data-dir", "{empty_root}", "--out", "{out}"),
        ("{empty_root}",),
        FIX,
    ),
    Case(
        "data-root-missing",
        ("eval", *TINY, "--bench", "bbq", "--data-dir", "{w}/nowhere", "--out", "{out}"),
        ("{w}/nowhere",),
        FIX,
    ),
    Case(
        "bbq-truncated-json",
        (*EVAL, "--data-dir", "{bbq_truncated}", "--out", "{out}"),
        ("{bbq_truncated}/bbq/data/Age.jsonl", "line 5"),
        FIX,
    ),
    Case(
        "bbq-label-3",
        (*EVAL, "--data-dir", "{bbq_label3}", "--out", "{out}"),
        ("Age.jsonl", "line 3", "label", "3"),
        ("must be 0, 1 or 2",),
    ),
    Case(
        "bbq-no-answer-info",
        (*EVAL, "--data-dir", "{bbq_no_info}", "--out", "{out}"),
        ("Age.jsonl", "line 2", "answer_info"),
        ("must be",),
    ),
    Case(
        "bbq-not-utf8", (*EVAL, "--data-dir", "{bbq_not_utf8}", "--out", "{out}"), ("Age.jsonl", "line 1", "UTF-8"), FIX
    ),
    Case(
        "bbq-unknown-category",
        ("eval", *TINY, "--bench", "bbq", "--categories", "Martian", "--data-dir", "{data}", "--out", "{out}"),
        ("'Martian'",),
        FIX,
    ),
    Case(
        "bbq-unknown-split", (*EVAL[:-6], "--split", "dev", "--data-dir", "{data}", "--out", "{out}"), ("'dev'",), FIX
    ),
    Case(
        "pairs-empty",
        ("extract", *TINY, "--pairs", "{pairs_empty}", "--layers", "1", "--out", "{out}/v.safetensors"),
        ("{pairs_empty}",),
        FIX,
    ),
    Case(
        "pairs-one-side",
        ("extract", *TINY, "--pairs", "{pairs_one_side}", "--layers", "1", "--out", "{out}/v.safetensors"),
        ("{pairs_one_side}", "line 2", "negative"),
        FIX,
    ),
    Case(
        "pairs-not-utf8",
        ("extract", *TINY, "--pairs", "{pairs_not_utf8}", "--layers", "1", "--out", "{out}/v.safetensors"),
        ("{pairs_not_utf8}", "line 2", "UTF-8"),
        FIX,
    ),
    Case(
        "pairs-identical-sides",
        ("extract", *TINY, "--pairs", "{pairs_identical}", "--layers", "1", "--out", "{out}/v.safetensors"),
        ("{pairs_identical}", "identical"),
        FIX,
    ),
    Case(
        "pairs-not-json",
        ("extract", *TINY, "--pairs", "{pairs_not_json}", "--layers", "1", "--out", "{out}/v.safetensors"),
        ("{pairs_not_json}", "line 2"),
        FIX,
    ),
    Case(
        "pairs-missing",
        ("extract", *TINY, "--pairs", "{w}/no_such_pairs.jsonl", "--layers", "1", "--out", "{out}/v.safetensors"),
        ("{w}/no_such_pairs.jsonl",),
        FIX,
    ),
    # layers and coefficients
    Case(
        "layers-abc",
        ("extract", *TINY, "--pairs", "{pairs}", "--layers", "abc", "--out", "{out}/v.safetensors"),
        ("'abc'",),
        FIX,
    ),
    Case(
        "layers-minus-1",
        ("extract", *TINY, "--pairs", "{pairs}", "--layers", "-1", "--out", "{out}/v.safetensors"),
        ("-1",),
        ("0..3", *FIX),
    ),
    Case(
        "layers-99",
        ("extract", *TINY, "--pairs", "{pairs}", "--layers", "99", "--out", "{out}/v.safetensors"),
        ("99", "0..3"),
        ("0..3",),
    ),
    Case(
        "layers-5-3",
        ("extract", *TINY, "--pairs", "{pairs}", "--layers", "5-3", "--out", "{out}/v.safetensors"),
        ("'5-3'",),
        FIX,
    ),
    Case(
        "sweep-layers-99",
        tuple(a if a != "1" else "99" for a in SWEEP[:-2]) + ("--coeffs", "-1,1", "--out", "{out}"),
        ("99", "0..3"),
        ("0..3",),
    ),
    Case("coeffs-backwards", (*SWEEP, "--coeffs", "1:0:0.5"), ("'1:0:0.5'",), FIX),
    Case("coeffs-zero-step", (*SWEEP, "--coeffs", "0:1:0"), ("'0:1:0'",), FIX),
    Case("coeffs-nan", (*SWEEP, "--coeffs", "nan"), ("'nan'",), FIX),
    Case(
        "eval-coeff-nan",
        (*EVAL, "--vector", "{vec_good}", "--coeff", "nan", "--data-dir", "{data}", "--out", "{out}"),
        ("nan",),
        FIX,
    ),
    # vectors
    Case(
        "vector-text-file",
        (*EVAL, "--vector", "{vec_text}", "--data-dir", "{data}", "--out", "{out}"),
        ("{vec_text}",),
        FIX,
    ),
    Case(
        "vector-truncated",
        (*EVAL, "--vector", "{vec_truncated}", "--data-dir", "{data}", "--out", "{out}"),
        ("{vec_truncated}",),
        FIX,
    ),
    Case(
        "vector-pickle",
        (*EVAL, "--vector", "{vec_pickle}", "--data-dir", "{data}", "--out", "{out}"),
        ("{vec_pickle}", "pickle"),
        FIX,
    ),
    *(
        Case(
            f"vector-legacy-pickle-protocol-{protocol}",
            (*EVAL, "--vector", f"{{vec_pickle{protocol}}}", "--data-dir", "{data}", "--out", "{out}"),
            (f"{{vec_pickle{protocol}}}", "pickle"),
            FIX,
        )
        for protocol in (4, 5)
    ),
    Case(
        "vector-other-width",
        (*EVAL, "--vector", "{vec_width}", "--data-dir", "{data}", "--out", "{out}"),
        ("{vec_width}", "32", "64"),
        FIX,
    ),
    Case(
        "vector-nan",
        (*EVAL, "--vector", "{vec_nan}", "--data-dir", "{data}", "--out", "{out}"),
        ("{vec_nan}", "NaN"),
        FIX,
    ),
    Case(
        "vector-inf",
        (*EVAL, "--vector", "{vec_inf}", "--data-dir", "{data}", "--out", "{out}"),
        ("{vec_inf}", "inf"),
        FIX,
    ),
    Case(
        "vector-missing",
        (*EVAL, "--vector", "{w}/nope.safetensors", "--data-dir", "{data}", "--out", "{out}"),
        ("{w}/nope.safetensors",),
        FIX,
    ),
    # models and devices
    Case("model-unknown-name", ("info", "--model", "gpt-17"), ("'gpt-17'",), FIX),
    Case(
        "model-folder-without-config",
        ("info", "--model", "{model_no_config}"),
        ("{model_no_config}", "config.json"),
        FIX,
    ),
    Case("model-folder-corrupt-weights", ("info", "--model", "{model_corrupt}"), ("{model_corrupt}",), FIX),
    Case(
        "model-hub-id-offline",
        ("info", "--model", "nobody-lens-steer/no-such-model"),
        ("'nobody-lens-steer/no-such-model'",),
        FIX,
        env=(("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1")),
    ),
    Case("device-cuda-absent", ("info", *TINY, "--device", "cuda"), ("cuda",), FIX),
    Case("device-nonsense", ("info", *TINY, "--device", "gpu0"), ("'gpu0'",), FIX),
    # storages and studies
    Case(
        "storage-unknown-scheme",
        (*SEARCH, "--storage", "redis://127.0.0.1/0", "--out", "{out}"),
        ("redis://127.0.0.1/0",),
        FIX,
    ),
    Case(
        "storage-unreachable-postgres",
        (*SEARCH, "--storage", "postgresql://lens:s3cret@127.0.0.1:{port}/optuna", "--out", "{out}"),
        ("127.0.0.1:{port}",),
        FIX,
    ),
    Case("storage-read-only-sqlite", (*SEARCH, "--storage", "sqlite:///{ro_db}", "--out", "{out}"), ("{ro_db}",), FIX),
    Case(
        "storage-not-a-database", (*SEARCH, "--storage", "sqlite:///{not_a_db}", "--out", "{out}"), ("{not_a_db}",), FIX
    ),
    Case(
        "resume-missing-study",
        (*SEARCH, "--storage", "sqlite:///{db}", "--study", "mine", "--resume", "--out", "{out}"),
        ("'mine'",),
        FIX,
    ),
    Case(
        "resume-missing-storage",
        (*SEARCH, "--storage", "sqlite:///{w}/none.db", "--resume", "--out", "{out}"),
        ("{w}/none.db",),
        FIX,
    ),
    Case(
        "space-malformed-json",
        (*SEARCH[:-4], "--space", "{space_bad}", "--data-dir", "{data}", "--out", "{out}"),
        ("{space_bad}", ":3"),
        FIX,
    ),
    Case(
        "space-unknown-key",
        (*SEARCH[:-4], "--space", "{space_unknown_key}", "--data-dir", "{data}", "--out", "{out}"),
        ("{space_unknown_key}", "'layerz'"),
        ("valid keys",),
    ),
    Case(
        "search-trials-0",
        ("search", *TINY, "--axis", "age", "--trials", "0", "--limit", "4", "--data-dir", "{data}", "--out", "{out}"),
        ("--trials", "0"),
        ("at least 1",),
    ),
    Case("search-heartbeat-0", (*SEARCH, "--heartbeat", "0", "--out", "{out}"), ("--heartbeat", "0"), ("at least 1",)),
    # outputs and sizes
    Case("out-is-a-file-eval", (*EVAL, "--data-dir", "{data}", "--out", "{a_file}"), ("{a_file}",), FIX),
    Case("out-is-a-file-search", (*SEARCH, "--out", "{a_file}"), ("{a_file}",), FIX),
    Case(
        "out-is-a-file-reproduce",
        ("reproduce", *TINY, "--axes", "age", "--data-dir", "{data}", "--out", "{a_file}"),
        ("{a_file}",),
        FIX,
    ),
    Case(
        "out-is-a-folder-extract",
        ("extract", *TINY, "--pairs", "{pairs}", "--layers", "1", "--out", "{w}"),
        ("{w}",),
        FIX,
    ),
    Case(
        "out-under-a-read-only-folder",
        ("extract", *TINY, "--pairs", "{pairs}", "--layers", "1", "--out", "{ro_dir}/x/v.safetensors"),
        ("{ro_dir}",),
        FIX,
    ),
    Case(
        "limit-0-eval",
        (*EVAL[:-4], "--limit", "0", "--data-dir", "{data}", "--out", "{out}"),
        ("--limit", "0"),
        ("at least 1",),
    ),
    Case(
        "limit-0-search",
        tuple(a if a != "4" else "0" for a in SEARCH) + ("--out", "{out}"),
        ("limit", "0"),
        ("positive",),
    ),
    Case(
        "batch-size-0-eval",
        (*EVAL, "--batch-size", "0", "--data-dir", "{data}", "--out", "{out}"),
        ("--batch-size", "0"),
        ("at least 1",),
    ),
    Case(
        "batch-size-0-extract",
        ("extract", *TINY, "--pairs", "{pairs}", "--layers", "1", "--batch-size", "0", "--out", "{out}/v.safetensors"),
        ("--batch-size", "0"),
        ("at least 1",),
    ),
    Case(
        "n-boot-negative",
        (*EVAL[:-2], "--n-boot", "-5", "--data-dir", "{data}", "--out", "{out}"),
        ("--n-boot", "-5"),
        ("at least 0",),
    ),
    Case(
        "budget-unknown",
        ("reproduce", *TINY, "--budget", "huge", "--data-dir", "{data}", "--out", "{out}"),
        ("'huge'",),
        FIX,
    ),
    Case(
        "axes-unknown",
        ("reproduce", *TINY, "--axes", "age,martian", "--data-dir", "{data}", "--out", "{out}"),
        ("'martian'",),
        FIX,
    ),
    Case(
        "bench-unknown",
        ("eval", *TINY, "--bench", "trivia", "--data-dir", "{data}", "--out", "{out}"),
        ("'trivia'",),
        FIX,
    ),
    # the argument parser's own errors are one line too
    Case(
        "argparse-not-an-int",
        (*EVAL[:-4], "--limit", "four", "--data-dir", "{data}", "--out", "{out}"),
        ("'four'", "--limit"),
        ("--help",),
    ),
    Case("argparse-missing-required", ("extract", *TINY, "--layers", "1"), ("--pairs",), ("--help",)),
    Case("argparse-unknown-command", ("frobnicate",), ("'frobnicate'",), ("--help", "choose")),
]


def _fill(text: str, world: dict[str, str], out: Path) -> str:
    return text.format(out=out, **world)


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` with its size and modification time."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


def _run(argv: list[str], tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("LENS_STEER_DATA",)}
    full_env.update(
        {
            "LENS_STEER_DATA": str(DATA),
            "LENS_STEER_CACHE": str(tmp / "cache"),
            "HF_HOME": str(tmp / "hf"),
            "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            **(env or {}),
        }
    )
    return subprocess.run([str(CLI), *argv], capture_output=True, text=True, env=full_env, timeout=300, cwd=tmp)


def test_the_installed_command_exists() -> None:
    assert CLI.is_file() and os.access(CLI, os.X_OK), f"{CLI} is not installed; run scripts/setup.sh"


def _run_case(case: Case, world: dict[str, str], tmp: Path) -> dict[str, Any]:
    out = tmp / "out"
    argv = [_fill(a, world, out) for a in case.argv]
    before = _snapshot(tmp)
    res = _run(argv, tmp, {k: _fill(v, world, out) for k, v in case.env})
    return {"argv": argv, "res": res, "before": before, "after": _snapshot(tmp), "out": out}


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, world: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Every selected bad case run once, as many at a time as there are CPUs (each in its own folder);
    the world is snapshotted around them all."""
    from concurrent.futures import ThreadPoolExecutor

    selected = {getattr(item, "callspec", None) and item.callspec.id for item in request.session.items}
    cases = [c for c in BAD if c.id in selected] or BAD
    w = Path(world["w"])
    before = _snapshot(w)
    tmps = {c.id: tmp_path_factory.mktemp(c.id) for c in cases}
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = {c.id: pool.submit(_run_case, c, world, tmps[c.id]) for c in cases}
        done = {k: f.result() for k, f in futures.items()}
    return {"cases": done, "world_before": before, "world_after": _snapshot(w)}


@pytest.mark.parametrize("case", BAD, ids=[c.id for c in BAD])
def test_bad_input_is_one_line_and_writes_nothing(case: Case, world: dict[str, str], outcomes: dict[str, Any]) -> None:
    if case.id == "device-cuda-absent" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is not a bad input here")
    got = outcomes["cases"][case.id]
    res, argv, out = got["res"], got["argv"], got["out"]
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0, f"exit 0 for {argv}: {res.stdout[-500:]}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{res.stderr[-3000:]}"
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in case.names:
        assert _fill(needle, world, out) in line, f"{needle!r} not named in: {line}"
    assert any(f in line for f in case.fix), f"no advice ({'/'.join(case.fix[:5])}...) in: {line}"
    assert "s3cret" not in res.stderr + res.stdout  # passwords are never printed
    created = sorted(set(got["after"]) - set(got["before"]) - {"cache", "hf"})
    changed = sorted(k for k in got["before"] if got["after"].get(k) != got["before"][k])
    assert not created and not changed, f"output written: created {created}, changed {changed}"
    assert not out.exists(), f"{out} was created"


def test_no_bad_case_created_or_changed_an_input_or_ran_code(outcomes: dict[str, Any], world: dict[str, str]) -> None:
    assert outcomes["world_after"] == outcomes["world_before"], "an input file was created or changed"
    assert not Path(world["canary"]).exists(), "a pickle was unpickled: code from a data file ran"


ACCEPTED = [
    ("bbq-crlf", (*EVAL, "--data-dir", "{bbq_crlf}", "--out", "{out}")),
    ("bbq-utf8-bom", (*EVAL, "--data-dir", "{bbq_bom}", "--out", "{out}")),
    ("bbq-extra-fields", (*EVAL, "--data-dir", "{bbq_extra}", "--out", "{out}")),
    (
        "pairs-crlf",
        (
            "extract",
            *TINY,
            "--pairs",
            "{pairs_crlf}",
            "--layers",
            "1",
            "--method",
            "mean_diff",
            "--out",
            "{out}/v.safetensors",
        ),
    ),
    (
        "pairs-utf8-bom",
        (
            "extract",
            *TINY,
            "--pairs",
            "{pairs_bom}",
            "--layers",
            "1",
            "--method",
            "mean_diff",
            "--out",
            "{out}/v.safetensors",
        ),
    ),
    (
        "pairs-extra-fields",
        (
            "extract",
            *TINY,
            "--pairs",
            "{pairs_extra}",
            "--layers",
            "1",
            "--method",
            "mean_diff",
            "--out",
            "{out}/v.safetensors",
        ),
    ),
]


@pytest.fixture(scope="module")
def reference_outputs(world: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The plain-LF, no-BOM, no-extra-field runs the unusual inputs must reproduce exactly."""
    tmp = tmp_path_factory.mktemp("reference")
    bbq_root = _bbq_root(tmp / "bbq_plain", _bbq_lines())
    bbq = _run([*EVAL, "--data-dir", str(bbq_root), "--out", str(tmp / "bbq")], tmp)
    assert bbq.returncode == 0, bbq.stderr
    pairs = _run(
        [
            "extract",
            *TINY,
            "--pairs",
            world["pairs"],
            "--layers",
            "1",
            "--method",
            "mean_diff",
            "--out",
            str(tmp / "pairs" / "v.safetensors"),
        ],
        tmp,
    )
    assert pairs.returncode == 0, pairs.stderr
    return {"bbq": tmp / "bbq", "pairs": tmp / "pairs"}


@pytest.mark.parametrize(("name", "argv"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_unusual_input_is_accepted_and_read_like_the_plain_file(
    name: str, argv: tuple[str, ...], world: dict[str, str], reference_outputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    res = _run([_fill(a, world, out) for a in argv], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    if name.startswith("bbq"):
        got = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        want = [json.loads(x) for x in (reference_outputs["bbq"] / "predictions.jsonl").read_text().splitlines()]
        assert got == want  # the same items, read the same way, scored the same
    else:
        from safetensors.torch import load_file

        got_v = load_file(out / "v.safetensors")
        want_v = load_file(reference_outputs["pairs"] / "v.safetensors")
        assert set(got_v) == set(want_v) == {"blocks.1.hook_resid_post"}
        assert torch.equal(got_v["blocks.1.hook_resid_post"], want_v["blocks.1.hook_resid_post"])


def test_the_corpus_has_at_least_thirty_cases() -> None:
    assert len(BAD) >= 30 and len({c.id for c in BAD}) == len(BAD)
