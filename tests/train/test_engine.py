"""`graphattn train`: config precedence, results, checkpoints, resume, Ctrl-C, and 2-process DDP."""

import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from graphattn.cli import main
from graphattn.train.engine import TrainConfig, retain_freed_memory, train
from graphattn.train.tasks import WINDOWED, RecallTask, attention_names, get_task, make_structure

TINY = {"length": 16, "pairs": 2, "train_size": 256, "eval_size": 64}


def _cfg(tmp_path, **kw):
    base = {"task": "recall", "attention": "full", "dim": 16, "heads": 2, "layers": 1, "epochs": 1, "batch_size": 32}
    base.update(kw)
    base.setdefault("options", dict(TINY))
    return TrainConfig(out=str(tmp_path / "run"), progress=False, **base)


def test_result_record_has_metric_speed_memory_and_config(tmp_path):
    result = train(_cfg(tmp_path))
    # Every option the run read, with the defaults it used (the config holds only those set; audit).
    assert result["options_used"] == {**result["config"]["options"], "pair_tokens": False, "resample": False}
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["test_accuracy"] == result["test_accuracy"]
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    assert saved["samples_per_s"] > 0 and saved["peak_rss_mib"] > 0
    assert saved["config"]["options"] == TINY
    assert saved["epochs_done"] == 1 and len(saved["history"]) == 1
    assert (tmp_path / "run" / "last.pt").is_file()


def test_best_predictions_are_the_best_validation_epochs(tmp_path):
    """best_predictions.pt holds the predictions the best validation metric and its test metric
    were computed from, at that epoch (not the last one)."""
    result = train(_cfg(tmp_path, epochs=4))
    saved = torch.load(tmp_path / "run" / "best_predictions.pt", weights_only=True)
    valids = [h["valid_accuracy"] for h in result["history"]]
    assert saved["epoch"] == valids.index(max(valids)) + 1 and saved["metric"] == "accuracy"
    task = get_task("recall")
    assert task.metric(saved["valid"]["pred"], saved["valid"]["target"]) == result["best_valid_accuracy"]
    assert task.metric(saved["test"]["pred"], saved["test"]["target"]) == result["test_accuracy"]
    assert saved["valid"]["pred"].shape[0] == TINY["eval_size"] == saved["test"]["target"].shape[0]


def test_a_last_batch_of_one_example_is_dropped(tmp_path):
    """65 examples in batches of 32: two batches (64 examples), not a third of one; 66: three."""
    result = train(_cfg(tmp_path / "a", options={**TINY, "train_size": 65}))
    assert result["history"][0]["samples"] == 64
    assert torch.load(tmp_path / "a" / "run" / "last.pt", weights_only=False)["state"]["step"] == 2
    assert train(_cfg(tmp_path / "b", options={**TINY, "train_size": 66}))["history"][0]["samples"] == 66


