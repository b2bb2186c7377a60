"""docs/make_results.py ``run``: which runs it trains, and which of them it resumes."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "make_results.py"


@pytest.fixture
def make_results(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_results_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs_dir, stages_dir = tmp_path / "runs", tmp_path / "stages"
    monkeypatch.setattr(module, "RUNS_DIR", runs_dir)
    monkeypatch.setattr(module, "STAGES_DIR", stages_dir)
    monkeypatch.setattr(module, "STAGES", {"t/first": ["--epochs", "2"], "t/gone": ["--epochs", "2"]})
    monkeypatch.setattr(
        module,
        "RUNS",
        {
            "t/new": ["--epochs", "2"],
            "t/stopped": ["--epochs", "2"],
            "t/done": ["--epochs", "2"],
            "t/staged": ["--epochs", "2", "--init-from", str(stages_dir / "t" / "first" / "last.pt")],
            "t/staged-stopped": ["--epochs", "2", "--init-from", str(stages_dir / "t" / "gone" / "last.pt")],
        },
    )
    monkeypatch.setattr(module, "ENSEMBLES", {})
    return module


def _record(folder: Path, epochs_done: int, interrupted: bool, checkpoint: bool) -> None:
    folder.mkdir(parents=True)
    record = {"interrupted": interrupted, "epochs_done": epochs_done, "config": {"epochs": 2}}
    (folder / "result.json").write_text(json.dumps(record))
    if checkpoint:
        (folder / "last.pt").write_bytes(b"")


def test_run_resumes_what_a_stop_left_and_skips_what_is_complete(make_results, monkeypatch):
    runs, stages = make_results.RUNS_DIR, make_results.STAGES_DIR
    _record(runs / "t" / "stopped", epochs_done=1, interrupted=True, checkpoint=True)
    _record(runs / "t" / "done", epochs_done=2, interrupted=False, checkpoint=False)
    _record(stages / "t" / "first", epochs_done=1, interrupted=True, checkpoint=True)  # the stage was stopped too
    # A staged run stopped in its second stage resumes from its own checkpoint: its stage's is gone.
    _record(runs / "t" / "staged-stopped", epochs_done=1, interrupted=True, checkpoint=True)
    calls = []

    def fake_run(cmd, env, check):  # what graphattn train leaves: a complete record and its checkpoint
        out = Path(cmd[cmd.index("--out") + 1])
        calls.append((out.relative_to(out.parents[1]).as_posix(), "--resume" in cmd))
        out.mkdir(parents=True, exist_ok=True)
        (out / "result.json").write_text(json.dumps({"interrupted": False, "epochs_done": 2, "config": {"epochs": 2}}))
        (out / "last.pt").write_bytes(b"")

    monkeypatch.setattr(make_results.subprocess, "run", fake_run)
    make_results.run(only=None, dry_run=False)
    expected = [("t/new", False), ("t/stopped", True), ("t/first", True), ("t/staged", False)]
    assert calls == [*expected, ("t/staged-stopped", True)]
    # checkpoints stay out of git: every run's, and the stage's once no pending run needs it
    assert not any(runs.rglob("last.pt")) and not any(stages.rglob("last.pt"))


def test_report_leaves_out_what_a_stop_left(make_results):
    _record(make_results.RUNS_DIR / "t" / "stopped", epochs_done=1, interrupted=True, checkpoint=True)
    _record(make_results.RUNS_DIR / "t" / "done", epochs_done=2, interrupted=False, checkpoint=False)
    assert {v: len(recs) for v, recs in make_results._load()["t"].items()} == {"done": 1}
    assert [n for n in make_results.RUNS if not make_results._recorded(n)] == [
        "t/new", "t/stopped", "t/staged", "t/staged-stopped"
    ]  # fmt: skip


def test_dry_run_trains_nothing_and_marks_the_resumes(make_results, capsys):
    _record(make_results.RUNS_DIR / "t" / "stopped", epochs_done=1, interrupted=True, checkpoint=True)
    make_results.run(only="t/stopped", dry_run=True)
    out = capsys.readouterr().out
    assert out.startswith("1 runs and 0 ensembles to do")
    assert out.rstrip().endswith("--no-progress --resume")
