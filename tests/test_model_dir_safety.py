"""Damaged, edited or hostile converted model folders are refused with a CheckpointError.

A converted folder (``config.json`` + orbax ``params/``) is written once per module by the real
``save_generator`` (small DCGAN and BigGAN-deep generators); each case mutates a copy. Whatever
is wrong (the JSON, the family or its settings, sizes that would allocate gigabytes, a config
that disagrees with the stored parameters, missing or extra parameters, NaN/inf) must be named
in one ``CheckpointError``, checked before any array is allocated, never a KeyError, TypeError,
JSONDecodeError or an orbax traceback. The command line prints one line and exits 2 with
nothing written.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from helpers import run_cli, small_generator
from panda_jax.errors import CheckpointError, PandaError
from ported_gens.base import MAX_CONFIG_BYTES, load_dir, save_generator

TESTVECTORS_NVLABS = ("stylegan2_ada_nvlabs", "stylegan3_t")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """``{family: converted folder}`` of small DCGAN and BigGAN-deep generators."""
    root = tmp_path_factory.mktemp("converted")
    out = {}
    for family in ("dcgan", "biggan"):
        out[family] = save_generator(small_generator(family), str(root / family), {"file": "test"})
    return out


def _copy(folders, family, tmp_path) -> str:
    dst = str(tmp_path / f"{family}-copy")
    shutil.copytree(folders[family], dst)
    return dst


def _meta(d) -> dict:
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f)


def _write_meta(d, meta=None, raw: bytes | None = None):
    with open(os.path.join(d, "config.json"), "wb") as f:
        f.write(raw if raw is not None else json.dumps(meta).encode())


def _edit(**changes):
    """A mutation changing top-level entries of config.json (``None`` deletes)."""

    def go(d):
        meta = _meta(d)
        for k, v in changes.items():
            if v is None:
                meta.pop(k, None)
            else:
                meta[k] = v
        _write_meta(d, meta)

    return go


def _setting(**changes):
    """A mutation changing settings in config.json's ``config``."""

    def go(d):
        meta = _meta(d)
        meta["config"].update(changes)
        _write_meta(d, meta)

    return go


def _raw(data: bytes):
    return lambda d: _write_meta(d, raw=data)


def _params(fn):
    """A mutation rewriting ``params/`` with orbax: ``fn(flat {path: array}) -> flat``."""

    def go(d):
        import orbax.checkpoint as ocp

        params = os.path.abspath(os.path.join(d, "params"))
        with ocp.StandardCheckpointer() as c:
            tree = c.restore(params)
        flat = {}

        def walk(t, prefix):
            for k, v in t.items():
                if isinstance(v, dict):
                    walk(v, prefix + (k,))
                else:
                    flat[prefix + (k,)] = np.asarray(v)

        walk(tree, ())
        flat = fn(flat)
        nested: dict = {}
        for path, v in flat.items():
            node = nested
            for k in path[:-1]:
                node = node.setdefault(k, {})
            node[path[-1]] = v
        shutil.rmtree(params)
        with ocp.StandardCheckpointer() as c:
            c.save(params, nested)
            c.wait_until_finished()

    return go


def _drop_first(flat):
    del flat[sorted(flat)[0]]
    return flat


def _add_extra(flat):
    flat[("extra", "weight")] = np.zeros(3, np.float32)
    return flat


def _nan_in(name):
    def fn(flat):
        key = next(k for k in flat if ".".join(k) == name)
        a = flat[key].copy()
        a.reshape(-1)[0] = np.nan
        flat[key] = a
        return flat

    return fn


def _as_float16(name):
    def fn(flat):
        key = next(k for k in flat if ".".join(k) == name)
        flat[key] = flat[key].astype(np.float16)
        return flat

    return fn


def _rm(rel):
    return lambda d: shutil.rmtree(os.path.join(d, rel)) if os.path.isdir(os.path.join(d, rel)) else os.remove(os.path.join(d, rel))


def _garbage(rel):
    def go(d):
        path = os.path.join(d, rel)
        with open(path, "wb") as f:
            f.write(b"\x00garbage\xff" * 10)

    return go


