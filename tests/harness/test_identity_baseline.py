"""The identity compander goes through the whole WC code path and must change nothing."""

import json

from weight_compander.harness.config.settings import TrainConfig
from weight_compander.harness.run import train


def metrics(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "wc")} for r in rows]


def test_identity_compander_trains_exactly_like_the_plain_model(tmp_path):
    common = dict(
        dataset="digits",
        model="mlp",
        epochs=2,
        val_size=200,
        train_subset=400,
        dropout=0.1,
        augment=True,
        label_smoothing=0.1,
        weight_decay=5e-4,
        seed=3,
        threads=1,
    )
    plain = train.run(TrainConfig(**common), tmp_path / "plain", progress="quiet")
    ident = train.run(
        TrainConfig(**common, reparam="wc", wc_kind="identity"), tmp_path / "ident", progress="quiet"
    )
    assert metrics(tmp_path / "plain") == metrics(tmp_path / "ident")
    assert plain["test_acc"] == ident["test_acc"] and plain["test_loss"] == ident["test_loss"]
