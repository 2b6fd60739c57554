"""`weight-compander` under torchrun, recording what each rank holds (for test_distributed).

    torchrun --nproc_per_node=2 ddp_probe.py RECORD_DIR train ...

Runs the command line exactly as ``-m weight_compander`` does, and has every rank save
RECORD_DIR/rank<RANK>.pt: the learnable compander hyperparameters before every training
step (so: after the step before it) and every parameter and buffer after the last step.
"""

from __future__ import annotations

import os
import sys

import torch

import weight_compander as wc
from weight_compander.harness import cli
from weight_compander.harness.run import train

record_dir, argv = sys.argv[1], sys.argv[2:]
models, steps = [], []
build_model = train.build_model  # what a run builds its model with


def build_and_watch(cfg, shape):
    model, names = build_model(cfg, shape)

    def before_step(module, args):
        if module.training:  # evaluation batches are not steps
            steps.append(torch.cat([h.detach().flatten() for h in wc.hyperparameters(module)]))

    model.register_forward_pre_hook(before_step)
    models.append(model)
    return model, names


train.build_model = build_and_watch
code = cli.main(argv)
torch.save({"steps": torch.stack(steps), "final": dict(models[0].state_dict()),
            "final_hyper": torch.cat([h.detach().flatten() for h in wc.hyperparameters(models[0])])},
           os.path.join(record_dir, f"rank{os.environ['RANK']}.pt"))
sys.exit(code)