def test_result_records_the_source_commit(tmp_path, monkeypatch):
    import graphattn
    from graphattn.train import engine

    root = Path(graphattn.__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    commit = engine.source_commit()
    if head.returncode == 0:  # a checkout: its HEAD, marked dirty or not
        assert commit is not None and commit.removesuffix("-dirty") == head.stdout.strip()
    else:  # an installed package
        assert commit is None
    monkeypatch.setattr(engine, "__file__", str(tmp_path / "graphattn" / "train" / "engine.py"))
    assert engine.source_commit() is None  # not a git checkout
    site = tmp_path / "repo" / ".venv" / "site-packages"
    (site / "graphattn" / "train").mkdir(parents=True)
    repo = ["git", "-C", str(tmp_path / "repo"), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    subprocess.run([*repo, "commit", "-q", "--allow-empty", "-m", "x"], check=True)  # it has a HEAD
    monkeypatch.setattr(engine, "__file__", str(site / "graphattn" / "train" / "engine.py"))
    assert engine.source_commit() is None  # installed inside another project's checkout: not its commit
    result = train(_cfg(tmp_path))
    assert result["environment"]["graphattn"] == graphattn.__version__
    assert result["environment"]["source_commit"] is None


def test_source_commit_is_dirty_for_source_edits_only(tmp_path, monkeypatch):
    from graphattn.train import engine

    src = tmp_path / "src"
    (src / "graphattn" / "train").mkdir(parents=True)
    (src / "docs").mkdir()
    for path in (src / "graphattn" / "train" / "engine.py", src / "docs" / "results.md"):
        path.write_text("v1\n")
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    monkeypatch.setattr(engine, "__file__", str(src / "graphattn" / "train" / "engine.py"))
    assert engine.source_commit() == head
    (src / "docs" / "results.md").write_text("v2\n")  # a run's records: not the source
    (src / "graphattn" / "new.py").write_text("")  # untracked
    assert engine.source_commit() == head
    (src / "graphattn" / "train" / "engine.py").write_text("v2\n")
    assert engine.source_commit() == head + "-dirty"


def test_seeds_do_not_share_batch_orders(tmp_path, monkeypatch):
    """Each epoch's shuffle comes from a hash of --seed plus the epoch: seed 1's first epoch is not
    seed 0's second (as seed + epoch made it), and a seed repeats its own orders exactly."""
    from graphattn.train import engine

    datasets, forward = RecallTask.datasets, RecallTask.forward

    def same_data(self, cfg):  # recall draws its examples from --seed: here every seed gets seed 0's
        fixed = replace(cfg, seed=0)
        splits = datasets(self, fixed)
        cfg._options_used.update(fixed._options_used)
        return splits

    def epochs_of(seed):
        batches = []

        def record(self, model, batch):
            if model.training:  # the training batches, not the evaluation ones
                batches.append(batch["tokens"].clone())  # the batch's examples' tokens, concatenated
            return forward(self, model, batch)

        monkeypatch.setattr(RecallTask, "forward", record)
        train(_cfg(tmp_path / str(seed), seed=seed, epochs=2, options={**TINY, "train_size": 64}))
        assert len(batches) == 4
        return torch.cat(batches[:2]), torch.cat(batches[2:])  # two batches of 32 per epoch

    monkeypatch.setattr(RecallTask, "datasets", same_data)
    seed0, seed1, again = epochs_of(0), epochs_of(1), epochs_of(0)
    assert torch.equal(again[0], seed0[0]) and torch.equal(again[1], seed0[1])  # reproducible
    assert not torch.equal(seed0[0], seed0[1])  # each epoch its own order of the same examples
    assert sorted(seed0[0].tolist()) == sorted(seed1[0].tolist())  # the same examples' tokens
    assert not torch.equal(seed1[0], seed0[1]) and not torch.equal(seed1[1], seed0[0])
    assert engine._shuffle_seed(1) != engine._shuffle_seed(0) + 1


def test_a_fresh_run_removes_an_earlier_runs_predictions(tmp_path, monkeypatch):
    from graphattn.train import engine

    train(_cfg(tmp_path))
    assert (tmp_path / "run" / "best_predictions.pt").is_file()
    monkeypatch.setattr(engine, "_save_predictions", lambda *args: None)  # a run that never saves its own
    train(_cfg(tmp_path, seed=1))
    assert not (tmp_path / "run" / "best_predictions.pt").exists()


def test_a_checkpoint_from_before_the_seed_hash_resumes_as_it_began(tmp_path):
    """Checkpoints made before the shuffle hash and the dropped one-example batch have neither in
    their state: a resume keeps seed + epoch and the batch of one (65 = 2 x 32 + 1)."""
    cfg = _cfg(tmp_path, epochs=1, options={**TINY, "train_size": 65})
    first = train(cfg)
    assert first["history"][0]["samples"] == 64 and first["shuffle_seed"] != cfg.seed
    ckpt_path = tmp_path / "run" / "last.pt"
    ckpt = torch.load(ckpt_path, weights_only=False)
    del ckpt["state"]["shuffle_seed"], ckpt["state"]["drop_single_batch"]
    torch.save(ckpt, ckpt_path)
    resumed = train(replace(cfg, epochs=2, resume=True))
    assert resumed["shuffle_seed"] == cfg.seed and resumed["history"][1]["samples"] == 65


def test_resume_continues_from_the_checkpoint(tmp_path):
    train(_cfg(tmp_path, epochs=1))
    first = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    result = train(_cfg(tmp_path, epochs=2, resume=True))
    assert result["epochs_done"] == 2
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert result["history"][0] == first["state"]["history"][0]  # epoch 1 kept, not retrained
    # The same as a run that was never stopped: same shuffles, same dropout draws, same losses.
    straight = train(_cfg(tmp_path / "straight", epochs=2))
    assert [h["train_loss"] for h in result["history"]] == [h["train_loss"] for h in straight["history"]]


def test_resume_without_checkpoint_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--resume: no checkpoint at .*last.pt; run without --resume first"):
        train(_cfg(tmp_path, resume=True))


def test_ctrl_c_keeps_the_last_complete_epoch(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = RecallTask.task_loss

    def interrupt_in_epoch_two(self, pred, batch):
        calls["n"] += 1
        if calls["n"] > 8:  # 256 / 32 = 8 batches per epoch
            raise KeyboardInterrupt
        return original(self, pred, batch)

    monkeypatch.setattr(RecallTask, "task_loss", interrupt_in_epoch_two)
    result = train(_cfg(tmp_path, epochs=3))
    assert result["interrupted"] and result["epochs_done"] == 1
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["state"]["epoch"] == 1
    # The command's exit status says so too (130, a shell's code for Ctrl-C; it was 0).
    calls["n"] = 0
    args = ["train", "--task", "recall", "--attention", "full", "--dim", "16", "--heads", "2", "--layers", "1"]
    options = [x for key, value in TINY.items() for x in ("--option", f"{key}={value}")]
    assert main([*args, *options, "--epochs", "3", "--no-progress", "--out", str(tmp_path / "cli")]) == 130


def test_same_seed_same_result(tmp_path):
    a = train(_cfg(tmp_path / "a", seed=3))
    b = train(_cfg(tmp_path / "b", seed=3))
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]


def test_config_precedence_defaults_file_flags(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(
        json.dumps(
            {
                "task": "recall",
                "attention": "window",
                "dim": 16,
                "heads": 2,
                "layers": 1,
                "epochs": 1,
                "options": dict(TINY, window=4),
            }
        )
    )
    out = tmp_path / "cli"
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--attention",
                "bigbird",
                "--no-progress",
                "--out",
                str(out),
                "--option",
                "eval_size=32",
            ]
        )
        == 0
    )
    saved = json.loads((out / "result.json").read_text())["config"]
    assert saved["attention"] == "bigbird"  # flag beats file
    assert saved["dim"] == 16  # file beats default
    assert saved["options"]["window"] == 4 and saved["options"]["eval_size"] == 32
    assert "recall / bigbird: best valid accuracy" in capsys.readouterr().out


