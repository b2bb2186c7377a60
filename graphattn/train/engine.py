"""The training loop behind ``graphattn train``: progress, checkpoints, resume, DDP, results.

A :class:`~graphattn.train.tasks.Task` supplies data, model, loss and metric; this module
owns everything else, once for every task:

- a progress bar (tqdm) with loss, metric and samples/s;
- model selection on the validation metric, test metric reported at the best epoch;
- ``init_from``: a fresh run may start from another run's model weights (its ``last.pt``): staged
  training, such as a short-sequence stage before the long one (Press et al., "Shortformer",
  ACL 2021); the optimizer and schedule start anew, and ``result.json`` records the first
  stage's config, epochs, best and last epoch's validation metric and train time under ``init``
  (and that stage's own ``init``, for a chain);
- the predictions and targets of the best validation epoch (``best_predictions.pt``), which
  ``graphattn ensemble`` averages over runs;
- an epoch's last training batch dropped when it would hold one example (no batch statistics for
  BatchNorm);
- a checkpoint after every epoch (``last.pt``) and on Ctrl-C, ``resume=True`` continues
  from it with the optimizer, RNG (CPU and, on a GPU, CUDA) and learning-rate schedule state;
  each epoch's shuffle is seeded by a hash of ``seed`` plus the epoch, so a resumed run sees the
  batches an uninterrupted one would, and two seeds do not share batch orders;
- distributed data parallel when launched by ``torchrun`` (gloo for ``--device cpu``; nccl for
  ``--device cuda``, each process on GPU ``LOCAL_RANK``), the
  training set sharded by :class:`torch.utils.data.DistributedSampler` (each process runs
  ``batch_size`` examples a step; evaluation runs whole on every process);
- a JSON record (``result.json``): metrics, samples/s, peak memory, the exact config and every
  option the run read, with the defaults it used (``options_used``), and the versions and source
  commit it ran (``environment``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from .. import __version__
from ..structure.sac import SAC, policy_losses
from .tasks import Task, get_task

__all__ = ["TrainConfig", "train", "peak_rss_mib", "retain_freed_memory", "source_commit", "run_stages", "run_seconds"]

#: The file in a run folder with the best validation epoch's predictions (see ``graphattn ensemble``).
PREDICTIONS = "best_predictions.pt"

# What source_commit calls the source: edits elsewhere (docs, results, tests) leave a run's numbers alone.
_SOURCE_PATHS = ("graphattn", "cuda", "setup.py", "pyproject.toml")


@dataclass
class TrainConfig:
    r"""Everything that defines a run; written verbatim into ``result.json``.

    ``attention`` names a structure (see ``graphattn train --help``); ``options`` holds
    structure- or task-specific settings (for example ``{"window": 64}``). ``optimizer`` is
    ``"adamw"`` (decoupled weight decay) or ``"adam"`` (weight decay as an L2 term in the
    gradient, as GAT and most GNN baselines are trained). ``lr_schedule`` is ``"constant"`` or
    ``"cosine"``: the learning rate rises linearly over the first epoch's steps, then follows
    :math:`\eta_t = \tfrac{\eta}{2}(1 + \cos(\pi\, t / T))` over the remaining ``T`` steps
    (Loshchilov and Hutter, SGDR, ICLR 2017, without restarts), ending at 0 after the last epoch
    (with one epoch, which is all warm-up, at the full rate). ``max_grad_norm`` clips the gradient
    norm (0: no clipping). A resumed run keeps every setting but ``epochs`` (no fewer than are
    done; under ``cosine``, changed only while the first, warm-up epoch is all that is done),
    ``device``, ``out``, ``data_root`` and ``progress``. ``init_from`` is a ``last.pt`` whose model
    weights a fresh run starts from (see the module docstring).
    """

    task: str = "recall"
    attention: str = "window"
    layers: int = 2
    dim: int = 64
    heads: int = 4
    dropout: float = 0.0
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    lr_schedule: str = "constant"
    batch_size: int = 32
    seed: int = 0
    max_grad_norm: float = 1.0
    device: str = "cpu"
    out: str = "runs/default"
    resume: bool = False
    progress: bool = True
    data_root: str | None = None
    init_from: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("task", "attention", "optimizer", "lr_schedule", "device", "out"):
            _check_setting(name, getattr(self, name), str)
        for name in ("data_root", "init_from"):
            if getattr(self, name) is not None:
                _check_setting(name, getattr(self, name), str)
        for name in ("resume", "progress"):
            _check_setting(name, getattr(self, name), bool)
        for name in ("layers", "dim", "heads", "epochs", "batch_size"):
            if _check_setting(name, getattr(self, name), int) < 1:
                raise ValueError(f"{_flag(name)} must be >= 1, got {getattr(self, name)}")
        if not 0 <= _check_setting("seed", self.seed, int) < 2**32:  # numpy's seed range
            raise ValueError(f"--seed must be in [0, 2**32 - 1], got {self.seed}")
        for name, low, strict in (("lr", 0.0, True), ("weight_decay", 0.0, False), ("max_grad_norm", 0.0, False)):
            value = _check_setting(name, getattr(self, name), float)
            if not math.isfinite(value) or value < low or (strict and value == low):
                bound = f"{'>' if strict else '>='} {low:g}"
                raise ValueError(f"{_flag(name)} must be a finite number {bound}, got {value}")
        if not 0.0 <= _check_setting("dropout", self.dropout, float) < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.options, dict) or not all(isinstance(key, str) and key for key in self.options):
            raise TypeError(f"options must map option names to values, got {self.options!r}")
        # The options the task and structure read (tasks._opt), with the values they used (defaults
        # included): any other key is a typo (engine.train); result.json records them all.
        self._options_used: dict[str, Any] = {}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**d)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_setting(name: str, value: Any, kind: type) -> Any:
    """``value`` of setting ``name`` if it has type ``kind`` (an int is a float; a bool is neither)."""
    kinds = (int, float) if kind is float else (kind,)
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kinds):
        article = "an" if kind is int else "a"
        raise TypeError(f"{_flag(name)} (config key {name!r}) must be {article} {kind.__name__}, got {value!r}")
    return value


def retain_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Let this process reuse freed CPU buffers of up to ``limit_bytes`` (glibc's ``malloc`` only).

    glibc serves every block above its mmap threshold (dynamic, 32 MiB at most by default) with
    a fresh ``mmap`` and unmaps it when it is freed, so the next tensor of that size starts on
    untouched pages: one page fault and one zeroed page per 4 KiB on its first write. A layer
    over a large graph makes many such tensors per step (edge lists, sort keys, gradients):
    one SBM step at N = 65,536 (``benchmarks/structures/bench_adaptive.py``, one thread)
    spent 4.5 s of 10.4 s CPU in the kernel for 1.4 million page faults, 0.13 s after this
    call. It sets ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` (``mallopt(3)``) to
    ``limit_bytes``, so such blocks come from the heap and stay there when freed. The cost:
    memory freed by the process is not returned to the system before it exits (its peak stays
    reserved). PyTorch's CPU performance guide recommends a caching allocator (jemalloc or
    TCMalloc through ``LD_PRELOAD``) for the same reason; this needs no extra library.

    ``graphattn train`` and ``graphattn bench`` call it when ``GRAPHATTN_MALLOC=retain`` is set
    (not by default: with it the same SBM step peaked at 2379 MiB instead of 1481, the heap
    holding freed blocks that later requests did not fit; see ``benchmarks/README.md``).
    Returns whether the setting was applied (``False`` where the C library is not glibc).
    """
    import ctypes

    if limit_bytes <= 0:
        raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # this process's symbols, glibc's mallopt among them
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    value = min(limit_bytes, 2**31 - 1)
    applied = bool(libc.mallopt(m_mmap_threshold, value)) and bool(libc.mallopt(m_trim_threshold, value))
    if applied:
        global _retained_bytes
        _retained_bytes = value
    return applied


