"""No code from data: nothing in the package unpickles without `weights_only=True`, a booby-trapped
pickle in a cache is refused without running, and hostile text in the data a run reads (BBQ items,
prompt corpora, the model's folder name) shows in report.html as text in a real headless Chromium,
which runs the report's own scripts and none of the data's."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from _system_packages import ensure_program

PACKAGE = Path(__file__).resolve().parents[1] / "lens_steer"
DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CLI = Path(sys.executable).parent / "lens-steer"
needs_data = pytest.mark.skipif(
    not (DATA / "bbq" / "data" / "Age.jsonl").is_file(),
    reason=f"missing data: shared BBQ data not found at {DATA}; set LENS_STEER_DATA",
)

# ----------------------------------------------------------------------------- the package unpickles nothing
UNSAFE_CALLS = {  # module.function -> why it runs code from data
    "pickle.load": "unpickles",
    "pickle.loads": "unpickles",
    "pickle.Unpickler": "unpickles",
    "cPickle.load": "unpickles",
    "dill.load": "unpickles",
    "dill.loads": "unpickles",
    "joblib.load": "unpickles",
    "marshal.load": "loads code objects",
    "marshal.loads": "loads code objects",
    "shelve.open": "unpickles",
    "yaml.unsafe_load": "constructs objects",
    "jsonpickle.decode": "unpickles",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _keyword(call: ast.Call, name: str) -> Any:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local names bound by imports to their full dotted names (`import numpy as np`, `from pickle import loads`)."""
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def unsafe_loads(source: str, filename: str) -> list[str]:
    """Calls in `source` that may execute code from a file: torch.load without weights_only=True, pickle
    and friends, numpy.load with allow_pickle=True, yaml.load without a safe loader, eval/exec (names
    resolved through the module's imports, so `from pickle import loads as l; l(b)` is found too)."""
    found = []
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func)
        head, _, rest = dotted.partition(".")
        name = ".".join(x for x in (aliases.get(head, head), rest) if x)
        name = {"numpy.load": "np.load"}.get(name, name)
        where = f"{filename}:{node.lineno}: {name}"
        if name.endswith("torch.load") or name == "torch.load":
            if _keyword(node, "weights_only") is not True:
                found.append(f"{where} without weights_only=True")
        elif name in UNSAFE_CALLS:
            found.append(f"{where} {UNSAFE_CALLS[name]}")
        elif name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (None, False):
            found.append(f"{where} with allow_pickle")
        elif name == "yaml.load" and "Safe" not in str(_dotted(node.keywords[0].value) if node.keywords else ""):
            found.append(f"{where} without a SafeLoader")
        elif name in ("eval", "exec"):
            found.append(f"{where} evaluates a string")
    return found


def test_the_checker_finds_each_unsafe_call() -> None:
    bad = (
        "import torch, pickle, numpy as np, yaml\nfrom pickle import loads as undo\nfrom torch import load\n"
        "torch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
        "np.load(p, allow_pickle=True)\nyaml.load(s)\neval(t)\n"
        "undo(b)\nload(p)\n"
    )
    good = (
        "import torch, pickle, numpy as np, yaml\ntorch.load(p, weights_only=True)\nnp.load(p)\n"
        "yaml.load(s, Loader=yaml.SafeLoader)\n"
        "try:\n    pass\nexcept pickle.UnpicklingError:\n    pass\n"
    )
    assert len(unsafe_loads(bad, "bad.py")) == 8
    assert unsafe_loads(good, "good.py") == []  # importing pickle for its exception type runs nothing


def test_no_module_of_the_package_unpickles_or_evaluates_data() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    problems = [
        p for f in files for p in unsafe_loads(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE.parent)))
    ]
    assert problems == [], "\n".join(problems)
    # and as plain text, the grep a reviewer would run: every torch.load line says weights_only=True
    loads = [
        f"{f.relative_to(PACKAGE.parent)}:{n}"
        for f in files
        for n, line in enumerate(f.read_text().splitlines(), 1)
        if "torch.load(" in line and not line.lstrip().startswith("#") and "weights_only=True" not in line
    ]
    assert loads == []


class _RunsCode:
    """Unpickling this creates the canary file."""

    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.canary, "w"))


