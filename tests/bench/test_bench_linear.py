"""`fastaed bench linear`: every shape x rows cell is timed with both kernels and says which one fastaed
uses (the switch-over of ``fastaed.model.onednn``), the report prints them, and bad options are refused."""

from __future__ import annotations

import pytest

from fastaed.bench import linear as bl
from fastaed.model.onednn import MIN_WEIGHT_ELEMENTS, onednn_available


@pytest.mark.skipif(not onednn_available(), reason="no oneDNN linear kernel in this torch build")
def test_every_cell_is_timed_with_both_kernels_and_marks_the_switch_over(monkeypatch, capsys):
    monkeypatch.setattr(bl, "SHAPES", ((8, 16), (512, 512)))
    result = bl.run(bl.LinearBenchConfig(rows=(1, 3), pool_mb=2, calls=3, repeats=1))
    cells = result["cells"]
    assert [(c["in"], c["out"], c["rows"]) for c in cells] == [
        (8, 16, 1),
        (8, 16, 3),
        (512, 512, 1),
        (512, 512, 3),
    ]
    assert all(c["default_us"] > 0 and c["onednn_us"] > 0 and c["weights_cycled"] >= 2 for c in cells)
    assert [c["onednn_in_fastaed"] for c in cells] == [False, False, True, True]  # 512 x 512 = 2^18
    assert result["min_weight_elements"] == MIN_WEIGHT_ELEMENTS and result["read_gb_s"] > 0
    bl.print_report(result)
    out = capsys.readouterr().out
    assert "512 x 512" in out and "oneDNN" in out and "default" in out


def test_config_refuses_empty_or_zero_options():
    with pytest.raises(ValueError):
        bl.LinearBenchConfig(rows=())
    with pytest.raises(ValueError):
        bl.LinearBenchConfig(rows=(0,))
    with pytest.raises(ValueError):
        bl.LinearBenchConfig(calls=0)
