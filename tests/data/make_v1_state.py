"""How ``v1-state.pt`` was made: layout 1 (torch's own parametrize keys), written by
weight-compander at commit f05527f, before checkpoints carried effective weights.

Kept to document the fixture; rerunning it with a newer version writes the newer layout.
Run from the repository root: ``python tests/data/make_v1_state.py``.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from support import LayoutNet, companded_layout_net

model = companded_layout_net().eval()
x, tokens = LayoutNet.inputs()
with torch.no_grad():
    output = model(x, tokens)
torch.save({"model": model.state_dict(), "output": output}, Path(__file__).with_name("v1-state.pt"))
