r"""``graphattn ensemble``: average the predictions of separately trained runs.

Each run of ``graphattn train`` keeps the predictions of its best validation epoch
(``best_predictions.pt``). An ensemble of :math:`K` runs predicts

.. math::

    \hat y_i = \frac{1}{K} \sum_{k=1}^{K} \hat y_i^{(k)},

the mean of the members' predictions as the task's ``predict`` returns them (logits of a
classifier, values of a regression), each member at its own best validation epoch: a deep
ensemble (Lakshminarayanan et al., NeurIPS 2017, who average probabilities rather than logits)
with every member early-stopped on the validation set. The ensemble's validation and test metrics
are the task's metric of those means.

The members must be complete training runs (not ensembles) of one task, with the same validation
and test targets in the same order (the same splits); they may differ in anything else (seed,
structure, size). Each member's predictions are checked against its record (the metric of its
``best_predictions.pt`` must be its best validation metric). The record (``result.json``) has a
training run's metric, time, memory and parameter fields, which ``docs/make_results.py`` reads:
its train time is the members' sum (earlier stages included), its peak memory the largest
member's, its parameters the members' sum and ``epochs_done`` their common epoch count (their
counts joined by ``/`` when they differ). It has no ``history``, ``options_used`` or
``world_size``; its ``config`` lists the runs, and ``members`` each run with its own metrics and
config.
"""

from __future__ import annotations

import json
import math
import platform
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from .engine import PREDICTIONS, TrainConfig, _replace_atomically, _write_record, run_seconds, source_commit
from .tasks import get_task

__all__ = ["ensemble"]


def _same_values(a: Tensor, b: Tensor) -> bool:
    """Equal values of equal shapes and dtypes, NaN equal to NaN (OGB marks missing labels NaN)."""
    if a.is_floating_point():
        nan = a.isnan()
        return torch.equal(nan, b.isnan()) and torch.equal(a[~nan], b[~nan])
    return torch.equal(a, b)


def _load_member(run: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A member run's record and predictions, or an error naming the run and what it lacks."""
    if not run.is_dir():
        raise FileNotFoundError(f"runs: {run} is not a run folder of graphattn train")
    record_path, predictions_path = run / "result.json", run / PREDICTIONS
    if not record_path.is_file():
        raise FileNotFoundError(f"runs: {run} has no result.json; finish the run (graphattn train --resume) first")
    try:
        record = json.loads(record_path.read_text())
    except ValueError as e:
        raise ValueError(f"runs: {record_path} is not a JSON record ({e})") from None
    if "members" in record:
        raise ValueError(f"runs: {run} is an ensemble; list its member runs instead")
    if record.get("interrupted"):
        raise ValueError(f"runs: {run} was interrupted after {record['epochs_done']} epochs; finish it with --resume")
    if record.get(f"best_valid_{record.get('metric')}") is None:
        raise ValueError(f"runs: {run} has no best validation {record.get('metric')} (no finite value in any epoch)")
    if not predictions_path.is_file():
        raise FileNotFoundError(
            f"runs: {run} has no {PREDICTIONS}; runs trained before graphattn kept their best epoch's "
            "predictions must be trained again"
        )
    try:
        predictions = torch.load(predictions_path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises several kinds
        raise ValueError(f"runs: {predictions_path} cannot be read ({type(e).__name__}: {e})") from None
    return record, predictions


def _check_targets(name: str, folder: Path, target: Tensor, first: Path, first_target: Tensor) -> None:
    """The ``name`` targets of ``folder`` are those of ``first``, or an error saying how they differ."""
    if target.dtype != first_target.dtype or target.shape != first_target.shape:
        raise ValueError(
            f"runs: the {name} targets of {folder} are {target.dtype} {tuple(target.shape)}, those of {first} "
            f"{first_target.dtype} {tuple(first_target.shape)}: the members must be runs of the same data"
        )
    if not _same_values(target, first_target):
        raise ValueError(
            f"runs: the {name} targets of {folder} differ from those of {first}: the members must be "
            "evaluated on the same examples in the same order"
        )


def ensemble(runs: list[str | Path], out: str | Path, data_root: str | None = None) -> dict[str, Any]:
    """Average the best-epoch predictions of ``runs`` (two or more run folders of one task); write
    ``result.json`` and ``best_predictions.pt`` of the ensemble to ``out`` and return the record.

    ``data_root`` is where the task's data is (as for ``graphattn train``); the task's metric is
    set up from the first member's config (:meth:`~graphattn.train.tasks.Task.prepare_metric`).
    """
    folders = [Path(r) for r in runs]
    if len(folders) < 2:
        raise ValueError(f"runs: an ensemble needs at least 2 runs, got {len(folders)}")
    seen: dict[Path, Path] = {}
    for folder in folders:
        if folder.resolve() in seen:
            raise ValueError(f"runs: {folder} is listed twice (also as {seen[folder.resolve()]}); each counts once")
        seen[folder.resolve()] = folder
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out must be a folder for result.json and {PREDICTIONS}, got the file {out_dir}")
    if out_dir.resolve() in seen:
        raise ValueError(f"--out {out_dir} is one of the runs; the ensemble would overwrite that member's record")
    if (out_dir / "result.json").is_file() and "members" not in json.loads((out_dir / "result.json").read_text()):
        raise ValueError(f"--out {out_dir} holds a training run's result.json; write the ensemble to another folder")
    members = [_load_member(f) for f in folders]
    first, first_pred = members[0]
    for folder, (record, pred) in zip(folders[1:], members[1:], strict=True):
        if record["task"] != first["task"]:
            raise ValueError(f"runs: {folder} is a run of {record['task']}, {folders[0]} of {first['task']}")
        for split in ("valid", "test"):
            _check_targets(split, folder, pred[split]["target"], folders[0], first_pred[split]["target"])
            if pred[split]["pred"].shape != first_pred[split]["pred"].shape:
                raise ValueError(
                    f"runs: {folder} predicts {split} shape {tuple(pred[split]['pred'].shape)}, "
                    f"{folders[0]} {tuple(first_pred[split]['pred'].shape)}"
                )

    # The data: data_root, else $GRAPHATTN_DATA, else the download path (not a root the members
    # recorded, which may be another machine's).
    config = {**first["config"], "data_root": data_root}
    task = get_task(first["task"])
    try:
        task.prepare_metric(TrainConfig.from_dict(config))  # OGB's evaluator, for example
    except (TypeError, ValueError) as e:
        raise ValueError(f"runs: the config of {folders[0]} does not set up {first['task']} here ({e})") from None
    metric = task.metric_name
    for folder, (record, pred) in zip(folders, members, strict=True):
        for split, key in (("valid", f"best_valid_{metric}"), ("test", f"test_{metric}")):
            value = task.metric(pred[split]["pred"], pred[split]["target"])
            if not math.isclose(value, record[key], rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(
                    f"runs: {folder}/{PREDICTIONS} scores {split} {metric} {value}, its result.json "
                    f"{record[key]}: the predictions are not the record's best epoch's"
                )
    scores, averaged = {}, {}
    for split in ("valid", "test"):
        mean = torch.stack([pred[split]["pred"] for _, pred in members]).mean(0)
        target = first_pred[split]["target"]
        averaged[split] = {"pred": mean, "target": target}
        scores[split] = task.metric(mean, target)

    seconds = [run_seconds(record) for record, _ in members]  # stages too
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
    # Atomic, the record last: a stop between the two leaves no record naming other predictions.
    _replace_atomically(out_dir / PREDICTIONS, partial(torch.save, {"epoch": None, "metric": metric, **averaged}))
    _write_record(out_dir, result)
    return result
