"""Shared test models and helpers (imported by the tests; fixtures in conftest.py)."""

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


def small_cnn() -> nn.Module:
    """A float32 CNN with every default-companded layer type and a BatchNorm (left alone)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(16, 8, 2, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 12 * 12, 32), nn.ReLU(), nn.Linear(32, 10),
    )  # fmt: skip


def pretrained_like(model: nn.Module, seed: int = 1) -> nn.Module:
    """Give a model heavy-tailed weights, as training leaves them (Student-t, 3 dof)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            t = (
                torch.distributions.StudentT(3.0).sample(p.shape)
                if p.dim() > 1
                else torch.randn(p.shape, generator=g)
            )
            p.copy_(t * (p.std() if p.numel() > 1 else 1.0))
    return model


def snapshot(model: nn.Module) -> tuple:
    """Everything a failed call must leave as it was: classes, tensors and their identities."""
    return (
        [type(m) for m in model.modules()],
        {k: v.clone() for k, v in model.state_dict().items()},
        [id(p) for p in model.parameters()],
    )


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0] and a[2] == b[2]
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert torch.equal(a[1][k], b[1][k]), k


@contextmanager
def held_by_another_process(folder: Path, until: Path | None = None, *, name: str = ".lock",
                            shared: bool = False):
    """Lock `folder/name` from a separate, tiny Python process, as another run would (a
    run folder's .lock) or another `compare` (a comparison's .compare.lock, `shared`).

    The holder keeps the lock until it is killed, or, with `until`, until that file exists.
    Yields the holder's Popen.
    """
    folder.mkdir(parents=True, exist_ok=True)
    mode = "LOCK_SH" if shared else "LOCK_EX"
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            f"fcntl.flock(fd, fcntl.{mode}); "
            "os.write(fd, f'process {os.getpid()} (test holder)'.encode()); "
            "print('locked', flush=True)\n"
            "while not (len(sys.argv) > 2 and os.path.exists(sys.argv[2])): time.sleep(0.05)")
    argv = [sys.executable, "-c", code, str(folder / name), *([str(until)] if until else [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def children(pid: int) -> set[int]:
    """The child processes of `pid` (Linux: from /proc)."""
    kids = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids |= {int(k) for k in (task / "children").read_text().split()}
    return kids


def alive(pid: int) -> bool:
    """True while process `pid` runs (a zombie counts as gone; Linux: from /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
class LayoutNet(nn.Module):
    """A small model with every kind of companded tensor a checkpoint layout must carry: a conv,
    a per-channel Linear, an embedding tied to the output layer, and WC stacked on weight_norm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 6, 3)
        self.fc = nn.Linear(6, 8)
        self.norm = nn.Linear(8, 8)
        self.embed = nn.Embedding(10, 8)
        self.head = nn.Linear(8, 10)
        self.head.weight = self.embed.weight
        torch.nn.utils.parametrizations.weight_norm(self.norm)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        h = self.fc(self.conv(x).mean(-1)) + self.embed(tokens)
        return self.head(torch.tanh(self.norm(h)))

    @staticmethod
    def inputs() -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(3)
        return torch.randn(5, 4, 7, generator=g), torch.randint(0, 10, (5,), generator=g)


def companded_layout_net(seed: int = 0) -> LayoutNet:
    """LayoutNet companded as the v1 fixture was: learnable tanh, the fc per channel, trained a few
    steps so raw values, scales and hyperparameters are all away from their initial values."""
    import warnings

    import weight_compander as wc

    torch.manual_seed(seed)
    model = LayoutNet()
    with warnings.catch_warnings():  # the embedding's N(0, 1) init reaches the limit: raised
        warnings.simplefilter("ignore", wc.CompanderWarning)
        wc.apply(model, exclude=["fc"], learnable=True)
    wc.apply(model, include=["fc"], learnable=True, per_channel=True, kind="mulaw")
    opt = torch.optim.SGD(wc.param_groups(model, weight_decay=1e-3), lr=0.3)
    x, tokens = LayoutNet.inputs()
    for _ in range(3):
        opt.zero_grad()
        model(x, tokens).square().mean().backward()
        opt.step()
    return model


def native_state_dict(model: nn.Module) -> dict:
    """The state dict in checkpoint layout 1, as weight-compander wrote it before layout 2:
    torch's own parametrize keys (what ``state_dict`` gives without the library's hooks)."""
    from weight_compander import state

    hooked = [m for m in model.modules() if getattr(m, state._HOOKS, None)]
    for m in hooked:
        state.detach(m)
    try:
        return model.state_dict()
    finally:
        for m in hooked:
            state.attach(m)