# What retain_freed_memory applied in this process (recorded in result.json), None if nothing.
_retained_bytes: int | None = None


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``, the high-water mark of this program's
    own memory: ``ru_maxrss`` would also count a parent's peak inherited through fork + exec.
    Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def source_commit() -> str | None:
    """The git commit of the graphattn source tree this process imports (with ``-dirty`` when its
    tracked source files, the package, kernels and build files, differ from it), or ``None`` when
    that tree is not a git checkout (an installed package). ``result.json`` records it, taken when
    the run starts: a change to a kernel's rounding changes a run's numbers."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root:  # site-packages inside another repo
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *_SOURCE_PATHS)
        return git("rev-parse", "HEAD") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _shuffle_seed(seed: int) -> int:
    """The seed of ``seed``'s first epoch's shuffle (epoch ``k`` uses it plus ``k``, as
    :class:`~torch.utils.data.DistributedSampler` does): a hash of ``seed`` into 32 bits, so that
    seeds do not share batch orders (with ``seed + k``, seed 1's epoch ``k`` was seed 0's ``k + 1``)."""
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device); initializes the process group when launched by
    torchrun: NCCL for ``--device cuda`` (each process on GPU ``LOCAL_RANK``), gloo for the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def _init_weights(model: nn.Module, path: str, device: torch.device) -> dict[str, Any]:
    """Load the model weights of the checkpoint at ``path`` into ``model`` (``--init-from``); returns
    what ``result.json`` records of that run (its config, epochs, best validation metric, time)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"--init-from: no checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)  # load_state_dict copies to the device
    if not isinstance(ckpt, dict) or not {"model", "config", "state"} <= set(ckpt):
        raise ValueError(f"--init-from: {path} is not a graphattn train checkpoint (last.pt)")
    own = model.state_dict()
    missing = sorted(set(own) - set(ckpt["model"]))
    unexpected = sorted(set(ckpt["model"]) - set(own))
    shapes = sorted(
        f"{k} {list(v.shape)} vs {list(own[k].shape)}"
        for k, v in ckpt["model"].items()
        if k in own and v.shape != own[k].shape
    )
    if missing or unexpected or shapes:

        def few(keys: list[str]) -> str:
            return f"{keys[:5]}{f' and {len(keys) - 5} more' if len(keys) > 5 else ''}"

        raise ValueError(
            f"--init-from: {path} holds another model (missing {few(missing)}, unexpected {few(unexpected)}, "
            f"other shapes {few(shapes)}); its run was --task {ckpt['config'].get('task')} "
            f"--attention {ckpt['config'].get('attention')}"
        )
    model.load_state_dict(ckpt["model"])
    st = ckpt["state"]
    return {
        "path": str(path),
        "config": ckpt["config"],
        "epochs_done": st["epoch"],
        "best_valid": st["best_valid"],
        "last_epoch": st["history"][-1] if st["history"] else None,  # the weights carried over are the last epoch's
        "train_seconds": st["train_seconds"],
        "init": st.get("init"),  # that run's own first stage, if it had one
    }


