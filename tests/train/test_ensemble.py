"""`graphattn ensemble`: the mean of finished runs' best-epoch predictions, and its checks."""

import json
import shutil

import pytest
import torch

from graphattn.cli import main
from graphattn.train.engine import TrainConfig, train
from graphattn.train.ensemble import _check_targets, _same_values, ensemble

TINY = {"length": 16, "pairs": 2, "train_size": 256, "eval_size": 64}


def _run(tmp_path, name, **kw):
    base = {"task": "recall", "attention": "full", "dim": 16, "heads": 2, "layers": 1, "epochs": 3, "batch_size": 32}
    base.update(kw)
    base.setdefault("options", dict(TINY))
    out = tmp_path / name
    train(TrainConfig(out=str(out), progress=False, **base))
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three members on the same data (recall draws its examples from --seed): two structures, two sizes."""
    root = tmp_path_factory.mktemp("members")
    return [_run(root, "full"), _run(root, "full-d8", dim=8), _run(root, "window", attention="window")]


def _accuracy(logits, target):
    return (logits.argmax(-1) == target).double().mean().item()


def test_ensemble_scores_the_mean_of_each_members_best_epoch(runs, tmp_path):
    result = ensemble(runs, tmp_path / "ens")
    saved = [torch.load(r / "best_predictions.pt", weights_only=True) for r in runs]
    records = [json.loads((r / "result.json").read_text()) for r in runs]
    for split, key in (("valid", "best_valid_accuracy"), ("test", "test_accuracy")):
        mean = sum(s[split]["pred"] for s in saved) / len(saved)
        assert result[key] == pytest.approx(_accuracy(mean, saved[0][split]["target"]), abs=1e-12)
    for member, record, s in zip(result["members"], records, saved, strict=True):
        assert member["best_epoch"] == s["epoch"] and member["best_valid_accuracy"] == record["best_valid_accuracy"]
    assert result["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in records))
    assert result["parameters"] == sum(r["parameters"] for r in records) and result["epochs_done"] == 3
    assert result["attention"] == "full,window"
    assert json.loads((tmp_path / "ens" / "result.json").read_text()) == result
    # its own predictions are kept beside the record; an ensemble is not a member of another
    again = torch.load(tmp_path / "ens" / "best_predictions.pt", weights_only=True)
    assert _accuracy(again["valid"]["pred"], again["valid"]["target"]) == result["best_valid_accuracy"]
    with pytest.raises(ValueError, match=r"ens is an ensemble; list its member runs instead"):
        ensemble([runs[0], tmp_path / "ens"], tmp_path / "ens2")


def test_scoring_does_not_build_the_datasets(runs, tmp_path, monkeypatch):
    """Accuracy needs no data (listops with 48,000 trees would generate them all to score)."""
    from graphattn.train.tasks import RecallTask

    def refuse(self, cfg):
        raise AssertionError("ensemble built the datasets")

    monkeypatch.setattr(RecallTask, "datasets", refuse)
    assert ensemble(runs[:2], tmp_path / "ens")["metric"] == "accuracy"


def test_two_copies_of_one_run_score_as_that_run(runs, tmp_path):
    shutil.copytree(runs[0], tmp_path / "copy")
    result = ensemble([runs[0], tmp_path / "copy"], tmp_path / "ens")
    record = json.loads((runs[0] / "result.json").read_text())
    assert result["best_valid_accuracy"] == record["best_valid_accuracy"]
    assert result["test_accuracy"] == record["test_accuracy"]


def test_a_staged_members_time_includes_its_first_stage(runs, tmp_path):
    staged = _run(tmp_path, "staged", epochs=1, init_from=str(runs[0] / "last.pt"))
    result = ensemble([runs[1], staged], tmp_path / "ens")
    records = [json.loads((r / "result.json").read_text()) for r in (runs[0], runs[1], staged)]
    assert result["train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in records))
    assert result["epochs_done"] == "3/1"


def test_members_are_checked(runs, tmp_path):
    with pytest.raises(ValueError, match="at least 2 runs, got 1"):
        ensemble(runs[:1], tmp_path / "ens")
    with pytest.raises(ValueError, match="listed twice"):
        ensemble([runs[0], runs[0]], tmp_path / "ens")
    with pytest.raises(FileNotFoundError, match="nothing is not a run folder"):
        ensemble([runs[0], tmp_path / "nothing"], tmp_path / "ens")
    bare = tmp_path / "bare"
    shutil.copytree(runs[1], bare)
    (bare / "best_predictions.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"bare has no best_predictions\.pt"):
        ensemble([runs[0], bare], tmp_path / "ens")
    stopped = tmp_path / "stopped"
    shutil.copytree(runs[1], stopped)
    record = json.loads((stopped / "result.json").read_text())
    (stopped / "result.json").write_text(json.dumps({**record, "interrupted": True}))
    with pytest.raises(ValueError, match="stopped was interrupted after 3 epochs; finish it with --resume"):
        ensemble([runs[0], stopped], tmp_path / "ens")
    other = _run(tmp_path, "other", epochs=1, options={**TINY, "eval_size": 32})
    with pytest.raises(ValueError, match=r"the valid targets of .*other are torch.int64 \(32,\), .*\(64,\)"):
        ensemble([runs[0], other], tmp_path / "ens")
    seed1 = _run(tmp_path, "seed1", epochs=1, seed=1)  # recall's examples come from the seed
    with pytest.raises(ValueError, match=r"the valid targets of .*seed1 differ .*same examples in the same order"):
        ensemble([runs[0], seed1], tmp_path / "ens")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="out must be a folder"):
        ensemble(runs, tmp_path / "file")
    assert not (tmp_path / "ens").exists()  # nothing written by a refused ensemble


def test_another_tasks_run_is_refused(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs[1], other)
    record = json.loads((other / "result.json").read_text())
    (other / "result.json").write_text(json.dumps({**record, "task": "listops"}))
    with pytest.raises(ValueError, match=r"other is a run of listops, .* of recall"):
        ensemble([runs[0], other], tmp_path / "ens")


def test_targets_compare_nan_as_equal_and_dtype_strictly(tmp_path):
    a = torch.tensor([[1.0], [float("nan")], [0.0]])
    assert _same_values(a, a.clone())
    assert not _same_values(a, torch.tensor([[1.0], [0.0], [0.0]]))
    assert not _same_values(a, torch.tensor([[1.0], [float("nan")], [1.0]]))
    assert _same_values(torch.tensor([1, 0]), torch.tensor([1, 0]))
    assert not _same_values(torch.tensor([1, 0]), torch.tensor([1, 1]))
    _check_targets("valid", tmp_path / "b", a.clone(), tmp_path / "a", a)
    with pytest.raises(ValueError, match=r"valid targets of .*b are torch.int64 \(2,\), those of .*a torch.float32"):
        _check_targets("valid", tmp_path / "b", torch.tensor([1, 0]), tmp_path / "a", torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"test targets of .*b are torch.float32 \(3, 2\), .* torch.float32 \(3, 1\)"):
        _check_targets("test", tmp_path / "b", torch.zeros(3, 2), tmp_path / "a", a)
    with pytest.raises(ValueError, match=r"test targets of .*b differ from those of .*a: .*same examples"):
        _check_targets("test", tmp_path / "b", torch.zeros(3, 1), tmp_path / "a", a)


def test_out_may_not_overwrite_a_training_run(runs, tmp_path):
    with pytest.raises(ValueError, match=r"--out .*full is one of the runs"):
        ensemble(runs, runs[0])
    with pytest.raises(ValueError, match=r"--out .*window holds a training run's result.json"):
        ensemble(runs[:2], runs[2])
    ensemble(runs[:2], tmp_path / "ens")
    ensemble(runs, tmp_path / "ens")  # an earlier ensemble's folder may be rewritten


def test_predictions_must_be_the_records_best_epochs(runs, tmp_path):
    swapped = tmp_path / "swapped"
    shutil.copytree(runs[1], swapped)
    shutil.copy(runs[2] / "best_predictions.pt", swapped / "best_predictions.pt")  # another run's (same targets)
    with pytest.raises(ValueError, match=r"swapped/best_predictions.pt scores valid accuracy .*not the record's"):
        ensemble([runs[0], swapped], tmp_path / "ens")
    wide = tmp_path / "wide"
    shutil.copytree(runs[1], wide)
    saved = torch.load(wide / "best_predictions.pt", weights_only=True)
    pred = saved["valid"]["pred"]
    saved["valid"]["pred"] = torch.cat([pred, torch.full_like(pred[:, :1], -1e9)], 1)  # same argmax
    torch.save(saved, wide / "best_predictions.pt")
    with pytest.raises(ValueError, match=r"wide predicts valid shape \(64, \d+\), .*full \(64, \d+\)"):
        ensemble([runs[0], wide], tmp_path / "ens")
    broken = tmp_path / "broken"
    shutil.copytree(runs[1], broken)
    (broken / "best_predictions.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"broken/best_predictions.pt cannot be read"):
        ensemble([runs[0], broken], tmp_path / "ens")


def test_cli_ensemble_prints_each_member_and_the_mean(runs, tmp_path, capsys):
    assert main(["ensemble", *map(str, runs[:2]), "--out", str(tmp_path / "ens")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "ens" / "result.json").read_text())
    assert f"ensemble of 2: valid accuracy {result['best_valid_accuracy']}" in out
    assert all(str(r) in out for r in runs[:2])
