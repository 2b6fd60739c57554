"""Extra training cost of learning the hyperparameters on validation batches (wc.hyper_step).

    python benchmarks/bilevel_overhead.py                 # a minute or two on 2 cores
    python benchmarks/bilevel_overhead.py --json out.json # also write the numbers

The study's small CNN (harness `cnn`, 28x28, batch 128) with learnable WC, trained by SGD.
Variants: hyperparameters learned on the training loss (one backward per step), and learned on
validation batches with one `hyper_step` (a forward and a backward in eval mode) every 1, 4 or
16 training steps. Blocks run interleaved, so machine noise hits every variant alike; each ratio
is the median block time over the training-loss variant's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

import overhead
import weight_compander as wc
from overhead import BATCH, interleaved, machine, parse_args, write_json
from weight_compander.harness.ingredients.models import build_model


def timer(hyper_every: int | None, steps: int) -> Callable[[], float]:
    """A block of `steps` training steps; with `hyper_every`, a validation hyper step every N."""
    torch.manual_seed(0)
    model = build_model("cnn", in_channels=1, input_size=28, num_classes=10, dropout=0.2)
    wc.apply(model, learnable=True)
    bilevel = hyper_every is not None
    groups = wc.param_groups(model, weight_decay=5e-4, with_hyperparameters=not bilevel)
    opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
    hyper_opt = torch.optim.Adam(wc.hyperparameters(model), lr=1e-2) if bilevel else None
    x, xv = torch.randn(BATCH, 1, 28, 28), torch.randn(BATCH, 1, 28, 28)
    y, yv = torch.randint(0, 10, (BATCH,)), torch.randint(0, 10, (BATCH,))

    def block() -> float:
        start = overhead.clock()  # the wall clock, or CPU time with --cpu-time
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            if bilevel and (step + 1) % hyper_every == 0:
                wc.hyper_step(model, lambda: F.cross_entropy(model(xv), yv), hyper_opt)
        return (overhead.clock() - start) / steps

    return block


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, 16, argv)
    variants = {"learned on training loss": None, "validation, every step": 1,
                "validation, every 4th": 4, "validation, every 16th": 16}  # fmt: skip
    medians = interleaved({name: timer(every, args.steps) for name, every in variants.items()}, args.rounds)
    base = medians["learned on training loss"]
    results = {
        "machine": machine(), "batch": BATCH, "rounds": args.rounds, "steps_per_block": args.steps,
        "train_step_ms": {k: 1e3 * v for k, v in medians.items()},
        "ratio": {k: v / base for k, v in medians.items()},
    }  # fmt: skip
    print(f"machine: {results['machine']}")
    print(f"cnn, batch {BATCH}, {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"{'hyperparameters':<26} {'ms/step':>8} {'ratio':>6}")
    for name in variants:
        print(f"{name:<26} {results['train_step_ms'][name]:8.2f} {results['ratio'][name]:6.2f}")
    write_json(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