def test_unknown_task_and_config_key_are_clear_errors():
    with pytest.raises(ValueError, match=r"task must be one of \[.*'recall'.*\], got 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match=r"unknown config keys \['colour'\]"):
        TrainConfig.from_dict({"colour": 1})


def test_two_process_ddp_matches_one_process(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    common = [
        "train",
        "--task",
        "recall",
        "--attention",
        "full",
        "--dim",
        "32",
        "--heads",
        "2",
        "--layers",
        "1",
        "--epochs",
        "4",
        "--lr",
        "3e-3",
        "--no-progress",
        "--option",
        "length=12",
        "--option",
        "pairs=1",
        "--option",
        "train_size=1024",
        "--option",
        "eval_size=256",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # One process with batch 32 == two processes with batch 16 each (same global batch).
    one = subprocess.run(
        [sys.executable, "-m", "graphattn", *common, "--batch-size", "32", "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            torchrun,
            "--nproc_per_node=2",
            "-m",
            "graphattn",
            *common,
            "--batch-size",
            "16",
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    r1 = json.loads((tmp_path / "one" / "result.json").read_text())
    r2 = json.loads((tmp_path / "two" / "result.json").read_text())
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    assert sum(h["samples"] for h in r2["history"]) == sum(h["samples"] for h in r1["history"])
    # Both learn the task (chance is 1/16) and agree within noise.
    assert r1["test_accuracy"] > 0.5 and r2["test_accuracy"] > 0.5
    assert abs(r1["test_accuracy"] - r2["test_accuracy"]) < 0.15


def test_optimizer_choice(tmp_path):
    result = train(_cfg(tmp_path, optimizer="adam", weight_decay=5e-4))
    assert result["config"]["optimizer"] == "adam"
    with pytest.raises(ValueError, match=r"optimizer must be one of \['adam', 'adamw'\], got 'sgd'"):
        train(_cfg(tmp_path, optimizer="sgd"))


def test_cosine_schedule_warms_up_decays_to_zero_and_resumes_exactly(tmp_path, monkeypatch):
    from graphattn.train import engine

    seen = []
    original_step = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    straight = train(_cfg(tmp_path / "a", epochs=3, lr=0.01, lr_schedule="cosine"))
    steps = 256 // 32  # batches per epoch
    assert len(seen) == 3 * steps
    assert seen[:steps] == pytest.approx([0.01 * (s + 1) / steps for s in range(steps)])  # linear warm-up
    assert seen[steps] == pytest.approx(0.01)  # the cosine's top, then strictly down to ~0
    assert all(a > b for a, b in zip(seen[steps:], seen[steps + 1 :], strict=False))
    assert seen[-1] == pytest.approx(0.01 * engine._cosine(3 * steps - 1, steps, 3 * steps)) and seen[-1] < 1e-3
    # Stopped after epoch 1 and resumed: the same rates at every step.
    seen.clear()
    train(_cfg(tmp_path / "b", epochs=1, lr=0.01, lr_schedule="cosine"))
    first = list(seen)
    seen.clear()
    resumed = train(_cfg(tmp_path / "b", epochs=3, lr=0.01, lr_schedule="cosine", resume=True))
    assert first + seen == pytest.approx([0.01 * engine._cosine(s, steps, 3 * steps) for s in range(3 * steps)])
    assert resumed["config"]["lr_schedule"] == straight["config"]["lr_schedule"] == "cosine"
    # A checkpoint written before the step count existed resumes at epoch x steps per epoch.
    train(_cfg(tmp_path / "d", epochs=1, lr=0.01, lr_schedule="cosine"))
    ckpt = torch.load(tmp_path / "d" / "run" / "last.pt", weights_only=False)
    del ckpt["state"]["step"]
    torch.save(ckpt, tmp_path / "d" / "run" / "last.pt")
    seen.clear()
    train(_cfg(tmp_path / "d", epochs=2, lr=0.01, lr_schedule="cosine", resume=True))
    assert seen == pytest.approx([0.01 * engine._cosine(s, steps, 2 * steps) for s in range(steps, 2 * steps)])
    with pytest.raises(ValueError, match=r"lr_schedule must be one of \['constant', 'cosine'\], got 'step'"):
        train(_cfg(tmp_path / "c", lr_schedule="step"))


def test_train_tells_the_training_set_its_epoch(tmp_path, monkeypatch):
    from graphattn.datasets.recall import AssociativeRecall

    seen = []
    original = AssociativeRecall.set_epoch

    def record(self, epoch):
        seen.append((epoch, self.resample))
        original(self, epoch)

    monkeypatch.setattr(AssociativeRecall, "set_epoch", record)
    train(_cfg(tmp_path, epochs=2, options={**TINY, "resample": 1}))
    assert seen == [(0, True), (1, True)]  # the training set only, once per epoch


def test_sbm_degree_option_sets_the_initial_density(tmp_path):
    from graphattn.structure.sbm import SBM
    from graphattn.train.tasks import make_structure

    for options, degree in (({}, 16), ({"sbm_degree": 64}, 64)):
        sbm = make_structure("sbm", _cfg(tmp_path, heads=4, dim=64, options=options), max_len=256)
        assert isinstance(sbm, SBM)
        # Memberships start at sigmoid(offset) everywhere, so p = y^2 = degree / L (sum S = 1).
        y = torch.sigmoid(sbm.offset)
        torch.testing.assert_close(y**2, torch.full_like(y, degree / 256))


def test_recall_pair_tokens_train_a_model_that_beats_chance(tmp_path):
    # One token per pair read as key + value one-hots: a 1-layer model learns it within 256 steps
    # at length 16 (chance is 1/16; measured 97% valid after one epoch, 99% test after two).
    options = {"length": 16, "pairs": 2, "pair_tokens": 1, "train_size": 2048, "eval_size": 256}
    result = train(_cfg(tmp_path, options=options, epochs=2, lr=3e-3, batch_size=16, dim=32))
    assert result["test_accuracy"] > 0.9


def test_sac_reinforce_reward_is_each_examples_negative_loss(tmp_path, monkeypatch):
    from graphattn.structure.sac import SAC

    task = get_task("recall")
    logits, y = torch.randn(5, 16), torch.tensor([3, 0, 15, 7, 7])
    torch.testing.assert_close(task.example_losses(logits, {"y": y}).mean(), task.task_loss(logits, {"y": y}))

    rewards, policy_loss = [], SAC.policy_loss

    def record(self, reward):
        rewards.append((tuple(reward.shape), reward.unique().numel() > 1, bool((reward <= 0).all())))
        return policy_loss(self, reward)  # which checks the reward has one value per example of the forward

    monkeypatch.setattr(SAC, "policy_loss", record)
    train(_cfg(tmp_path, attention="sac", options={**TINY, "train_size": 80}))
    # 80 examples in batches of 32: one reward per example of each batch (each its own negative
    # cross-entropy: distinct values, none positive).
    assert rewards == [((32,), True, True), ((32,), True, True), ((16,), True, True)]


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_retain_freed_memory_reuses_large_buffers_without_page_faults():
    # In a fresh process: five 64 MiB tensors allocated and freed in turn fault in every page
    # (glibc maps and unmaps each one); after retain_freed_memory() they reuse one heap block.
    code = """
import resource, torch
from graphattn.train.engine import retain_freed_memory
def churn():
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(64 << 20, dtype=torch.uint8)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
churn()
before = churn()
applied = retain_freed_memory()
churn()
print(before, churn(), applied)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, applied = int(out[0]), int(out[1]), out[2]
    assert applied == "True"
    assert before >= 5 * (64 << 20) // 4096 // 2, before  # about one fault per 4 KiB page
    assert after < before // 20, (before, after)


def test_retain_freed_memory_rejects_a_non_positive_limit():
    with pytest.raises(ValueError, match="limit_bytes must be positive"):
        retain_freed_memory(0)


def test_cli_malloc_switch_is_recorded_and_checked(tmp_path):
    args = [sys.executable, "-m", "graphattn", "train", "--task", "recall", "--attention", "window"]
    args += ["--dim", "16", "--heads", "2", "--layers", "1", "--epochs", "1", "--no-progress"]
    for key, value in TINY.items():
        args += ["--option", f"{key}={value}"]
    env = dict(os.environ, GRAPHATTN_MALLOC="retain")
    subprocess.run([*args, "--out", str(tmp_path / "retain")], env=env, check=True, capture_output=True)
    record = json.loads((tmp_path / "retain" / "result.json").read_text())
    expected = 1 << 30 if platform.libc_ver()[0] == "glibc" else None
    assert record["environment"]["malloc_retain_bytes"] == expected
    env["GRAPHATTN_MALLOC"] = "jemalloc"
    bad = subprocess.run([*args, "--out", str(tmp_path / "bad")], env=env, capture_output=True, text=True)
    assert bad.returncode != 0
    assert "GRAPHATTN_MALLOC must be 'system' or 'retain', got 'jemalloc'" in bad.stderr


def test_a_misspelled_option_is_an_error_not_a_default(tmp_path):
    """`--option lenght=64` trained with the default length and exited 0 (API audit)."""
    with pytest.raises(
        ValueError, match=r"unknown --option \['lenght'\] for --task recall --attention full; this run reads"
    ):
        train(_cfg(tmp_path, options=dict(TINY, lenght=64)))


def test_windowed_lists_the_structures_that_read_the_window_option():
    for name in attention_names():
        cfg = _cfg(Path("unused"), attention=name)
        try:
            make_structure(name, cfg, max_len=64)
        except ValueError:  # `graph` and `grid`: not sequence structures
            assert name in ("graph", "grid")
            continue
        assert ("window" in cfg._options_used) == (name in WINDOWED), name


def test_train_help_states_each_default_once(capsys):
    # Flags default to None (so --config can set them); ArgumentDefaultsHelpFormatter appended
    # "(default: None)" after every real default.
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "default: None" not in text and "default 64" in text and "default recall" in text


def test_dim_that_heads_do_not_divide_is_a_flag_error(tmp_path):
    """It was the model's `embed_dim must be divisible by num_heads`, after the data had loaded."""
    with pytest.raises(ValueError, match=r"--dim \(16\) must be divisible by --heads \(3\)"):
        train(_cfg(tmp_path, dim=16, heads=3))
    with pytest.raises(ValueError, match=r"--option window must be >= 1, got 0"):  # was the builder's "w must be"
        train(_cfg(tmp_path, attention="window", options=dict(TINY, window=0)))
    assert make_structure("routing", _cfg(tmp_path, options={"window": 0}), max_len=16).window == 0


@pytest.mark.parametrize("attention", ["full", "sbm", "sea"])
def test_window_option_is_unknown_to_structures_without_a_window(tmp_path, attention):
    """`--attention full --option window=8` trained full attention and exited 0: every structure read `window`."""
    with pytest.raises(ValueError, match=r"unknown --option \['window'\] for --task recall --attention " + attention):
        train(_cfg(tmp_path, attention=attention, options=dict(TINY, window=8)))


@pytest.mark.parametrize(
    ("setting", "error", "match"),
    [
        ({"resume": "no"}, TypeError, r"--resume \(config key 'resume'\) must be a bool, got 'no'"),
        ({"dim": "16"}, TypeError, r"--dim \(config key 'dim'\) must be an int, got '16'"),
        ({"epochs": 1.5}, TypeError, r"--epochs .* must be an int, got 1.5"),
        ({"lr": "abc"}, TypeError, r"--lr .* must be a float, got 'abc'"),
        ({"heads": True}, TypeError, r"--heads .* must be an int, got True"),
        ({"epochs": 0}, ValueError, r"--epochs must be >= 1, got 0"),
        ({"batch_size": -4}, ValueError, r"--batch-size must be >= 1, got -4"),
        ({"lr": float("inf")}, ValueError, r"--lr must be a finite number > 0, got inf"),
        ({"lr": 0}, ValueError, r"--lr must be a finite number > 0, got 0"),
        ({"max_grad_norm": float("nan")}, ValueError, r"--max-grad-norm must be a finite number >= 0, got nan"),
        ({"weight_decay": -1}, ValueError, r"--weight-decay must be a finite number >= 0, got -1"),
        ({"dropout": 1.0}, ValueError, r"--dropout must be in \[0, 1\), got 1.0"),
        ({"options": [1, 2]}, TypeError, r"options must map option names to values"),
    ],
)
def test_settings_are_checked_when_the_config_is_made(setting, error, match):
    """Before, these ran into torch's own errors after loading the data, or were accepted: a
    string 'no' as resume=True, lr=inf training to NaN, max_grad_norm=nan switching clipping off."""
    with pytest.raises(error, match=match):
        TrainConfig.from_dict(setting)


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("bad.json", '{"dim": ', r"not valid JSON"),
        ("bad.toml", "dim = = 3", r"not valid TOML"),
        ("list.json", "[1, 2]", r"must hold a table of settings, got list"),
        ("opts.json", '{"options": [1, 2]}', r"options must be a table"),
    ],
)
def test_a_malformed_config_file_names_the_file(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(SystemExit, match=rf"--config {path}: .*{match}"):
        main(["train", "--config", str(path), "--out", str(tmp_path / "run")])


def test_resume_with_other_settings_is_an_error(tmp_path):
    """Resuming with another length, seed or attention mixed two runs in one record (the old best
    validation score reported for the new settings); a new width failed in load_state_dict."""
    train(_cfg(tmp_path, epochs=1))
    with pytest.raises(ValueError, match=r"--resume: .*last.pt was trained with other settings \(seed: 0 -> 7\)"):
        train(_cfg(tmp_path, epochs=2, resume=True, seed=7))
    with pytest.raises(ValueError, match=r"dim: 16 -> 32"):
        train(_cfg(tmp_path, epochs=2, resume=True, dim=32))
    assert train(_cfg(tmp_path, epochs=2, resume=True))["epochs_done"] == 2  # more epochs may be asked for
    # Fewer epochs than are done trained nothing and recorded epochs: 1 beside epochs_done: 2 (audit).
    with pytest.raises(ValueError, match=r"has 2 epochs done; --epochs 1 would train none"):
        train(_cfg(tmp_path, epochs=1, resume=True))


def test_resume_may_not_splice_two_cosine_schedules(tmp_path):
    """A 2-epoch cosine run resumed with --epochs 4 jumped from the end of one schedule back up
    to the middle of another (audit); a run stopped in its warm-up epoch may still change it."""
    train(_cfg(tmp_path, epochs=2, lr_schedule="cosine"))
    with pytest.raises(ValueError, match=r"the cosine schedule spans the run's --epochs \(2\) and 2 epochs"):
        train(_cfg(tmp_path, epochs=4, lr_schedule="cosine", resume=True))


def test_ctrl_c_in_the_first_epoch_does_not_point_at_a_checkpoint(tmp_path, monkeypatch, capsys):
    """It said 'last complete epoch 0 is saved in last.pt; use --resume' with no last.pt (audit)."""

    def interrupt(self, pred, batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(RecallTask, "task_loss", interrupt)
    result = train(_cfg(tmp_path, epochs=2))
    assert result["interrupted"] and result["epochs_done"] == 0
    out = capsys.readouterr().out
    assert "no checkpoint of this run to resume" in out and "use --resume" not in out
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"length": None}, r"--option length must be an int, got null"),
        ({"resample": None}, r"--option resample must be 0 or 1, got null"),  # was silently off
    ],
)
def test_null_options_are_errors_not_skipped_checks(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        train(_cfg(tmp_path, options=dict(TINY, **options)))


def test_seed_range_and_max_grad_norm_flag(tmp_path):
    for seed in (-1, 2**32):  # numpy's range: it failed inside np.random.seed (audit)
        with pytest.raises(ValueError, match=r"--seed must be in \[0, 2\*\*32 - 1\]"):
            _cfg(tmp_path, seed=seed)
    # The clipping setting had no flag although its error named --max-grad-norm.
    args = ["train", "--task", "recall", "--attention", "full", "--dim", "16", "--heads", "2", "--layers", "1"]
    options = [x for key, value in TINY.items() for x in ("--option", f"{key}={value}")]
    out = tmp_path / "cli"
    assert main([*args, *options, "--epochs", "1", "--max-grad-norm", "0", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "result.json").read_text())["config"]["max_grad_norm"] == 0.0


def test_device_must_be_cpu_or_cuda(tmp_path):
    with pytest.raises(ValueError, match=r"--device must be cpu or cuda \(cuda:N\), got 'meta'"):
        train(_cfg(tmp_path, device="meta"))


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"length": "abc"}, r"--option length must be an int, got 'abc'"),
        ({"length": 64.7}, r"--option length must be an int, got 64.7"),  # was truncated to 64
        ({"pair_tokens": "yes"}, r"--option pair_tokens must be 0 or 1, got 'yes'"),
        ({"train_size": 0}, r"--option train_size must be >= 1, got 0"),  # torch's RandomSampler error before
        ({"eval_size": 0}, r"--option eval_size must be >= 1, got 0"),  # torch.cat of nothing before
        ({"window": [1, 2]}, r"--option window must be an int, got \[1, 2\]"),
    ],
)
def test_option_values_are_checked_and_named(tmp_path, option, match):
    with pytest.raises(ValueError, match=match):
        train(_cfg(tmp_path, attention="window", options=dict(TINY, **option)))


