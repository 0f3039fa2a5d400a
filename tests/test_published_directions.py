"""Directions others published, in their own file formats: ReSeFa's ``.npy`` files, GANSpace's
components (``.npz``), SeFa's ``(layers, boundaries, values)``. Files are written here as the
upstream code writes them, read back safely (round trips), refused with a DirectionsError when
they are anything else, and applied by ``panda-jax edit --direction`` through the baselines'
latent edit."""

import json
import os
import pickle

import numpy as np
import pytest
from helpers import ok, run_cli, small_generator

import ported_gens
from panda_jax.directions import LatentDirections, fit_directions, load_directions
from panda_jax.errors import DirectionsError

pytest.importorskip("torch")

from panda_jax.app import baselines  # noqa: E402
from panda_jax.app.cli import main  # noqa: E402

D = 8


def _unit_rows(rng, k, d=D):
    v = rng.standard_normal((k, d))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _resefa_file(path, rng, k=1):
    """ReSeFa: ``np.save`` of ``[K, w_dim]`` rows (the released files are [1, 512] float32 unit rows;
    compute_direction.py saves all ``w_dim`` eigenvector rows, strongest first)."""
    dirs = _unit_rows(rng, k).astype(np.float32)
    np.save(path, dirs)
    return dirs


def _ganspace_file(path, rng, k=3, use_w=True, feature_shape=(4, 2, 2)):
    """GANSpace ``decomposition.py``: ``np.savez_compressed`` of these eight arrays (latent shape [1, D])."""
    lat_comp = _unit_rows(rng, k)[:, None, :]
    lat_stdev = (0.5 + rng.random(k)) if use_w else np.ones(k)
    arrays = {
        "act_comp": rng.standard_normal((k, *feature_shape)), "act_mean": rng.standard_normal(feature_shape),
        "act_stdev": 1 + rng.random(k), "lat_comp": lat_comp, "lat_mean": rng.standard_normal((1, D)),
        "lat_stdev": lat_stdev, "var_ratio": np.sort(rng.random(k))[::-1] / k, "random_stdevs": rng.random(k),
    }
    np.savez_compressed(path, **{n: a.astype(np.float32) for n, a in arrays.items()})
    return arrays


def _sefa_file(path, rng, layers=(0, 1, 2)):
    """SeFa's ``factorize_weight`` result ``(layers, boundaries, values)`` saved under those names."""
    w = rng.standard_normal((D, 3 * D)).astype(np.float32)
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    values, vectors = np.linalg.eig(w @ w.T)
    np.savez(path, layers=np.asarray(layers), boundaries=vectors.T, values=values)
    return vectors.T, values


# ---- round trips ------------------------------------------------------------------------------


def test_resefa_npy_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    dirs = _resefa_file(tmp_path / "eyesize.npy", rng)
    d = load_directions(str(tmp_path / "eyesize.npy"))
    assert isinstance(d, LatentDirections) and d.format == "npy" and d.space is None and d.layers is None
    assert d.directions.dtype == np.float32 and np.array_equal(d.directions, dirs) and len(d) == 1 and d.dim == D
    assert d.step(0) == 1.0 and d.mean is None and d.stdev is None
    # compute_direction.py's [w_dim, w_dim] float64 rows, a 1-D boundary, a per-row [K, L, D] offset
    full = _unit_rows(rng, D)
    np.save(tmp_path / "all.npy", full)
    assert np.allclose(load_directions(tmp_path / "all.npy").directions, full, atol=1e-7)
    np.save(tmp_path / "one.npy", full[0])
    assert load_directions(tmp_path / "one.npy").directions.shape == (1, D)
    np.save(tmp_path / "wplus.npy", rng.standard_normal((2, 3, D)))
    wp = load_directions(tmp_path / "wplus.npy")
    assert wp.space == "w+" and wp.num_layers == 3 and wp.directions.shape == (2, 3 * D)


