"""Checkpoints: plain tensors only, atomic writes, the previous one kept as a fallback."""

import pickle

import pytest
import torch

from weight_compander.harness.errors import CheckpointError
from weight_compander.harness.store import checkpoint


def _state(epoch):
    return {"epoch": epoch, "model": {"w": torch.full((3,), float(epoch))}, "config": "{}",
            "rng": torch.get_rng_state()}


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_save_load_keeps_previous_and_no_temp_files(tmp_path):
    checkpoint.save(_state(1), tmp_path)
    checkpoint.save(_state(2), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-prev.pt", "checkpoint.pt"]
    latest = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert latest["epoch"] == 2 and torch.equal(latest["model"]["w"], torch.full((3,), 2.0))
    assert checkpoint.load(tmp_path / "checkpoint-prev.pt")["epoch"] == 1
    assert checkpoint.load_latest(tmp_path)["epoch"] == 2


def test_failed_write_leaves_old_checkpoint_and_no_temp_file(tmp_path, monkeypatch):
    checkpoint.save(_state(1), tmp_path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(_state(2), tmp_path)
    assert _leftovers(tmp_path) == []
    assert checkpoint.load_latest(tmp_path)["epoch"] == 1


def test_corrupt_latest_falls_back_to_previous(tmp_path):
    checkpoint.save(_state(1), tmp_path)
    checkpoint.save(_state(2), tmp_path)
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.warns(UserWarning, match="using checkpoint-prev.pt"):
        assert checkpoint.load_latest(tmp_path)["epoch"] == 1


def test_no_checkpoint_is_none_and_unreadable_is_an_error(tmp_path):
    assert checkpoint.load_latest(tmp_path) is None
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable plain-tensor checkpoint"):
        checkpoint.load_latest(tmp_path)


class Payload:  # a class a plain-tensor checkpoint never holds
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 1, "evil": Payload()}, path)
    with pytest.raises(CheckpointError, match="pickled code"):
        checkpoint.load(path)
    path.write_bytes(pickle.dumps({"epoch": 1}))
    with pytest.raises(CheckpointError):
        checkpoint.load(path)
