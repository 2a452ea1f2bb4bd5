"""tools/defect_recall.py against counts made by hand on a small tree and its predictions."""
import numpy as np
import pytest
from PIL import Image

from common import UserError
from tools.defect_recall import main


def save(array: np.ndarray, path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8) * 255).save(path)


def test_recall_per_defect_type_and_false_alarms(tmp_path, capsys):
    category, predictions = tmp_path / "sheet", tmp_path / "pred"
    line = np.zeros((20, 30), bool)
    line[10, 5:25] = True  # 20 defect pixels
    save(line, category / "ground_truth" / "hairline2" / "000_mask.png")
    save(line, category / "ground_truth" / "hairline6" / "000_mask.png")
    half = line.copy()
    half[10, 15:25] = False  # 10 of them flagged
    save(half, predictions / "hairline2" / "000_mask.png")
    save(np.zeros_like(line), predictions / "hairline6" / "000_mask.png")  # missed entirely
    save(np.zeros_like(line), category / "test" / "good" / "000.png")
    alarms = np.zeros_like(line)
    alarms[0, :6] = True  # 6 of 600 pixels
    save(alarms, predictions / "good" / "000_mask.png")
    assert main(["--category", str(category), "--predictions", str(predictions)]) == 0
    out = capsys.readouterr().out
    assert "| hairline2 | 1 | 20 | 0.500 | 1.00 |" in out and "| hairline6 | 1 | 20 | 0.000 | 0.00 |" in out
    assert "flagged on defect-free test images: 0.0100 of their pixels" in out
    (predictions / "good" / "000_mask.png").unlink()
    with pytest.raises(UserError, match="no prediction .*000_mask.png; run predict.py"):
        main(["--category", str(category), "--predictions", str(predictions)])