@pytest.mark.parametrize(
    ("patch", "match"), [(0, r"patch must be >= 1, got 0"), (9, r"patch must be at most the image side 8, got 9")]
)
def test_digits_patch_is_checked(tmp_path, patch, match):
    """patch=0 divided by zero; a patch wider than the 8 x 8 image failed in the convolution."""
    with pytest.raises(ValueError, match=match):
        train(_cfg(tmp_path, task="digits", attention="grid", options={"patch": patch}))


def test_device_and_out_are_checked_before_the_data_loads(tmp_path):
    """A missing CUDA device failed after loading the data with torch's 'not compiled with CUDA'
    assertion; an --out that is a file failed only when the first epoch's checkpoint was saved."""
    with pytest.raises(ValueError, match=r"--device must be a torch device such as cpu or cuda, got 'tpu0'"):
        train(_cfg(tmp_path, device="tpu0"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"--device cuda: torch .* sees no CUDA device"):
            train(_cfg(tmp_path, device="cuda"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--out must be a folder .*, got the file"):
        train(replace(_cfg(tmp_path), out=str(tmp_path / "file")))


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path):
    """Staged training: stage 2 (a longer length) starts from stage 1's weights, with a fresh
    optimizer; result.json records stage 1 under init, and a resume of stage 2 keeps it."""
    first = train(_cfg(tmp_path / "a", epochs=2))
    ckpt = tmp_path / "a" / "run" / "last.pt"
    weights = torch.load(ckpt, weights_only=False)["model"]
    options = {**TINY, "length": 32}
    # lr 1e-12: after one epoch the weights are still stage 1's (a model from scratch would differ by O(1))
    second = train(_cfg(tmp_path / "b", epochs=1, lr=1e-12, options=options, init_from=str(ckpt)))
    after = torch.load(tmp_path / "b" / "run" / "last.pt", weights_only=False)
    for name, value in weights.items():
        torch.testing.assert_close(after["model"][name], value, rtol=0, atol=1e-6)
    assert after["state"]["step"] == TINY["train_size"] // 32  # its own steps: a fresh schedule
    init = second["init"]
    assert init["path"] == str(ckpt) and init["epochs_done"] == 2
    assert init["config"]["options"] == TINY and init["best_valid"] == first["best_valid_accuracy"]
    assert init["train_seconds"] == first["train_seconds"] and init["init"] is None
    assert init["last_epoch"] == first["history"][-1]
    import graphattn.train.engine as engine

    def reloaded(*args, **kwargs):
        raise AssertionError("a resumed run must continue from its own checkpoint, not reload init_from")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "_init_weights", reloaded)
        resumed = train(_cfg(tmp_path / "b", epochs=2, lr=1e-12, options=options, init_from=str(ckpt), resume=True))
    assert resumed["init"] == init and resumed["epochs_done"] == 2
    assert train(_cfg(tmp_path / "c"))["init"] is None


def test_init_from_bad_checkpoints_name_the_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--init-from: no checkpoint at .*nothing.pt"):
        train(_cfg(tmp_path, init_from=str(tmp_path / "nothing.pt")))
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=r"--init-from: .*tensor.pt is not a graphattn train checkpoint"):
        train(_cfg(tmp_path, init_from=str(tmp_path / "tensor.pt")))
    train(_cfg(tmp_path / "wide", dim=32))
    with pytest.raises(ValueError, match=r"--init-from: .* holds another model .*other shapes \[.*\[32"):
        train(_cfg(tmp_path, init_from=str(tmp_path / "wide" / "run" / "last.pt")))
    with pytest.raises(TypeError, match=r"--init-from \(config key .init_from.\) must be a str, got 3"):
        _cfg(tmp_path, init_from=3)


