"""Outputs never destroy user data: conversion replaces only an earlier conversion (and only
with --force), never a folder it does not own or the source itself; killed runs' staging
folders are cleaned; symbolic links are written through."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import run_cli as run

pytest.importorskip("torch")

from panda_jax import _io  # noqa: E402


def refused(res, *words):
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("panda-jax: error:") and res.stderr.count("\n") == 1, res.stderr
    for w in words:
        assert w in res.stderr, res.stderr


def test_convert_never_replaces_a_user_folder(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}')
    (out / "thesis.tex").write_text("years of work")
    refused(run("convert", "default", out, "--no-samples"), "not a converted model")
    refused(run("convert", "default", out, "--no-samples", "--force"), "not a converted model")
    assert (out / "thesis.tex").read_text() == "years of work"
    assert (out / "config.json").read_text() == '{"my": "settings"}'
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # no staging left behind


def test_convert_replaces_an_earlier_conversion_only_with_force(tmp_path):
    out = tmp_path / "model"
    assert run("convert", "default", out, "--no-samples").returncode == 0
    before = (out / "config.json").read_text()
    assert '"format": "panda-jax generator"' in before
    refused(run("convert", "default", out, "--no-samples"), "--force")
    res = run("convert", "default", out, "--no-samples", "--force")
    assert res.returncode == 0, res.stderr
    assert (out / "config.json").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_convert_refuses_an_output_overlapping_the_source(tmp_path):
    from ported_gens.dcgan import default_checkpoint

    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(default_checkpoint(), hf / "pytorch_model.bin")
    (hf / "config.json").write_text("{}")
    refused(run("convert", hf, hf, "--force"), "overlap")
    refused(run("convert", hf, hf / "sub"), "overlap")
    ckpt = tmp_path / "x" / "w.tar"
    ckpt.parent.mkdir()
    shutil.copy(default_checkpoint(), ckpt)
    refused(run("convert", ckpt, tmp_path / "x", "--force"), "overlap")
    assert (hf / "pytorch_model.bin").is_file() and ckpt.is_file()


def test_symlinked_output_is_written_through(tmp_path):
    target = tmp_path / "real"
    link = tmp_path / "link"
    os.symlink(target, link)
    assert run("convert", "default", link, "--no-samples").returncode == 0
    assert os.path.islink(link) and (target / "config.json").is_file()
    assert run("convert", "default", link, "--no-samples", "--force").returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_stale_staging_of_dead_processes_is_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{_io.STAGING_PREFIX}{dead.pid}-model.abc"
    stale.mkdir()
    (stale / "params").mkdir()
    live = tmp_path / f"{_io.STAGING_PREFIX}{os.getpid()}-other.abc"
    live.mkdir()
    unrelated = tmp_path / ".tmp-user-file"
    unrelated.write_text("x")
    tmp = _io.staging_dir(str(tmp_path / "model"))
    assert not stale.exists() and live.exists() and unrelated.exists() and os.path.isdir(tmp)
