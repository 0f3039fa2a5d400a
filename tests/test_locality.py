"""The paper's Table 2 design on the faces DCGAN (`python -m benchmarks.locality --quick`):
every method measured in every region, PandA the most local, the outputs written."""

import json
import os

import pytest

pytest.importorskip("torch")


def test_quick_locality_comparison(tmp_path):
    from benchmarks import locality

    out = locality.run("quick", str(tmp_path), log=lambda s: None)
    saved = json.loads((tmp_path / "locality.json").read_text())
    assert set(saved["methods"]) == set(locality.METHODS)
    for m in locality.METHODS:
        for r in locality.REGIONS:
            v = saved["methods"][m][r]
            assert v["roir"] > 0 and v["swd"] > 0 and v["seconds"] >= 0
            assert v["inside_rms"] == pytest.approx(out["plan"]["target"], rel=0.2)  # equal effect inside
    mean = {m: sum(saved["methods"][m][r]["roir"] for r in locality.REGIONS) / 3 for m in locality.METHODS}
    assert mean["PandA"] == min(mean.values()), mean  # the paper's claim, on this GAN
    assert os.path.getsize(tmp_path / "locality.png") > 1000
    assert "| PandA |" in (tmp_path / "locality.md").read_text()
    assert saved["jacobian"]["max_abs_diff"] < 1e-4