def test_cli_init_from_flag(tmp_path):
    train(_cfg(tmp_path / "a"))
    ckpt = str(tmp_path / "a" / "run" / "last.pt")
    tiny = [f"--option={k}={v}" for k, v in TINY.items()]
    args = ["train", "--attention", "full", "--dim", "16", "--heads", "2", "--layers", "1", "--epochs", "1"]
    assert main([*args, *tiny, "--no-progress", "--init-from", ckpt, "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "result.json").read_text())["init"]["path"] == ckpt


def test_a_failed_record_write_leaves_the_previous_record_whole(tmp_path, monkeypatch):
    # result.json is replaced like last.pt: a write that dies half way (a full disk, a kill) must not leave a
    # truncated record where a whole one was, nor a temporary file.
    cfg = _cfg(tmp_path)
    train(cfg)
    record = tmp_path / "run" / "result.json"
    before = record.read_text()
    write_text = Path.write_text

    def write_half(self, text, *args, **kwargs):
        if not self.name.startswith("result."):
            return write_text(self, text, *args, **kwargs)
        write_text(self, text[:10])
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", write_half)
    with pytest.raises(OSError, match="No space left"):
        train(replace(cfg, seed=1))
    assert record.read_text() == before
    assert sorted(p.name for p in record.parent.glob("*.tmp")) == []
