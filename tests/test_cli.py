"""The ``panda-jax`` command on the embedded faces DCGAN: the real command in subprocesses
(convert, fit, edit, saliency, a small demo and its report), and user errors: one line on
stderr, exit status 2, nothing written."""

import html.parser
import json
import os

import numpy as np
import pytest
from helpers import ok
from helpers import run_cli as run

pytest.importorskip("torch")

from panda_jax.app.cli import main  # noqa: E402

@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def model(work):
    out = work / "model"
    res = ok(run("convert", "default", out))
    assert "layers {1: 4x4x512, 2: 8x8x256, 3: 16x16x128, 4: 32x32x64}" in res.stdout
    assert (out / "config.json").is_file() and (out / "samples.png").is_file()
    return out


@pytest.fixture(scope="module")
def factors(work, model):
    out = work / "f.npz"
    ok(run("fit", model, "--layer", 2, "--ranks", 8, 4, "--samples", 16, "--steps", 10, "--seed", 0,
           "--out", out, "--loss-plot", work / "loss.png", "-q"))
    return out


def test_fit_writes_factors_with_meta(factors, work, model):
    import panda_jax as pj

    F = pj.load_factors(str(factors))
    assert F.ranks == (8, 4) and (F.height, F.width, F.channels) == (8, 8, 256)
    assert F.meta["layer"] == 2 and F.meta["model"] == str(model) and F.meta["steps"] == 10
    assert (work / "loss.png").is_file()