@pytest.mark.parametrize("use_w", [True, False])
def test_ganspace_npz_round_trip(tmp_path, use_w):
    rng = np.random.default_rng(1)
    name = "stylegan2-ffhq_style_ipca_c3_n1000" + ("_w.npz" if use_w else ".npz")
    arrays = _ganspace_file(tmp_path / name, rng, use_w=use_w)
    d = load_directions(tmp_path / name)
    assert d.format == "ganspace" and d.space == ("w" if use_w else "z")
    assert np.allclose(d.directions, arrays["lat_comp"][:, 0]) and np.allclose(d.mean, arrays["lat_mean"][0])
    assert np.allclose(d.stdev, arrays["lat_stdev"]) and np.allclose(d.values, arrays["var_ratio"])
    assert d.step(2) == pytest.approx(float(arrays["lat_stdev"][2]))
    # renamed, a W file is still known by its measured lat_stdev (ones in Z); seeded names keep _w
    os.rename(tmp_path / name, tmp_path / "renamed.npz")
    assert load_directions(tmp_path / "renamed.npz").space == ("w" if use_w else "z")
    os.rename(tmp_path / "renamed.npz", tmp_path / "x_style_ipca_c3_n1000_w_seed7.npz")
    assert load_directions(tmp_path / "x_style_ipca_c3_n1000_w_seed7.npz").space == "w"


def test_sefa_npz_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    boundaries, values = _sefa_file(tmp_path / "sefa.npz", rng, layers=(2, 0, 1, 1))
    d = load_directions(tmp_path / "sefa.npz")
    assert d.format == "sefa" and d.space is None and d.layers == (0, 1, 2)
    assert np.allclose(d.directions, boundaries) and np.allclose(d.values, values)
    np.savez(tmp_path / "bare.npz", boundaries=boundaries[:2])  # values and layers are optional
    bare = load_directions(tmp_path / "bare.npz")
    assert len(bare) == 2 and bare.values is None and bare.layers is None


# ---- refused files ----------------------------------------------------------------------------


def _write(tmp_path, name, how):
    path = tmp_path / name
    how(path)
    return path


BAD_FILES = [
    ("pickle.npy", lambda p: p.write_bytes(pickle.dumps({"lat_comp": [1.0]})), "pickle"),
    ("named.pkl", lambda p: p.write_bytes(pickle.dumps({"lat_comp": np.zeros(3)}, protocol=0)), "pickle"),
    ("objects.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), "Python objects"),
    ("objects.npz", lambda p: np.savez(p, boundaries=np.array([None, 1], dtype=object)), "Python objects"),
    ("nan.npy", lambda p: np.save(p, np.array([[0.0, np.nan, 1.0]])), "NaN/inf"),
    ("huge.npy", lambda p: np.save(p, np.array([[1e300, 0.0]])), "NaN/inf"),
    ("complex.npy", lambda p: np.save(p, np.ones((2, 3), np.complex64)), "np.real"),
    ("strings.npy", lambda p: np.save(p, np.array(["a", "b"])), "real numbers"),
    ("rank4.npy", lambda p: np.save(p, np.zeros((1, 1, 2, 3))), "[K, L, D]"),
    ("empty.npy", lambda p: np.save(p, np.zeros((0, 3))), "empty"),
    ("keys.npz", lambda p: np.savez(p, comp=np.zeros((2, 3))), "not a known directions archive"),
    ("stdev.npz", lambda p: np.savez(p, lat_comp=np.eye(3), lat_stdev=np.ones(2)), "lat_stdev has 2 values for 3"),
    ("negstd.npz", lambda p: np.savez(p, lat_comp=np.eye(3), lat_stdev=-np.ones(3)), "<= 0"),
    ("mean.npz", lambda p: np.savez(p, lat_comp=np.eye(3), lat_mean=np.zeros(4)), "lat_mean has 4 values"),
    ("layers.npz", lambda p: np.savez(p, boundaries=np.eye(3), layers=np.array([0.5])), "integer w+ rows"),
    ("factors.npz", lambda p: np.savez(p, header="{}", appearance=np.eye(2), parts=np.eye(2)), "FACTORS"),
    ("Uc-name_ffhq-layer_5-rank_8.npy", lambda p: np.save(p, np.eye(4)), "load_original"),
    ("truncated.npz", lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 20), "not a readable"),
    ("notes.txt", lambda p: p.write_text("directions: up, down"), "neither a .npy array nor a .npz"),
]


