"""scripts/choose_best.py: the study's stage choices are the highest mean validation accuracy."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "choose_best.py"
spec = importlib.util.spec_from_file_location("choose_best", SCRIPT)
choose_best = importlib.util.module_from_spec(spec)
spec.loader.exec_module(choose_best)


def _comparison(folder: Path) -> None:
    folder.mkdir()
    summary = {"variants": {
        "wd1e-4": {"n": 2, "val_acc_mean": 0.9101, "mean": 0.95},  # best test: never looked at
        "wd5e-4": {"n": 2, "val_acc_mean": 0.9116, "mean": 0.90},
        "broken": {"n": 0, "val_acc_mean": None},                 # no finished run
    }}
    overrides = {"wd1e-4": {"weight_decay": 1e-4}, "wd5e-4": {"weight_decay": 5e-4}, "broken": {}}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "compare.json").write_text(json.dumps({"variants": {
        k: {"overrides": v} for k, v in overrides.items()}}))


def test_ranking_by_validation_accuracy_not_test(tmp_path, capsys):
    _comparison(tmp_path / "tune")
    rows = choose_best.ranking(tmp_path / "tune")
    assert [r[0] for r in rows] == ["wd5e-4", "wd1e-4"]
    assert rows[0][3] == {"weight_decay": 5e-4}
    assert choose_best.main([str(tmp_path / "tune")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tune: best = wd5e-4\n") and "91.16 %" in out and "broken" not in out


def test_a_folder_without_a_summary_is_one_line_and_exit_2(tmp_path, capsys):
    assert choose_best.main([str(tmp_path)]) == 2
    assert "no summary.json; run `weight-compander compare` into it first" in capsys.readouterr().err
