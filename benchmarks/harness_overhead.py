"""Harness overhead: images/s of `weight-compander train`'s loop vs a bare PyTorch loop.

Both do the same training arithmetic: the same model on the same in-memory data, batch
size, optimizer groups (no decay on biases, as the harness) and per-step cosine schedule.
What the harness adds on top is its overhead: batch slicing for rank sharding, per-step
loss/accuracy accumulation, the NaN check, progress, and the per-epoch validation and
checkpoint writing (outside the timed loop, but they run between its epochs and may cool
caches). The harness figure is the ``images_per_second`` that ``train.run`` reports (its
training loop only); the bare loop is timed the same way. The two run in one process in
interleaved blocks (harness, bare, bare, harness, ...) so load from other processes hits
both alike. Target: ratio >= 0.95.

    python benchmarks/harness_overhead.py                                # fashion-mnist cnn
    python benchmarks/harness_overhead.py --dataset digits --model mlp --train-subset 1138 \
        --epochs 10                                                      # worst case: tiny steps
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import weight_compander as wc
from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.ingredients import data, models
from weight_compander.harness.run import train


def bare_loop(cfg: TrainConfig, ds: data.Dataset) -> float:
    """The loop everyone writes first; returns images/s over `cfg.epochs` epochs."""
    torch.manual_seed(cfg.seed)
    model = models.build_model(
        cfg.model, in_channels=ds.in_channels, input_size=tuple(ds.train_x.shape[2:]),
        num_classes=ds.num_classes, dropout=cfg.dropout,
    )
    groups = wc.param_groups(model, cfg.weight_decay)
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    x_train, y_train = ds.train_x, ds.train_y
    n, bs = len(y_train), cfg.batch_size
    steps = n // bs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    elapsed = 0.0
    for _ in range(cfg.epochs):
        t0 = time.perf_counter()  # timed like the harness: the training loop only
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(steps):
            idx = perm[i * bs:(i + 1) * bs]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        elapsed += time.perf_counter() - t0
    return cfg.epochs * steps * bs / elapsed


def harness_loop(cfg: TrainConfig, scratch: str, block: int) -> float:
    final = train.run(cfg, os.path.join(scratch, f"block{block}"), progress="quiet")
    return final["images_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--train-subset", type=int, default=6000, help="images per epoch")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1, help="epochs per block")
    ap.add_argument("--blocks", type=int, default=6, help="interleaved blocks of each loop")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args()

    cfg = TrainConfig(
        dataset=args.dataset, model=args.model, epochs=args.epochs, batch_size=args.batch_size,
        train_subset=args.train_subset, val_size=1000 if args.dataset != "digits" else 100,
        threads=args.threads or None,
    ).resolved()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    ds = data.load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_size=cfg.val_size,
                           train_subset=cfg.train_subset)
    print(f"machine: {platform.platform()} ({platform.machine()}, {os.cpu_count()} CPUs), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"workload: {cfg.dataset}/{cfg.model}, {len(ds.train_y)} images/epoch, "
          f"batch {cfg.batch_size}, {args.blocks} interleaved blocks of {cfg.epochs} epoch(s)")
    bare_loop(cfg, ds)  # warm-up (allocator, kernels) for both loops
    harness, bare = [], []
    with tempfile.TemporaryDirectory() as scratch:
        harness_loop(cfg, scratch, -1)
        for b in range(args.blocks):
            order = (harness, bare) if b % 2 == 0 else (bare, harness)
            for which in order:
                if which is harness:
                    harness.append(harness_loop(cfg, scratch, b))
                else:
                    bare.append(bare_loop(cfg, ds))
            print(f"  block {b}: harness {harness[-1]:8.0f} img/s   bare {bare[-1]:8.0f} img/s")
    h, r = statistics.median(harness), statistics.median(bare)
    print(f"median: harness {h:.0f} img/s, bare {r:.0f} img/s, ratio {h / r:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