def test_fit_timings(factors, work, model, capsys):
    """``--timings`` prints one line, also with -q, that parses back to its numbers; the fit's
    own factors file is unchanged by it (the same seed gives the same factors)."""
    from panda_jax.app.commands.fit import format_timings, parse_timings

    import panda_jax as pj

    out = work / "timed.npz"
    assert main(["fit", str(model), "--layer", "2", "--ranks", "8", "4", "--samples", "16", "--steps", "10",
                 "--seed", "0", "--out", str(out), "-q", "--timings"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and printed[0].startswith("timings: model ")
    t = parse_timings(printed[0])
    assert t["steps"] == 10 and 0 < t["steps_s"] <= t["fit_s"] and t["model_s"] > 0 and t["write_s"] > 0
    assert format_timings(t) == printed[0] and parse_timings("no such line") is None
    np.testing.assert_array_equal(pj.load_factors(str(out)).parts, pj.load_factors(str(factors)).parts)


def test_edit(factors, work):
    out = work / "edit"
    res = ok(run("edit", factors, "--part", 0, "--appearance", 1, "--alpha", -5, 5, "--seeds", 3, 7,
                 "--gif", "--gif-frames", 3, "--out", out))
    assert "ROIR" in res.stdout
    names = set(os.listdir(out))
    assert {"strip.png", "sweep.gif", "edit.json", "seed3_original.png", "seed7_alpha+5.png"} <= names
    meta = json.loads((out / "edit.json").read_text())
    assert set(meta["roir"]) == {"-5", "+5"} and all(np.isfinite(v) for v in meta["roir"].values())
    assert not [n for n in os.listdir(work) if n.startswith(".")]  # no temporaries left


def test_saliency(factors, work, model):
    out = work / "saliency"
    ok(run("saliency", factors, model, "--seeds", 0, 1, "--appearances", 0, 2, "--background", -1, "--out", out))
    assert {"heatmaps.png", "masks.png", "background_removed.png", "saliency.npz"} <= set(os.listdir(out))
    with np.load(out / "saliency.npz") as z:
        assert z["saliency"].shape == (2, 8, 8, 8) and z["masks"].dtype == bool


def test_refine_in_process(factors, work, model):
    out = work / "refine"
    assert main(["refine", str(factors), str(model), "--seeds", "0", "1", "--steps", "5", "--out", str(out), "-q"]) == 0
    with np.load(out / "refined.npz") as z:
        assert z["parts"].shape == (2, 64, 4) and np.all(z["parts"] >= 0)
    assert (out / "parts_refined.png").is_file()


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src"):
                self.links.append(v)


def test_demo_report_links_exist(work):
    out = work / "demo"
    res = ok(run("demo", "--out", out, "--samples", 8, "--steps", 5, "--show", 2, "--ranks", 4, 2))
    page = (out / "index.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert len(parser.links) >= 12
    missing = [l for l in parser.links if not (out / l).is_file()]
    assert not missing, missing
    for name in ("parts.png", "parts_overlay.png", "heatmaps.png", "masks.png", "background_removed.png",
                 "sweep.gif", "loss.png", "factors.npz", "model/config.json"):
        assert name in parser.links
    assert "panda-jax demo --out" in page and "ROIR" in page
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["edits"]) == 2 * 3 * 2 and summary["total_seconds"] > 0
    assert "demo finished" in res.stdout


# ---- user errors: one line, status 2, nothing written ------------------------------------


def _one_line_error(err: str):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("panda-jax: error: ")
    return lines[0]


def test_error_through_the_real_command(tmp_path):
    res = run("convert", tmp_path / "missing.pth", tmp_path / "out")
    assert res.returncode == 2
    assert "does not exist" in _one_line_error(res.stderr)
    assert os.listdir(tmp_path) == []


def _fails(capsys, argv, *expect):
    assert main([str(a) for a in argv]) == 2
    line = _one_line_error(capsys.readouterr().err)
    for e in expect:
        assert e in line, line
    return line


def test_errors(capsys, tmp_path, model, factors):
    import torch

    # not a checkpoint
    junk = tmp_path / "notes.pth"
    junk.write_text("these are not weights\n")
    _fails(capsys, ["convert", junk, tmp_path / "o1"], "notes.pth", "neither a PyTorch checkpoint")
    # a state dict of another architecture (auto-detected and forced)
    other = tmp_path / "other.pth"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).state_dict(), other)
    _fails(capsys, ["convert", other, tmp_path / "o2"], "does not look like any supported", "--arch")
    _fails(capsys, ["convert", other, tmp_path / "o3", "--arch", "dcgan"], "not a DCGAN generator")
    # layer out of range, ranks too large, bad values
    out = tmp_path / "f.npz"
    _fails(capsys, ["fit", model, "--layer", 9, "--ranks", 4, 4, "--out", out], "layer 9", "1..4")
    _fails(capsys, ["fit", model, "--layer", 2, "--ranks", 300, 4, "--out", out], "(300, 4)", "1..256")
    _fails(capsys, ["fit", model, "--layer", 2, "--ranks", 8, 65, "--out", out], "R_S in 1..64")
    _fails(capsys, ["fit", model, "--layer", 2, "--ranks", 0, 4, "--out", out], "--ranks", "positive integer")
    _fails(capsys, ["fit", model, "--layer", 2, "--ranks", 4, 4, "--lr", "fast", "--out", out], "--lr")
    _fails(capsys, ["fit", tmp_path / "nomodel", "--layer", 2, "--ranks", 4, 4, "--out", out], "does not exist")
    # missing factors, factor indices out of range, a wrong-layer model
    _fails(capsys, ["edit", tmp_path / "none.npz", model, "--part", 0, "--appearance", 0, "--out", tmp_path / "e"],
           "does not exist")
    _fails(capsys, ["edit", factors, model, "--part", 4, "--appearance", 0, "--out", tmp_path / "e"], "part index 4")
    _fails(capsys, ["saliency", factors, model, "--appearances", 8, "--out", tmp_path / "s"], "appearance index 8")
    _fails(capsys, ["saliency", factors, model, "--layer", 3, "--out", tmp_path / "s"], "8x8x256", "16x16x128")
    # a convert target that is someone else's folder is not replaced
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    _fails(capsys, ["convert", "default", keep], "not a converted model")
    assert sorted(os.listdir(tmp_path)) == ["keep", "notes.pth", "other.pth"]
    assert os.listdir(keep) == ["mine.txt"]


@pytest.mark.parametrize("command", ["convert", "fit", "refine", "edit", "saliency", "demo"])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: panda-jax {command}") and "--quiet" in out


def test_no_command(capsys):
    assert main([]) == 2
    assert "required: COMMAND" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("seed", [0, 1, -5, 2**31 - 1, -(2**31) + 1])
def test_seed_keys_are_the_eager_keys(seed):
    """fit derives its keys in one program; they are the keys the Python int seed gives."""
    import jax

    from panda_jax.app import pipeline

    want = jax.random.split(jax.random.key(seed))
    got = pipeline.seed_keys(seed)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(jax.random.key_data(g), jax.random.key_data(w))
