"""Every bad input gets its error: a PandaError naming the value and the fix in Python; on the
command line one line on stderr, exit status 2, nothing written, never a traceback."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import panda_jax as pj

BIN = os.path.join(os.path.dirname(sys.executable), "panda-jax")


def run(*args, cwd=None):
    cmd = [BIN] if os.path.exists(BIN) else [sys.executable, "-m", "panda_jax.app.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=cwd)


class Result:
    def __init__(self, code, err):
        self.returncode, self.stderr, self.stdout = code, err, ""


def cli(capsys, *args):
    """The command in this process (fast; the subprocess form is tested in test_cli.py)."""
    from panda_jax.app.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    return Result(code, capsys.readouterr().err)


def refused(res, *words):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("panda-jax: error:"), res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in res.stderr, res.stderr


def tiny():
    return pj.Factors(jnp.eye(3, 2), jnp.ones((6, 2)), 2, 3, {"model": "toy", "layer": 1})


# ---- Python API --------------------------------------------------------------------------------


@pytest.mark.parametrize("call, err, words", [
    (lambda: pj.edit(jnp.zeros((1, 2, 3, 3)), tiny(), part=0, appearance=0, alpha="big"), pj.ConfigError, "alpha"),
    (lambda: pj.edit(jnp.zeros((1, 2, 3, 3)), None, part=0, appearance=0), pj.FactorsError, "Factors"),
    (lambda: pj.edit(jnp.zeros((1, 2, 3, 3)), tiny(), part=0, appearance=0, alpha=float("inf")), pj.ConfigError, "alpha"),
    (lambda: pj.edit(jnp.zeros((1, 2, 3, 3)), tiny(), part=1.5, appearance=0), pj.ConfigError, "integer"),
    (lambda: pj.localize(jnp.zeros((1, 2, 3, 2)), threshold=float("nan")), pj.ConfigError, "threshold"),
    (lambda: pj.refine(jnp.zeros((1, 2, 3, 3)), pj.Factors(jnp.full((3, 2), jnp.nan), jnp.ones((6, 2)), 2, 3)),
     pj.FactorsError, "NaN"),
    (lambda: pj.refine(jnp.full((1, 2, 3, 3), jnp.nan), tiny()), pj.FeatureError, "NaN"),
    (lambda: pj.Factors(jnp.eye(3, 2), jnp.ones((6, 2)), "2", 3), pj.FactorsError, "height"),
    (lambda: pj.Factors(jnp.eye(3, 2), jnp.ones((6, 2)), -2, 3), pj.FactorsError, "height"),
    (lambda: pj.save_factors("/tmp/never.npz", pj.Factors(jnp.full((3, 2), jnp.inf), jnp.ones((6, 2)), 2, 3)),
     pj.FactorsError, "NaN/inf"),
])
def test_api_errors(call, err, words):
    with pytest.raises(err) as e:
        call()
    assert words in str(e.value) and isinstance(e.value, pj.PandaError)


def _npz(path, header, A=np.eye(3, 2, dtype=np.float32), P=np.ones((6, 2), np.float32)):
    np.savez(path, appearance=A, parts=P, header=np.array(header))
    return str(path)


@pytest.mark.parametrize("header, words", [
    (json.dumps({"format": "panda-jax factors", "version": 1, "width": 3}), "height and width"),
    (json.dumps(["format", "panda-jax factors"]), "JSON list"),
    (json.dumps({"format": "panda-jax factors", "version": 1, "height": "2", "width": 3}), "height"),
    (json.dumps({"format": "panda-jax factors", "version": 1, "height": -2, "width": 3}), "height"),
    (json.dumps({"format": "panda-jax factors", "version": 1, "height": 2, "width": 3, "meta": [1]}), "meta"),
    (json.dumps({"format": "panda-jax factors", "version": 99, "height": 2, "width": 3}), "version"),
    ("{not json", "not a panda-jax factors file"),
])
def test_damaged_factor_files(tmp_path, header, words):
    with pytest.raises(pj.FactorsError, match=words.replace("(", r"\(")):
        pj.load_factors(_npz(tmp_path / "f.npz", header))


def test_nan_factor_file_and_original_pair(tmp_path):
    good = json.dumps({"format": "panda-jax factors", "version": 1, "height": 2, "width": 3})
    with pytest.raises(pj.FactorsError, match="NaN/inf"):
        pj.load_factors(_npz(tmp_path / "f.npz", good, P=np.full((6, 2), np.nan, np.float32)))
    np.save(tmp_path / "uc.npy", np.eye(3, 2, dtype=np.float32))
    np.save(tmp_path / "us.npy", np.ones((6, 2), np.float32))
    with pytest.raises(pj.FactorsError, match="width"):
        pj.load_original(str(tmp_path / "uc.npy"), str(tmp_path / "us.npy"), width=0)


def test_save_original_never_writes_outside_its_folder(tmp_path):
    out = tmp_path / "out"
    f = tiny().with_meta(model="../../escape/x", layer=1)
    p1, p2 = pj.save_original(str(out), f)
    assert os.path.dirname(p1) == str(out) and os.path.dirname(p2) == str(out)
    assert sorted(os.listdir(tmp_path)) == ["out"]
    assert "/" not in os.path.basename(p1)[3:] and not os.path.basename(p1).startswith(".")


# ---- command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    out = d / "f.npz"
    res = run("fit", "default", "--layer", 2, "--ranks", 4, 2, "--samples", 8, "--steps", 3, "--out", out, "-q")
    assert res.returncode == 0, res.stderr
    return d, out


@pytest.mark.parametrize("args, words", [
    (["fit", "default", "--layer", 2, "--ranks", 4, 2, "--seed", "1e22", "--out", "x.npz"], "seed"),
    (["fit", "default", "--layer", 2, "--ranks", 4, 2, "--seed", str(10 ** 22), "--out", "x.npz"], "seed"),
    (["fit", "default", "--layer", 2, "--ranks", 4, 2, "--samples", "1e12", "--out", "x.npz"], "positive integer"),
    (["fit", "default", "--layer", 2, "--ranks", 4, 2, "--samples", str(10 ** 12), "--out", "x.npz"], "GiB"),
    (["fit", "default", "--layer", 2, "--ranks", 4, 2, "--truncation", "nan", "--out", "x.npz"], "truncation"),
    (["fit", "default", "--layer", 2, "--ranks", 4, 2, "--out", "x.npz", "--loss-plot", "missing_dir/l.png"],
     "does not exist"),
    (["fit", "default", "--layer", 9, "--ranks", 4, 2, "--out", "x.npz"], "layer 9"),
    (["fit", "default", "--layer", 2, "--ranks", 400, 2, "--out", "x.npz"], "R_C"),
])
def test_cli_refuses_before_any_work(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    res = cli(capsys, *args)
    refused(res, words)
    assert os.listdir(tmp_path) == []  # nothing written, not even the factors


@pytest.mark.parametrize("command, extra, words", [
    ("edit", ["--part", 0, "--appearance", 1, "--alpha", "nan"], "finite"),
    ("edit", ["--part", 0, "--appearance", 1, "--seeds", "1e22"], "seed"),
    ("edit", ["--part", 7, "--appearance", 1], "part index 7"),
    ("saliency", ["--threshold", "inf"], "finite"),
    ("refine", ["--seeds", "9-3"], "range"),
])
def test_cli_bad_values_for_factor_commands(fitted, capsys, command, extra, words):
    d, factors = fitted
    out = d / f"out-{command}"
    refused(cli(capsys, command, factors, *extra, "--out", out), words)
    assert not out.exists()


@pytest.mark.parametrize("command", ["refine", "edit", "saliency"])
def test_cli_bad_out_is_refused_before_computing(fitted, capsys, command):
    d, factors = fitted
    blocker = d / "a_file"
    blocker.write_text("x")
    extra = ["--part", 0, "--appearance", 1] if command == "edit" else []
    refused(cli(capsys, command, factors, *extra, "--out", blocker / "sub"), "not a writable directory")


def test_factors_with_odd_metadata_still_edit(fitted):
    d, factors = fitted
    F = pj.load_factors(str(factors))
    odd = d / "odd.npz"
    pj.save_factors(str(odd), F.with_meta(feature_scale="big"))
    res = run("edit", odd, "--part", 0, "--appearance", 1, "--seeds", 0, "--out", d / "odd-out", "-q")
    assert res.returncode == 0, res.stderr
    meta = json.loads((d / "odd-out" / "edit.json").read_text())
    assert all(np.isfinite(v) for v in meta["roir"].values())
    bad_model = d / "bad_model.npz"
    pj.save_factors(str(bad_model), F.with_meta(model=5))
    refused(run("edit", bad_model, "--part", 0, "--appearance", 1, "--out", d / "x"), "model")
    assert not (d / "x").exists()
