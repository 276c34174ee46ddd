"""lm-evaluation-harness's own BBQ task over chosen rows: its shipped `bbq_multiple_choice.yaml` and `utils.py`
with only the task name and the data source replaced (parity tests and benchmarks; needs the `parity` extra)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def shipped_yaml() -> Path:
    """lm-eval's shipped BBQ multiple-choice task file."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent / "bbq" / "bbq_multiple_choice.yaml"


def task_yaml(name: str, data: Path) -> str:
    """The shipped task YAML renamed to `name`, reading its test rows from the JSONL file `data`."""
    out = []
    for line in shipped_yaml().read_text().splitlines():
        if line.startswith("task:"):
            line = f"task: {name}"
        elif line.startswith("dataset_path:"):
            line = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}"
        elif line.startswith("dataset_name:") or line.startswith("tag:") or line.startswith("  - social_bias"):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def write_task(rows: Sequence[dict[str, Any]], folder: Path, name: str) -> Any:
    """Write the task over `rows` (raw BBQ JSON objects) under `folder`; return an lm-eval TaskManager that finds it."""
    from lm_eval.tasks import TaskManager

    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task_dir = folder / "task"
    task_dir.mkdir(exist_ok=True)
    (task_dir / f"{name}.yaml").write_text(task_yaml(name, data))
    (task_dir / "utils.py").write_text(
        "from lm_eval.tasks.bbq.utils import *  # noqa: F401,F403 (lm-eval's own BBQ code)\n"
    )
    return TaskManager(include_path=str(task_dir))