def run_stages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages of a run from its ``result.json`` record, earliest first: the ``init`` of its
    ``init`` ... then the run itself (a run without ``--init-from`` is one stage). Each holds that
    stage's ``epochs_done`` and ``train_seconds``."""
    chain = [record]
    while chain[-1].get("init"):
        chain.append(chain[-1]["init"])
    return chain[::-1]


def run_seconds(record: dict[str, Any]) -> float:
    """Train time of a run from its ``result.json`` record, its earlier stages' (``init``) included."""
    return sum(stage["train_seconds"] for stage in run_stages(record))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def _evaluate(task: Task, model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, Tensor, Tensor]:
    """The metric over ``loader``, and the predictions and targets it was computed from."""
    model.eval()
    preds, targets = [], []
    for batch in loader:
        batch = task.to_device(batch, device)
        preds.append(task.predict(model, batch).cpu())
        targets.append(task.target(batch).cpu())
    model.train()
    pred, target = torch.cat(preds), torch.cat(targets)
    return task.metric(pred, target), pred, target


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, then rename it over ``path``: a stop during the
    write leaves the previous file whole (and no temporary file)."""
    tmp = path.with_suffix(".tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def _write_record(out_dir: Path, result: dict[str, Any]) -> None:
    """``out_dir/result.json``, written atomically."""
    _replace_atomically(out_dir / "result.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2)))


def _save_predictions(
    out_dir: Path, epoch: int, task: Task, valid: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor]
) -> None:
    """``best_predictions.pt``: the best validation epoch's predictions and targets (what
    ``graphattn ensemble`` averages), written atomically like ``last.pt``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions = {
        "epoch": epoch,
        "metric": task.metric_name,
        "valid": {"pred": valid[0], "target": valid[1]},
        "test": {"pred": test[0], "target": test[1]},
    }
    _replace_atomically(out_dir / PREDICTIONS, partial(torch.save, predictions))


