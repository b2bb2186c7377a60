r"""``graphattn ensemble``: average the predictions of separately trained runs.

Each run of ``graphattn train`` keeps the predictions of its best validation epoch
(``best_predictions.pt``). An ensemble of :math:`K` runs predicts

.. math::

    \hat y_i = \frac{1}{K} \sum_{k=1}^{K} \hat y_i^{(k)},

the mean of the members' predictions as the task's ``predict`` returns them (logits of a
classifier, values of a regression), each member at its own best validation epoch: the deep
ensemble of Lakshminarayanan et al. (NeurIPS 2017), with every member early-stopped on the
validation set. The ensemble's validation and test metrics are the task's metric of those means.

The members must be complete training runs (not ensembles) of one task, with the same validation and test targets in the
same order (the same splits); they may differ in anything else (seed, structure, size). The
record (``result.json``) has the fields of a training run's, with ``members`` listing each run and
its own metrics; its train time is the members' sum (earlier stages included), its peak memory the
largest member's.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from .engine import PREDICTIONS, TrainConfig, source_commit
from .tasks import get_task

__all__ = ["ensemble"]


def _same_values(a: Tensor, b: Tensor) -> bool:
    """Equal shapes and values, NaN equal to NaN (OGB marks missing labels NaN)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.is_floating_point():
        nan = a.isnan()
        return torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])
    return torch.equal(a, b)


def _seconds(record: dict[str, Any]) -> float:
    """A run's train time, its earlier stages' (``init``, and theirs) included."""
    total = 0.0
    while record:
        total, record = total + record["train_seconds"], record.get("init")
    return total


def _load_member(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A member run's record and predictions, or an error naming the run and what it lacks."""
    if not run.is_dir():
        raise FileNotFoundError(f"runs: {run} is not a run folder of graphattn train")
    record_path, predictions_path = run / "result.json", run / PREDICTIONS
    if not record_path.is_file():
        raise FileNotFoundError(f"runs: {run} has no result.json; finish the run (graphattn train --resume) first")
    record = json.loads(record_path.read_text())
    if "members" in record:
        raise ValueError(f"runs: {run} is an ensemble; list its member runs instead")
    if record.get("interrupted"):
        raise ValueError(f"runs: {run} was interrupted after {record['epochs_done']} epochs; finish it with --resume")
    if not predictions_path.is_file():
        raise FileNotFoundError(
            f"runs: {run} has no {PREDICTIONS}; runs trained before graphattn kept their best epoch's "
            "predictions must be trained again"
        )
    return record, torch.load(predictions_path, map_location="cpu", weights_only=True)


def ensemble(runs: list[str | Path], out: str | Path, data_root: str | None = None) -> dict[str, Any]:
    """Average the best-epoch predictions of ``runs`` (two or more run folders of one task); write
    ``result.json`` and ``best_predictions.pt`` of the ensemble to ``out`` and return the record.

    ``data_root`` is where the task's data is (as for ``graphattn train``); the task is set up
    from the first member's config to compute its metric (OGB's evaluator, for example).
    """
    folders = [Path(r) for r in runs]
    if len(folders) < 2:
        raise ValueError(f"runs: an ensemble needs at least 2 runs, got {len(folders)}")
    if len(set(map(Path.resolve, folders))) < len(folders):
        raise ValueError("runs: a run is listed twice; each member counts once")
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out must be a folder for result.json, got the file {out_dir}")
    members = [_load_member(f) for f in folders]
    first, first_pred = members[0]
    for folder, (record, pred) in zip(folders[1:], members[1:], strict=True):
        if record["task"] != first["task"]:
            raise ValueError(f"runs: {folder} is a run of {record['task']}, {folders[0]} of {first['task']}")
        for split in ("valid", "test"):
            if not _same_values(pred[split]["target"], first_pred[split]["target"]):
                raise ValueError(
                    f"runs: the {split} targets of {folder} differ from those of {folders[0]}: "
                    "the members must be evaluated on the same examples in the same order"
                )
            if pred[split]["pred"].shape != first_pred[split]["pred"].shape:
                raise ValueError(
                    f"runs: {folder} predicts {split} shape {tuple(pred[split]['pred'].shape)}, "
                    f"{folders[0]} {tuple(first_pred[split]['pred'].shape)}"
                )

    config = dict(first["config"])
    if data_root is not None:
        config["data_root"] = data_root
    task = get_task(first["task"])
    task.datasets(TrainConfig.from_dict(config))  # sets up the metric (OGB's evaluator, for example)
    metric = task.metric_name
    scores, averaged = {}, {}
    for split in ("valid", "test"):
        mean = torch.stack([pred[split]["pred"] for _, pred in members]).mean(0)
        target = first_pred[split]["target"]
        averaged[split] = {"pred": mean, "target": target}
        scores[split] = task.metric(mean, target)

    seconds = [_seconds(record) for record, _ in members]
    own_seconds = sum(record["train_seconds"] for record, _ in members)
    samples = sum(h["samples"] for record, _ in members for h in record["history"])
    epochs = {record["epochs_done"] for record, _ in members}
    attentions = sorted({record["attention"] for record, _ in members})
    cuda = [record["peak_cuda_mib"] for record, _ in members if record.get("peak_cuda_mib") is not None]
    result = {
        "task": first["task"],
        "attention": ",".join(attentions),
        "metric": metric,
        f"best_valid_{metric}": scores["valid"],
        f"test_{metric}": scores["test"],
        "epochs_done": epochs.pop() if len(epochs) == 1 else "/".join(str(r["epochs_done"]) for r, _ in members),
        "interrupted": False,
        "train_seconds": sum(seconds),
        "samples_per_s": samples / own_seconds if own_seconds > 0 else None,  # of the members' last stages
        "peak_rss_mib": max(record["peak_rss_mib"] for record, _ in members),
        "peak_cuda_mib": max(cuda) if cuda else None,
        "parameters": sum(record["parameters"] for record, _ in members),
        "history": [],  # no epochs of its own
        "init": None,
        "members": [
            {
                "run": str(folder),
                "best_epoch": pred["epoch"],
                f"best_valid_{metric}": record[f"best_valid_{metric}"],
                f"test_{metric}": record[f"test_{metric}"],
                "train_seconds": secs,
                "config": record["config"],
            }
            for folder, (record, pred), secs in zip(folders, members, seconds, strict=True)
        ],
        "config": {"runs": [str(f) for f in folders], "data_root": data_root},
        "environment": {
            "graphattn": __version__,
            "source_commit": source_commit(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": None, "metric": metric, **averaged}, out_dir / PREDICTIONS)
    (out_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result
