"""The ``graphattn`` command: ``train``, ``ensemble``, ``bench`` and ``info``.

Examples::

    graphattn train --task recall --attention routing --epochs 5
    graphattn train --config runs/molhiv.json --seed 1       # flags override the file
    torchrun --nproc_per_node=2 -m graphattn train --task mnist1d
    graphattn ensemble runs/a runs/b runs/c --out runs/abc  # mean of their best epochs' predictions
    graphattn bench --quick
    graphattn info
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_train_config"]


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option must be KEY=VALUE, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)  # numbers, booleans, lists
    except json.JSONDecodeError:
        value = raw
    return key, value


def _load_config_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"--config: no such file {path}")
    try:
        if p.suffix == ".toml":
            import tomllib

            loaded = tomllib.loads(p.read_text())
        else:
            loaded = json.loads(p.read_text())
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        kind = "TOML" if p.suffix == ".toml" else "JSON (other suffixes than .toml are read as JSON)"
        raise SystemExit(f"--config {path}: not valid {kind}: {e}") from None
    if not isinstance(loaded, dict):
        raise SystemExit(f"--config {path}: must hold a table of settings, got {type(loaded).__name__}")
    if not isinstance(loaded.get("options", {}), dict):
        raise SystemExit(f"--config {path}: options must be a table of option names to values")
    return loaded


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from .train.engine import TrainConfig
    from .train.tasks import attention_names, task_names

    defaults = {f.name: f.default for f in fields(TrainConfig) if not callable(f.default_factory)}
    p = sub.add_parser(
        "train",
        help="train a model on a task with an attention structure",
        description="Train an attention structure on a task. Precedence: defaults < --config file < flags.",
    )  # flags default to None (so a --config file can set them); each help text states the real default
    p.add_argument("--task", choices=task_names(), help=f"task (default {defaults['task']})")
    p.add_argument("--attention", choices=attention_names(), help=f"structure (default {defaults['attention']})")
    for name, typ in (("layers", int), ("dim", int), ("heads", int), ("epochs", int), ("seed", int)):
        p.add_argument(f"--{name}", type=typ, help=f"default {defaults[name]}")
    p.add_argument("--lr", type=float, help=f"default {defaults['lr']}")
    p.add_argument("--weight-decay", type=float, dest="weight_decay", help=f"default {defaults['weight_decay']}")
    p.add_argument(
        "--optimizer",
        choices=("adamw", "adam"),
        help=f"adamw (decoupled weight decay) or adam (weight decay as an L2 term) (default {defaults['optimizer']})",
    )
    p.add_argument(
        "--lr-schedule",
        dest="lr_schedule",
        choices=("constant", "cosine"),
        help=f"cosine: one epoch of linear warm-up, then cosine decay to 0 (default {defaults['lr_schedule']})",
    )
    p.add_argument("--dropout", type=float, help=f"default {defaults['dropout']}")
    p.add_argument(
        "--max-grad-norm",
        type=float,
        dest="max_grad_norm",
        help=f"clip the gradient norm to this; 0 turns clipping off (default {defaults['max_grad_norm']})",
    )
    p.add_argument("--batch-size", type=int, dest="batch_size", help=f"default {defaults['batch_size']}")
    p.add_argument("--device", help="cpu or cuda (default cpu)")
    p.add_argument("--out", help="run folder for last.pt and result.json (default runs/<task>-<attention>-s<seed>)")
    p.add_argument("--data-root", dest="data_root", help="local dataset root (or set GRAPHATTN_DATA)")
    p.add_argument("--config", help="JSON or TOML file with any of these settings")
    p.add_argument("--resume", action="store_true", default=None, help="continue from <out>/last.pt")
    p.add_argument(
        "--init-from",
        dest="init_from",
        metavar="CHECKPOINT",
        help="start from the model weights of another run's last.pt (staged training; fresh optimizer)",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    p.add_argument(
        "--option",
        action="append",
        type=_parse_option,
        default=[],
        metavar="KEY=VALUE",
        help="task/structure option, repeatable (e.g. --option window=64 --option length=512); "
        "a key the task and structure do not read is an error",
    )


def parse_train_config(args: argparse.Namespace):  # -> TrainConfig
    """Merge defaults, ``--config`` and flags into a :class:`~graphattn.train.engine.TrainConfig`."""
    from .train.engine import TrainConfig

    merged: dict[str, Any] = _load_config_file(args.config) if args.config else {}
    names = {f.name for f in fields(TrainConfig)}
    for name in names - {"options"}:
        value = getattr(args, name, None)
        if value is not None:
            merged[name] = value
    options = dict(merged.get("options", {}))
    options.update(dict(args.option))
    merged["options"] = options
    cfg = TrainConfig.from_dict(merged)
    if "out" not in merged:
        cfg.out = f"runs/{cfg.task}-{cfg.attention}-s{cfg.seed}"
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graphattn", description="Attention as message passing.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    ens = sub.add_parser(
        "ensemble",
        help="average the best validation epoch's predictions of finished runs",
        description="Average the predictions of finished graphattn train runs of one task, each at its "
        "own best validation epoch (its best_predictions.pt), and score the mean.",
    )
    ens.add_argument("runs", nargs="+", metavar="RUN", help="run folders (two or more) of graphattn train")
    ens.add_argument("--out", required=True, help="folder for the ensemble's result.json")
    ens.add_argument(
        "--data-root",
        dest="data_root",
        help="local dataset root for the task's metric (or set GRAPHATTN_DATA; the members' recorded root is not used)",
    )
    bench = sub.add_parser("bench", help="run the edge-attention benchmark (benchmarks/ops)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the benchmark script")
    sub.add_parser("info", help="versions and the backend table")
    args = parser.parse_args(argv)

    if args.command == "info":
        from .info import main as info_main

        info_main()
        return 0
    malloc = os.environ.get("GRAPHATTN_MALLOC", "system")
    if malloc not in ("system", "retain"):
        raise SystemExit(f"GRAPHATTN_MALLOC must be 'system' or 'retain', got {malloc!r}")
    if malloc == "retain":
        from .train.engine import retain_freed_memory

        if not retain_freed_memory():
            print("GRAPHATTN_MALLOC=retain: the C library is not glibc; nothing changed", file=sys.stderr)
    if args.command == "ensemble":
        from .train.ensemble import ensemble

        result = ensemble(args.runs, args.out, args.data_root)
        metric = result["metric"]
        for member in result["members"]:
            print(
                f"{member['run']}: best valid {metric} {member[f'best_valid_{metric}']} "
                f"(epoch {member['best_epoch']}), test {metric} {member[f'test_{metric}']}"
            )
        print(
            f"ensemble of {len(result['members'])}: valid {metric} {result[f'best_valid_{metric}']}, "
            f"test {metric} {result[f'test_{metric}']} -> {args.out}/result.json"
        )
        return 0
    if args.command == "bench":
        script = Path(__file__).resolve().parent.parent / "benchmarks" / "ops" / "bench_edge_attention.py"
        if not script.is_file():
            raise SystemExit(f"the benchmark script ships with the source tree; not found at {script}")
        sys.argv = [str(script), *args.rest]
        runpy.run_path(str(script), run_name="__main__")
        return 0
    from .train.engine import train

    cfg = parse_train_config(args)
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        metric = result["metric"]
        print(
            f"{cfg.task} / {cfg.attention}: best valid {metric} {result[f'best_valid_{metric}']}, "
            f"test {metric} {result[f'test_{metric}']}, {result['samples_per_s'] or 0:.1f} samples/s, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB -> {cfg.out}/result.json"
        )
    return 130 if result["interrupted"] else 0  # a shell's code for a run stopped by Ctrl-C


if __name__ == "__main__":
    sys.exit(main())