def test_a_booby_trapped_activation_cache_is_recomputed_without_running_it(tmp_path: Path) -> None:
    import warnings

    from lens_steer.extract.activation_cache import ActivationCache
    from lens_steer.model.load import load_model

    if not (DATA / "prompt_corpora" / "age.json").is_file():
        pytest.skip(f"missing data: prompt corpora not found at {DATA}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("tiny-llama")
    first = ActivationCache(model, (1,), disk_dir=tmp_path, data_root=DATA).get("age", 4, 0, 0)
    [cached] = list(tmp_path.glob("*.pt"))
    canary = tmp_path / "canary"
    torch.save(
        {"positive": {1: torch.zeros(4, 64)}, "negative": {1: torch.zeros(4, 64)}, "n": 4, "x": _RunsCode(canary)},
        cached,
    )
    again = ActivationCache(model, (1,), disk_dir=tmp_path, data_root=DATA)
    acts = again.get("age", 4, 0, 0)
    assert not canary.exists(), "the cache file's pickle ran"
    assert again.misses == 1 and again.pairs_read == 4  # refused and re-read from the model, not trusted
    assert torch.equal(acts.positive[1], first.positive[1]) and torch.equal(acts.negative[1], first.negative[1])


# ----------------------------------------------------------------------------- hostile text in a real browser
MARK = "document.body.setAttribute('data-pwned','{}')"
MODEL_NAME = '<img src=x onerror="' + MARK.format("model") + '">tiny'  # a folder name cannot hold "/"
BBQ_TEXT = "<script>" + MARK.format("bbq") + "</script>"
CORPUS_TEXT = '<svg onload="' + MARK.format("corpus") + '"></svg>'


def _hostile_data_root(root: Path) -> Path:
    """The shared data with every Age BBQ context and every age-corpus prompt carrying a script."""
    root.mkdir(parents=True)
    for sub in ("mmlu", "crows_pairs"):
        if (DATA / sub).exists():
            (root / sub).symlink_to(DATA / sub)
    (root / "bbq" / "data").mkdir(parents=True)
    for sub in ("partial", "templates"):
        if (DATA / "bbq" / sub).exists():
            (root / "bbq" / sub).symlink_to(DATA / "bbq" / sub)
    for f in (DATA / "bbq" / "data").iterdir():
        if f.name != "Age.jsonl":
            (root / "bbq" / "data" / f.name).symlink_to(f)
    rows = [
        json.loads(line)
        for line in (DATA / "bbq" / "data" / "Age.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    (root / "bbq" / "data" / "Age.jsonl").write_text(
        "".join(json.dumps({**r, "context": f"{r['context']} {BBQ_TEXT}"}) + "\n" for r in rows)
    )
    (root / "prompt_corpora").mkdir()
    for f in (DATA / "prompt_corpora").iterdir():
        if f.name != "age.json":
            (root / "prompt_corpora" / f.name).symlink_to(f)
    prompts = json.loads((DATA / "prompt_corpora" / "age.json").read_text(encoding="utf-8"))
    (root / "prompt_corpora" / "age.json").write_text(json.dumps([f"{p} {CORPUS_TEXT}" for p in prompts]))
    return root


@pytest.fixture(scope="module")
def chromium() -> str:
    path, reason = ensure_program("chromium", "chromium")
    if path is None:
        print(f"\nSKIPPED browser test: {reason}", file=sys.stderr)
        pytest.skip(f"Chromium cannot be installed here: {reason}")
    return path


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of `lens-steer reproduce --budget smoke --axes age` on hostile data and a hostile model folder
    name."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _arch_checkpoints import write_checkpoint

    tmp = tmp_path_factory.mktemp("hostile")
    model = write_checkpoint("llama", tmp / "models" / MODEL_NAME)
    root = _hostile_data_root(tmp / "data")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "LENS_STEER_CACHE": str(tmp / "cache"),
    }
    res = subprocess.run(
        [
            str(CLI),
            "reproduce",
            "--budget",
            "smoke",
            "--model",
            str(model),
            "--axes",
            "age",
            "--data-dir",
            str(root),
            "--out",
            str(tmp / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp / "run" / "report.html"


def _dump_dom(chromium: str, page: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran (headless Chromium, 20 s of virtual time)."""
    res = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=20000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and "<html" in res.stdout, res.stderr[-2000:]
    return res.stdout


def _pwned(dom: str) -> str:
    """The value a data script wrote into the body's data-pwned attribute ("" when none ran)."""
    body = re.search(r"<body([^>]*)>", dom)
    found = re.search(r"data-pwned=\"([^\"]*)\"", body.group(1)) if body else None
    return found.group(1) if found else ""


@needs_data
def test_hostile_text_shows_as_text_and_runs_nothing_in_chromium(
    hostile_report: Path, chromium: str, tmp_path: Path
) -> None:
    page = hostile_report.read_text(encoding="utf-8")
    # the raw file: the data's markup never appears as markup
    for raw in (MODEL_NAME, BBQ_TEXT, CORPUS_TEXT, "<img src=x", "<svg onload"):
        assert raw not in page, f"unescaped {raw!r} in report.html"
    dom = _dump_dom(chromium, hostile_report, tmp_path / "profile")
    assert "main-svg" in dom, (
        "plotly did not draw: the page's own scripts did not run, so the check below proves nothing"
    )
    assert not _pwned(dom), f"a script from the data ran: <body {_pwned(dom)}>"
    assert re.search(r"<title>[^<]*&lt;img src=x onerror=", dom), "the model name is not shown as text in the title"
    body_text = re.sub(r"<[^>]+>", "", dom.split("<body", 1)[1])
    assert "&lt;img src=x onerror=" in body_text, "the model name is not shown as text in the page"


def test_the_browser_check_detects_a_script_that_runs(chromium: str, tmp_path: Path) -> None:
    """The same check on a page that does inject the text: Chromium runs it and the check sees it."""
    page = tmp_path / "injected.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>x</title></head>"
        f"<body><p>{MODEL_NAME}</p><div>{BBQ_TEXT}</div></body></html>"
    )
    dom = _dump_dom(chromium, page, tmp_path / "profile")
    assert _pwned(dom) in ("model", "bbq")  # the <script> and the <img onerror> both ran; the later one wins