# (family, mutation, what the message must say)
CASES = {
    # config.json itself
    "invalid-json": ("dcgan", _raw(b'{"family": "dcgan", "config": {'), r"not valid JSON"),
    "empty": ("dcgan", _raw(b""), r"config.json is empty"),
    "whitespace": ("dcgan", _raw(b"  \n\t "), r"config.json is empty"),
    "not-utf8": ("dcgan", _raw(b'{"family": "\xff\xfe"}'), r"not valid JSON \(UnicodeDecodeError"),
    "not-an-object": ("dcgan", _raw(b"[1, 2, 3]"), r"holds a JSON list, not an object"),
    "a-string": ("dcgan", _raw(b'"dcgan"'), r"holds a JSON str, not an object"),
    "nan-constant": ("dcgan", _raw(b'{"family": "dcgan", "config": {"nz": NaN}}'), r"NaN is not a JSON number"),
    "deeply-nested": ("dcgan", _raw(b"[" * 200_000 + b"]" * 200_000), r"not valid JSON|larger than"),
    "huge": ("dcgan", _raw(b" " * (MAX_CONFIG_BYTES + 10) + b"{}"), rf"at most {MAX_CONFIG_BYTES} read"),
    # the family and the config object
    "no-family": ("dcgan", _edit(family=None), r"names no generator family"),
    "unknown-family": ("dcgan", _edit(family="stylegan9"), r"unknown generator family 'stylegan9'"),
    "family-a-list": ("dcgan", _edit(family=["dcgan"]), r"unknown generator family 'a JSON list'"),
    "no-config": ("dcgan", _edit(config=None), r"has no 'config'"),
    "config-a-list": ("dcgan", _edit(config=[1, 2]), r"'config' is a JSON list, not an object"),
    "source-a-string": ("dcgan", _edit(source="x"), r"'source' is a JSON str"),
    "future-version": ("dcgan", _edit(format_version=99), r"format version 99.*upgrade panda-jax"),
    "version-a-string": ("dcgan", _edit(format_version="1"), r"format_version '1'"),
    # the settings (the family's config class checks them)
    "unknown-setting": ("dcgan", _setting(bogus=1), r"unknown settings \['bogus'\]"),
    "string-size": ("dcgan", _setting(nz="sixty-four"), r"nz = 'sixty-four' \(str\)"),
    "bool-size": ("dcgan", _setting(ngf=True), r"ngf = True \(bool\)"),
    "float-size": ("dcgan", _setting(ngf=4.0), r"ngf = 4.0 \(float\)"),
    "negative-size": ("dcgan", _setting(ngf=-4), r"ngf = -4"),
    "zero-size": ("dcgan", _setting(nz=0), r"nz = 0"),
    "null-size": ("dcgan", _setting(nc=None), r"nc = None"),
    "absurd-width": ("dcgan", _setting(ngf=10**6), r"GiB of parameters \(largest: convs\.\d\.kernel"),
    "astronomic-width": ("dcgan", _setting(ngf=10**30), r"ngf = 10+ \(int\) is not a positive integer up to"),
    "absurd-depth": ("dcgan", _setting(blocks=10**6), r"blocks = 1000000 \(int\) is not a positive integer up to 12"),
    "biggan-string-z": ("biggan", _setting(z_dim="sixty-four"), r"z_dim = 'sixty-four'"),
    "biggan-layers-string": ("biggan", _setting(layers="abc"), r"layers = 'abc'"),
    "biggan-layers-nested-string": ("biggan", _setting(layers=["abc"]), r"layers = \['abc'\]"),
    "biggan-layers-not-chained": ("biggan", _setting(layers=[[True, 16, 4], [False, 4, 1]]), r"out_mult must equal"),
    "biggan-many-blocks": ("biggan", _setting(layers=[[False, 16, 16]] * 1000 + [[True, 16, 1]]), r"at most 64"),
    "biggan-huge-mult": ("biggan", _setting(layers=[[True, 16, 8], [False, 8, 10**9]]), r"layers = "),
    "biggan-absurd-width": ("biggan", _setting(channel_width=10**5), r"GiB of parameters"),
    "biggan-no-classes": ("biggan", _setting(num_classes=0), r"num_classes = 0"),
    "biggan-eps-nan": ("biggan", _raw(b'{"family": "biggan", "config": {"eps": NaN}}'), r"NaN is not a JSON number"),
    "biggan-eps-string": ("biggan", _setting(eps="small"), r"eps = 'small'"),
    "biggan-n-stats": ("biggan", _setting(n_stats=10**9), r"n_stats = 1000000000"),
    # a valid config that disagrees with the stored parameters
    "config-vs-params-shape": ("dcgan", _setting(nz=9), r"convs\.0\.kernel is stored as \[8, .*needs \[9, "),
    "config-vs-params-biggan": ("biggan", _setting(num_classes=6), r"is stored as \[5, .*needs \[6, "),
    "config-fewer-blocks": ("dcgan", _setting(blocks=2), r"holds \d+ parameter\(s\) the dcgan config does not have"),
    "config-more-blocks": ("dcgan", _setting(blocks=4), r"lacks \d+ parameter\(s\) the dcgan config needs"),
    # the parameters
    "no-params": ("dcgan", _rm("params"), r"no params/ folder"),
    "params-not-orbax": ("dcgan", lambda d: (_rm("params")(d), os.makedirs(os.path.join(d, "params"))),
                         r"not a readable orbax checkpoint"),
    "params-metadata-garbage": ("dcgan", _garbage("params/_METADATA"), r"not a readable orbax checkpoint"),
    "params-missing-key": ("dcgan", _params(_drop_first), r"params/ lacks 1 parameter\(s\)"),
    "params-extra-key": ("dcgan", _params(_add_extra), r"params/ holds 1 parameter\(s\).*extra\.weight"),
    "params-other-dtype": ("dcgan", _params(_as_float16("convs.0.kernel")), r"convs\.0\.kernel is stored as .*float16"),
    "params-nan": ("dcgan", _params(_nan_in("convs.1.kernel")), r"parameter convs\.1\.kernel holds 1 NaN/inf"),
    "no-config-json": ("dcgan", _rm("config.json"), r"no config.json"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_folder_is_refused(folders, tmp_path, case):
    family, mutate, match = CASES[case]
    d = _copy(folders, family, tmp_path)
    mutate(d)
    with pytest.raises(CheckpointError, match=match) as info:
        load_dir(d)
    msg = str(info.value)
    assert "\n" not in msg.strip() or case in ("deeply-nested",)
    if case not in ("no-config-json", "future-version"):
        assert "convert the checkpoint again" in msg, msg


def test_intact_copies_load(folders, tmp_path):
    """The mutations above are the only reason for the refusals: the folders load as written."""
    for family in folders:
        G = load_dir(_copy(folders, family, tmp_path))
        assert G.family == family and G.source == {"file": "test"}


@pytest.mark.parametrize("name", TESTVECTORS_NVLABS)
@pytest.mark.parametrize("key,value,match", [
    ("z_dim", "sixty-four", r"z_dim = 'sixty-four' \(str\)"),
    ("z_dim", True, r"z_dim = True \(bool\)"),  # was cast to 1
    ("z_dim", 2.5, r"z_dim = 2.5 \(float\)"),  # was cast to 2
    ("channel_base", None, r"(fmaps|channel)_base = None"),  # was a TypeError
    ("mapping_kwargs", "x", r"mapping_kwargs is a str"),  # was a ValueError
    ("mapping_kwargs", {"num_layers": "two"}, r"mapping_layers = 'two'"),  # was a ValueError
])
def test_bad_init_kwargs_are_named(testvectors, tmp_path, name, key, value, match):
    """``init_kwargs.json`` beside a state dict (``readers.with_init_kwargs``): a bad value is a
    CheckpointError naming it, never a ValueError from ``int()``, never silently cast."""
    import convert

    src = os.path.join(testvectors, name)
    shutil.copy(os.path.join(src, "G_ema.pt"), tmp_path)
    with open(os.path.join(src, "init_kwargs.json")) as f:
        kwargs = json.load(f)
    kwargs[key] = value
    with open(tmp_path / "init_kwargs.json", "w") as f:
        json.dump(kwargs, f)
    with pytest.raises(CheckpointError, match=match) as info:
        convert.to_generator(str(tmp_path / "G_ema.pt"))
    assert "init_kwargs.json" in str(info.value)


def _assert_one_line_exit_2(res, *words):
    assert res.returncode == 2, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("panda-jax: error:"), res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    for w in words:
        assert w in lines[0], lines[0]


def test_cli_fit_refuses_a_damaged_folder(folders, tmp_path):
    """One command for the rest (every MODEL goes through ``pipeline.load_model``): a config that
    disagrees with the parameters is one line, exit 2, and nothing is written."""
    d = _copy(folders, "dcgan", tmp_path)
    _setting(nz=9)(d)
    _params(_nan_in("convs.1.kernel"))(d)  # found second: the shapes are checked before reading
    out = tmp_path / "out"
    out.mkdir()
    res = run_cli("fit", d, "--layer", "1", "--ranks", "2", "2", "--samples", "4", "--steps", "2",
                  "--out", out / "factors.npz")
    _assert_one_line_exit_2(res, "convs.0.kernel is stored as", "convert the checkpoint again")
    assert os.listdir(out) == []
    assert sorted(os.listdir(tmp_path)) == ["dcgan-copy", "out"]


def test_is_a_panda_error():
    assert issubclass(CheckpointError, PandaError)