@pytest.mark.parametrize("name, how, words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_are_refused(tmp_path, name, how, words):
    path = _write(tmp_path, name, how)
    with pytest.raises(DirectionsError, match=None) as e:
        load_directions(str(path))
    assert words in str(e.value) and name in str(e.value)
    with pytest.raises(DirectionsError, match="does not exist"):
        load_directions(str(tmp_path / "missing.npy"))


def test_fitting_a_generator_checks_sizes_spaces_and_rows():
    d = LatentDirections(np.eye(3, 8, dtype=np.float32))
    z_only = dict(z_dim=8)
    styled = dict(z_dim=16, w_dim=8, num_ws=6)
    assert fit_directions(d, **z_only).space == "z"
    got = fit_directions(d, **styled)
    assert got.space == "w" and got.layers == tuple(range(6))  # all rows unless told
    assert fit_directions(d, **styled, layers=[4, 5, 4]).layers == (4, 5)
    sefa = LatentDirections(np.eye(3, 8, dtype=np.float32), layers=(0,), format="sefa")
    assert fit_directions(sefa, **z_only).layers is None  # SeFa's [0] for PGGAN: z is edited
    assert fit_directions(sefa, **styled).layers == (0,)
    wplus = LatentDirections(np.ones((1, 48), np.float32), space="w+", num_layers=6)
    assert fit_directions(wplus, **styled).space == "w+"
    cases = [
        (d, z_only, dict(space="w"), "no W space"),
        (d, dict(z_dim=4), {}, "z of 4 values"),
        (LatentDirections(np.eye(2, 16, dtype=np.float32)), styled, {}, "--space z"),
        (d, styled, dict(layers=[6]), "0..5"),
        (d, z_only, dict(layers=[0]), "only apply to w"),
        (d, styled, dict(space="x"), "not one of"),
        (wplus, dict(z_dim=8, w_dim=8, num_ws=3), {}, "w+ of 3 x 8 = 24"),
        (wplus, dict(z_dim=8, w_dim=16, num_ws=3), {}, "have 6 w+ rows"),
    ]
    for dirs, sizes, kw, words in cases:
        with pytest.raises(DirectionsError, match=None) as e:
            fit_directions(dirs, **sizes, **kw)
        assert words in str(e.value), str(e.value)


# ---- on generators ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    work = tmp_path_factory.mktemp("published")
    out = {}
    for family in ("dcgan", "stylegan2"):
        G = small_generator(family, seed=3)
        ported_gens.save_generator(G, str(work / family))
        out[family] = (G, work / family)
    return out


def test_published_w_edits_move_the_given_rows(models):
    import jax

    G, _ = models["stylegan2"]
    rng = np.random.default_rng(4)
    dirs = _unit_rows(rng, 2, G.w_dim).astype(np.float32)
    lat = G.sample_latents(jax.random.key(0), 2)
    wp = np.array(G.wp(lat))
    edit = baselines.from_published(G, LatentDirections(dirs), layers=[1, 3])
    assert edit.space == "w" and edit.rows == (1, 3)
    want = wp.copy()
    want[:, [1, 3]] += 1.5 * dirs[1]
    got = baselines.edited_images(G, lat, edit, 1, 1.5)
    assert np.allclose(got, G.generate_from_wp(want), atol=1e-5)
    plus = baselines.from_published(G, LatentDirections(np.tile(dirs[1], (1, G.num_ws)), space="w+"))
    assert np.allclose(baselines.edited_images(G, lat, plus, 0, 1.5), G.generate_from_wp(wp + 1.5 * dirs[1]), atol=1e-5)


def _png(path):
    from PIL import Image

    return np.asarray(Image.open(path))


def test_cli_applies_a_resefa_file_to_a_stylegan(models, tmp_path):
    import jax

    from panda_jax.app import figures

    G, model = models["stylegan2"]
    dirs = _resefa_file(tmp_path / "eyes.npy", np.random.default_rng(5), k=2)
    out = tmp_path / "edit"
    res = ok(run_cli("edit", model, "--direction", tmp_path / "eyes.npy", "--component", 1, "--rows", "1-2",
                     "--alpha", -2, 2, "--seeds", 0, 1, "--gif", "--gif-frames", 3, "--out", out))
    assert "component 1" in res.stdout
    assert {"strip.png", "sweep.gif", "edit.json", "seed0_original.png", "seed1_alpha+2.png",
            "seed1_alpha-2.png"} <= set(os.listdir(out))
    meta = json.loads((out / "edit.json").read_text())
    assert meta["format"] == "npy" and meta["component"] == 1 and meta["space"] == "w" and meta["rows"] == [1, 2]
    assert meta["alphas"] == [-2.0, 2.0] and meta["latent_distances"] == [-2.0, 2.0] and meta["seeds"] == [0, 1]
    lat = G.sample_latents(jax.random.key(1), 1)  # seed 1
    wp = np.array(G.wp(lat))
    wp[:, 1:3] += 2.0 * dirs[1]
    want = figures.to_uint8(np.asarray(G.generate_from_wp(wp))[0])
    assert np.abs(_png(out / "seed1_alpha+2.png").astype(int) - want.astype(int)).max() <= 1


def test_cli_applies_ganspace_components_in_standard_deviations(models, tmp_path):
    G, model = models["stylegan2"]
    path = tmp_path / "stylegan2-ffhq_style_ipca_c3_n1000_w.npz"
    arrays = _ganspace_file(path, np.random.default_rng(6), use_w=True)
    out = tmp_path / "edit"
    assert main(["edit", str(model), "--direction", str(path), "--component", "2", "--alpha", "1.5",
                 "--seeds", "3", "--out", str(out), "-q"]) == 0
    meta = json.loads((out / "edit.json").read_text())
    assert meta["format"] == "ganspace" and meta["space"] == "w" and meta["rows"] == list(range(G.num_ws))
    assert meta["latent_distances"] == [pytest.approx(1.5 * float(arrays["lat_stdev"][2]))]
    assert "standard deviations" in meta["alpha_unit"] and meta["value"] == pytest.approx(arrays["var_ratio"][2])
    assert {"strip.png", "seed3_original.png", "seed3_alpha+1.5.png"} <= set(os.listdir(out))


def test_cli_applies_sefa_boundaries_to_a_dcgan_z(models, tmp_path):
    _, model = models["dcgan"]
    _sefa_file(tmp_path / "sefa.npz", np.random.default_rng(7), layers=(0,))  # PGGAN-style: z is edited
    out = tmp_path / "edit"
    assert main(["edit", str(model), "--direction", str(tmp_path / "sefa.npz"), "--seeds", "0", "--out", str(out),
                 "-q"]) == 0
    meta = json.loads((out / "edit.json").read_text())
    assert meta["format"] == "sefa" and meta["space"] == "z" and meta["rows"] is None and meta["alphas"] == [-3.0, 3.0]
    assert not np.array_equal(_png(out / "seed0_alpha-3.png"), _png(out / "seed0_alpha+3.png"))


def test_cli_bad_directions_one_line_exit_2_nothing_written(models, tmp_path, capsys):
    _, dcgan = models["dcgan"]
    _, sg2 = models["stylegan2"]
    np.save(tmp_path / "d8.npy", np.eye(2, 8, dtype=np.float32))
    np.save(tmp_path / "d5.npy", np.eye(2, 5, dtype=np.float32))
    np.save(tmp_path / "nan.npy", np.full((1, 8), np.nan, np.float32))
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"lat_comp": 1}))
    out = tmp_path / "out"
    cases = [
        (["edit", sg2, "--direction", tmp_path / "d5.npy"], "5 values each"),
        (["edit", sg2, "--direction", tmp_path / "nan.npy"], "NaN/inf"),
        (["edit", sg2, "--direction", tmp_path / "p.pkl"], "pickle"),
        (["edit", sg2, "--direction", tmp_path / "d8.npy", "--component", 2], "component 2"),
        (["edit", sg2, "--direction", tmp_path / "d8.npy", "--rows", "7-9"], "rows"),
        (["edit", sg2, "--direction", tmp_path / "d8.npy", "--rows", "x"], "--rows"),
        (["edit", dcgan, "--direction", tmp_path / "d8.npy", "--space", "w"], "no W space"),
        (["edit", dcgan, "--direction", tmp_path / "d8.npy", "--part", 0], "drop --part"),
        (["edit", "--direction", tmp_path / "d8.npy"], "needs MODEL"),
        (["edit", tmp_path / "none.npz", "--part", 0, "--appearance", 0, "--component", 1], "only apply with --direction"),
        (["edit", dcgan, "--direction", tmp_path / "missing.npy"], "does not exist"),
    ]
    for argv, words in cases:
        capsys.readouterr()
        code = main([str(a) for a in argv + ["--out", out]])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("panda-jax: error:"), (argv, err)
        assert words in err[0], (words, err[0])
        assert not out.exists()
