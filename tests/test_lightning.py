"""Lightning: fit -> checkpoint -> resume continues a companded model as if uninterrupted."""

import pytest
import torch
from torch import nn

import weight_compander as wc
from support import native_state_dict

L = pytest.importorskip(
    "lightning", reason="the integrations extra is not installed: pip install -e '.[integrations]'"
)


class Classifier(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
        wc.apply(self.net, learnable=True, per_channel=True)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(wc.param_groups(self, weight_decay=0.5), lr=0.05)


def fit(root, epochs, ckpt_path=None):
    L.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, 8, generator=g), torch.randint(0, 3, (24,), generator=g)
    every = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, every_n_epochs=1, save_top_k=-1)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, callbacks=[every],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
    )  # fmt: skip
    model = Classifier()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return model


@pytest.mark.filterwarnings(
    "ignore:.*does not have many workers",
    "ignore:.*LeafSpec.*is deprecated",
    "ignore:The dirpath has changed",
)
def test_fit_checkpoint_resume_ends_equal_to_an_uninterrupted_run(tmp_path):
    whole = fit(tmp_path / "whole", epochs=2)
    resumed = fit(tmp_path / "resumed", epochs=2, ckpt_path=tmp_path / "whole" / "epoch=0-step=3.ckpt")
    theirs, ours = native_state_dict(resumed), native_state_dict(whole)
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
    loaded = Classifier.load_from_checkpoint(tmp_path / "whole" / "epoch=1-step=6.ckpt")  # strict
    assert wc.weights(loaded).keys() == wc.weights(whole).keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in whole.state_dict().items())
    plain = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    plain.load_state_dict(wc.plain_state_dict(whole.net))
    x = torch.randn(5, 8)
    assert torch.equal(plain(x), whole.net(x))
