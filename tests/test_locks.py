"""The three users of the one advisory lock (lens_steer.files.file_lock): the run folder, the organism build and the
prediction store's index each keep their behaviour when another process holds their lock, and none leaves a stale
lock behind a killed holder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lens_steer.data.bbq import BbqItem, load_bbq
from lens_steer.errors import LensSteerError
from lens_steer.methods.organism.build import build_lock
from lens_steer.pipeline.budgets import LOCK_NAME, run_folder_lock
from lens_steer.tasks.metrics import BbqPrediction
from lens_steer.tasks.store import PredictionStore


def hold(code: str) -> subprocess.Popen:
    """A child process that runs `code` (which enters a lock), says "held" and waits until killed."""
    script = f"import time\n{code}\n    print('held', flush=True)\n    time.sleep(600)\n"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def end(child: subprocess.Popen) -> None:
    child.kill()  # SIGKILL: the holder runs no cleanup
    child.wait()


def test_a_run_folder_held_by_another_process_is_refused_naming_the_lock_and_its_holder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    child = hold(f"from lens_steer.pipeline.budgets import run_folder_lock\nwith run_folder_lock({str(out)!r}):")
    try:
        with pytest.raises(LensSteerError) as e:
            with run_folder_lock(out):
                pass
        msg = str(e.value)
        assert f"run folder {out.resolve()} is in use" in msg and str(out.resolve() / LOCK_NAME) in msg
        assert f"lens-steer pid {child.pid} on " in msg and "\n" not in msg
    finally:
        end(child)
    with run_folder_lock(out) as held:  # the killed holder left no stale lock
        with run_folder_lock(out) as again:  # re-entrant within this process
            assert held == again == out.resolve()
        assert (out / LOCK_NAME).read_text().startswith("lens-steer pid ")


def test_an_organism_folder_being_built_by_another_process_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cache" / "organism"
    child = hold(
        f"from pathlib import Path\nfrom lens_steer.methods.organism.build import build_lock\n"
        f"with build_lock(Path({str(folder)!r})):"
    )
    try:
        with pytest.raises(LensSteerError) as e:
            with build_lock(folder):
                pass
        assert str(e.value) == (
            f"organism {folder} is being built by another process ({folder.parent / '.organism.lock'} is locked); "
            "wait for it to finish"
        )
    finally:
        end(child)
    with build_lock(folder):
        pass


def test_the_store_waits_for_the_index_lock_and_keeps_the_other_writers_entries(tmp_path: Path) -> None:
    try:
        items: list[BbqItem] = load_bbq(["Age"])[:3]
    except LensSteerError as e:
        pytest.skip(f"missing data: shared BBQ data not found: {e}")
    preds = [BbqPrediction.from_item(it, 0, (-1.0, -2.0, -3.0)) for it in items]
    store = PredictionStore(tmp_path)
    store.bbq(items, None, 0.0, {"model": "first"}, lambda: preds)
    child = hold(f"from lens_steer.files import file_lock\nwith file_lock({str(store.dir / 'index.lock')!r}):")
    writer = threading.Thread(target=lambda: store.bbq(items, None, 0.0, {"model": "second"}, lambda: preds))
    try:
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive()  # blocked on the index lock, not failed
        index = json.loads(store.index_path.read_text())
        assert [e["model"] for e in index.values()] == ["first"]
    finally:
        end(child)
    writer.join(timeout=30)
    assert not writer.is_alive()
    index = json.loads(store.index_path.read_text())
    assert sorted(e["model"] for e in index.values()) == ["first", "second"]