def _better(task: Task, a: float, b: float | None) -> bool:
    if b is None or math.isnan(b):
        return not math.isnan(a)
    return a > b if task.higher_is_better else a < b


def _constant(step: int, warmup: int, total: int) -> float:
    return 1.0


def _cosine(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over ``warmup`` steps, then half a cosine from 1 to 0 at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


# lr_schedule name -> factor of cfg.lr at a step, given the warm-up and total step counts.
LR_SCHEDULES: dict[str, Callable[[int, int, int], float]] = {"constant": _constant, "cosine": _cosine}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train ``cfg.task`` with ``cfg.attention``; returns (and on rank 0 writes) the result record."""
    task = get_task(cfg.task)
    if cfg.attention not in task.attentions(cfg):  # settings checked before any data is loaded
        raise ValueError(
            f"--attention for --task {cfg.task} must be one of {', '.join(task.attentions(cfg))}, got {cfg.attention!r}"
        )
    if not task.dim_is_per_head and cfg.dim % cfg.heads:
        raise ValueError(f"--dim ({cfg.dim}) must be divisible by --heads ({cfg.heads}): each head gets dim / heads")
    optimizers = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
    if cfg.optimizer not in optimizers:
        raise ValueError(f"optimizer must be one of {sorted(optimizers)}, got {cfg.optimizer!r}")
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {cfg.lr_schedule!r}")
    try:
        device = torch.device(cfg.device)
    except RuntimeError as e:
        raise ValueError(f"--device must be a torch device such as cpu or cuda, got {cfg.device!r} ({e})") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda (cuda:N), got {cfg.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: torch {torch.__version__} sees no CUDA device")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {cfg.device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    rank, world, device = _distributed(device)
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise ValueError(f"--out must be a folder for last.pt and result.json, got the file {cfg.out}")
    commit = source_commit() if rank == 0 else None  # now: the tree may change while the run trains
    _seed_everything(cfg.seed)
    train_set, valid_set, test_set = task.datasets(cfg)
    model = task.build_model(cfg).to(device)
    unread = sorted(set(cfg.options) - set(cfg._options_used))
    if unread:  # every option is read while the data and the model are built
        raise ValueError(
            f"unknown --option {unread} for --task {cfg.task} --attention {cfg.attention}; "
            f"this run reads {sorted(cfg._options_used)}"
        )
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = optimizers[cfg.optimizer](model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out_dir = Path(cfg.out)
    ckpt_path = out_dir / "last.pt"
    state = {
        "epoch": 0,
        "best_valid": None,
        "test_at_best": None,
        "history": [],
        "train_seconds": 0.0,
        "shuffle_seed": _shuffle_seed(cfg.seed),
        "drop_single_batch": True,
    }
    if cfg.init_from is not None and not cfg.resume:  # a resumed run has these weights in its own checkpoint
        state["init"] = _init_weights(model, cfg.init_from, device)
    if cfg.resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}; run without --resume first")
        ckpt = torch.load(ckpt_path, map_location=device, weights_only=False)
        # Settings a resumed run may change; any other change would mix two runs in one record.
        free = {"epochs", "resume", "progress", "out", "device", "data_root"}
        now = asdict(cfg)
        changed = {k: (v, now.get(k)) for k, v in ckpt["config"].items() if k not in free and now.get(k) != v}
        if changed:
            diff = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
            raise ValueError(
                f"--resume: {ckpt_path} was trained with other settings ({diff}); resume with the same "
                f"settings (only {sorted(free - {'resume'})} may change) or use another --out"
            )
        done = ckpt["state"]["epoch"]
        if cfg.epochs < done:
            raise ValueError(f"--resume: {ckpt_path} has {done} epochs done; --epochs {cfg.epochs} would train none")
        if cfg.lr_schedule != "constant" and cfg.epochs != ckpt["config"]["epochs"] and done > 1:
            # The first epoch is warm-up whatever the total, so a run stopped there may change it.
            raise ValueError(
                f"--resume: the {cfg.lr_schedule} schedule spans the run's --epochs ({ckpt['config']['epochs']}) "
                f"and {done} epochs of it are done; changing it to {cfg.epochs} would splice two schedules"
            )
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        # Checkpoints from before 2026-11-27's changes shuffled epoch k with seed + k and kept a
        # last batch of one: a resumed run goes on as it began.
        state.setdefault("shuffle_seed", cfg.seed)
        state.setdefault("drop_single_batch", False)
        torch.set_rng_state(ckpt["rng"].cpu())  # map_location moved it to the device; the CPU state lives there
        if device.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), device)
    if world > 1:
        # Some structures hold parameters the task loss does not reach (SEA's estimator learns by
        # distillation only), so DDP must not wait for their gradients.
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    # The sampler's epoch seeds the shuffle, so every rank sees a disjoint, reproducible shard.
    shuffle_seed = state["shuffle_seed"]
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=shuffle_seed) if world > 1 else None
    gen = torch.Generator()
    # An epoch's last batch of one example (on each process) is dropped: BatchNorm over the examples
    # of a batch (the molecule models' virtual node) has no batch statistics for one
    # (ogbg-molfreesolv has 513 training molecules: 16 batches of 32 and one of 1).
    per_rank = len(sampler) if sampler is not None else len(train_set)
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=task.collate,
        generator=gen,
        drop_last=state["drop_single_batch"] and per_rank > 1 and per_rank % cfg.batch_size == 1,
    )
    steps_per_epoch = len(train_loader)
    schedule = LR_SCHEDULES[cfg.lr_schedule]
    # Optimizer steps so far: 0 on a fresh start; a checkpoint from before lr_schedule existed lacks it.
    state.setdefault("step", state["epoch"] * steps_per_epoch)
    eval_loaders = [
        DataLoader(ds, batch_size=cfg.batch_size * 2, shuffle=False, collate_fn=task.collate)
        for ds in (valid_set, test_set)
    ]

    def save() -> None:
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint = {
                "model": _unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "state": state,
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "config": asdict(cfg),
            }
            _replace_atomically(ckpt_path, partial(torch.save, checkpoint))  # a Ctrl-C keeps the previous one

    show = cfg.progress and rank == 0  # the progress bar; epoch lines print on rank 0 regardless
    reinforce = any(isinstance(m, SAC) and m.mode == "reinforce" for m in model.modules())
    interrupted = False
    if not cfg.resume and rank == 0:  # a fresh run: no earlier run's predictions may stand for its own
        (out_dir / PREDICTIONS).unlink(missing_ok=True)
    try:
        for epoch in range(state["epoch"], cfg.epochs):
            if sampler is not None:
                sampler.set_epoch(epoch)
            gen.manual_seed(shuffle_seed + epoch)  # the epoch's shuffle: the same after --resume as in a straight run
            if hasattr(train_set, "set_epoch"):  # a training set that changes per epoch (recall's resample)
                train_set.set_epoch(epoch)
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
            t0, seen, loss_sum = time.perf_counter(), 0, 0.0
            for batch in bar:
                batch = task.to_device(batch, device)
                pred, aux_loss = task.forward(model, batch)
                task_loss = task.task_loss(pred, batch)
                loss = task_loss + aux_loss
                if reinforce:  # SAC's REINFORCE term: each example's sampled graph earns its negative loss
                    per_example = task.example_losses(pred, batch)
                    reward = -(task_loss if per_example is None else per_example).detach()
                    loss = loss + policy_losses(model, reward)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                for group in optimizer.param_groups:  # the step's rate from the step count (resumes exactly)
                    group["lr"] = cfg.lr * schedule(state["step"], steps_per_epoch, cfg.epochs * steps_per_epoch)
                optimizer.step()
                state["step"] += 1
                n = task.batch_size(batch)
                seen += n
                loss_sum += float(task_loss.detach()) * n
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", samples_s=f"{seen / (time.perf_counter() - t0):.0f}")
            epoch_seconds = time.perf_counter() - t0
            state["train_seconds"] += epoch_seconds
            valid, valid_pred, valid_target = _evaluate(task, model, eval_loaders[0], device)
            test, test_pred, test_target = _evaluate(task, model, eval_loaders[1], device)
            if _better(task, valid, state["best_valid"]):
                state["best_valid"], state["test_at_best"] = valid, test
                if rank == 0:
                    _save_predictions(out_dir, epoch + 1, task, (valid_pred, valid_target), (test_pred, test_target))
            state["history"].append(
                {
                    "epoch": epoch + 1,
                    "train_loss": loss_sum / max(seen, 1),
                    f"valid_{task.metric_name}": valid,
                    f"test_{task.metric_name}": test,
                    "seconds": epoch_seconds,
                    "samples": seen * world,
                    "samples_per_s": seen * world / epoch_seconds,
                }
            )
            state["epoch"] = epoch + 1
            if rank == 0:
                tqdm.write(
                    f"epoch {epoch + 1:3d}  loss {loss_sum / max(seen, 1):.4f}  valid {task.metric_name} {valid:.4f}  "
                    f"test {test:.4f}  {seen * world / epoch_seconds:.0f} samples/s"
                )
            save()
    except KeyboardInterrupt:
        interrupted = True
        if rank == 0:
            if state["epoch"] > 0:
                tqdm.write(f"interrupted: last complete epoch {state['epoch']} is saved in {ckpt_path}; use --resume")
            else:
                tqdm.write("interrupted before the first epoch finished: no checkpoint of this run to resume")

    result = {
        "task": cfg.task,
        "attention": cfg.attention,
        "metric": task.metric_name,
        f"best_valid_{task.metric_name}": state["best_valid"],
        f"test_{task.metric_name}": state["test_at_best"],
        "epochs_done": state["epoch"],
        "interrupted": interrupted,
        "train_seconds": state["train_seconds"],
        "samples_per_s": sum(h["samples"] for h in state["history"]) / state["train_seconds"]
        if state["train_seconds"] > 0
        else None,
        "peak_rss_mib": peak_rss_mib(),
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "parameters": n_params,
        "world_size": world,
        "history": state["history"],
        "init": state.get("init"),
        "shuffle_seed": state["shuffle_seed"],  # epoch k's shuffle: this plus k
        "config": asdict(cfg),
        "options_used": dict(sorted(cfg._options_used.items())),  # with the defaults of those not set
        "environment": {
            "graphattn": __version__,
            "source_commit": commit,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "malloc_retain_bytes": _retained_bytes,
        },
    }
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_record(out_dir, result)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result
