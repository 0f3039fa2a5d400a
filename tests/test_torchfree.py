"""torch.save files (zip and legacy formats) are read without torch (convert.torchfree), to
exactly what torch.load(weights_only=True) gives; what only torch rebuilds falls back to it."""

import glob
import io
import os
import pickle
import pickletools
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from convert import _safety, readers, torchfree
from ported_gens.dcgan import default_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _torch_path(path):
    """The file read by torch.load, tensors to numpy (the reader's fallback path)."""
    with readers._namespace_as_dict(torch):
        return readers.to_numpy(torch.load(path, map_location="cpu", weights_only=True))


def _same(a, b, where=""):
    if isinstance(a, dict):
        assert type(a) is type(b) and list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, (where, a.dtype, b.dtype)
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert type(a) is type(b) and a == b, (where, a, b)


def _read(path):
    prefix, _ = _safety.check_torch_zip(path)
    return torchfree.read_zip(path, prefix)


def test_every_zip_checkpoint_reads_as_torch_load_does(testvectors):
    files = sorted(f for f in glob.glob(os.path.join(testvectors, "**", "*"), recursive=True)
                   if f.endswith((".pth", ".pt", ".bin")) and zipfile.is_zipfile(f))
    files.append(default_checkpoint())
    assert len(files) >= 9
    for f in files:
        _same(_read(f), _torch_path(f), os.path.basename(f))


def _mixed():
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return base, {
        "f32": torch.randn(3, 5),
        "f64": torch.randn(2, 2, dtype=torch.float64),
        "f16": torch.randn(7).half(),
        "bf16": torch.randn(9).bfloat16(),
        "i64": torch.arange(-5, 5),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "c64": torch.randn(3, dtype=torch.complex64),
        "transposed": base.t(),  # strides (1, 6)
        "slice": base[1:3, 2:5],  # an offset into a storage shared with the two above
        "whole": base,
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.ones(2)),
        "nested": [(1, "a", None), {"k": torch.ones(1)}],
    }


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_dtypes_views_and_shared_storages(tmp_path, zipped):
    base, obj = _mixed()
    path = str(tmp_path / "m.pt")
    torch.save(obj, path, _use_new_zipfile_serialization=zipped)
    assert zipfile.is_zipfile(path) == zipped
    if zipped:
        mine = _read(path)
    else:
        with open(path, "rb") as f:
            mine = torchfree.read_legacy(f, os.path.getsize(path))
    _same(mine, _torch_path(path))
    _same(readers.read_torch(path), mine)
    assert mine["bf16"].dtype == np.float32 and mine["transposed"].flags.c_contiguous
    np.testing.assert_array_equal(mine["slice"], base.numpy()[1:3, 2:5])
    # writable, as the arrays of the torch path are; a partial view is copied out of its storage
    assert all(a.flags.writeable for a in (mine["f32"], mine["slice"], mine["whole"], mine["i8"]))
    assert not np.shares_memory(mine["whole"], mine["slice"])  # the slice is a copy of its view


def test_big_endian_legacy_files(tmp_path):
    """A legacy file from a big-endian machine: its header says little_endian False and each
    storage's bytes are swapped (the element counts stay little-endian, as torch reads them)."""
    want = {"w": torch.randn(3, 4), "v": torch.arange(6, dtype=torch.float32)}
    path = str(tmp_path / "le.pt")
    torch.save(want, path, _use_new_zipfile_serialization=False)
    raw = open(path, "rb").read()
    f = io.BytesIO(raw)
    pickle.load(f), pickle.load(f)
    at_info = f.tell()
    info = pickle.load(f)
    at_main = f.tell()
    end_main = next(pos for op, _, pos in pickletools.genops(f) if op.name == "STOP") + 1
    f.seek(end_main)
    keys = pickle.load(f)
    out = raw[:at_info] + pickle.dumps(dict(info, little_endian=False), protocol=2) + raw[at_main:f.tell()]
    pos = f.tell()
    for _ in keys:
        count = int.from_bytes(raw[pos:pos + 8], "little")
        out += raw[pos:pos + 8] + np.frombuffer(raw[pos + 8:pos + 8 + 4 * count], "<u4").byteswap().tobytes()
        pos += 8 + 4 * count
    assert pos == len(raw)
    big = tmp_path / "be.pt"
    big.write_bytes(out)
    with open(big, "rb") as g:
        got = torchfree.read_legacy(g, len(out))
    _same(got, {k: v.numpy() for k, v in want.items()})


def test_big_endian_files(tmp_path):
    """A file written on a big-endian machine: the byteorder member says so, the bytes are swapped."""
    path = str(tmp_path / "le.pt")
    want = {"w": torch.randn(3, 4), "n": torch.arange(5), "h": torch.randn(2).bfloat16()}
    torch.save(want, path)
    prefix, storages = _safety.check_torch_zip(path)
    big = str(tmp_path / "be.pt")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(big, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            key = info.filename.rsplit("/", 1)[-1]
            if info.filename == f"{prefix}/byteorder":
                data = b"big"
            elif info.filename.startswith(f"{prefix}/data/") and key in storages:
                size = storages[key].stype.itemsize
                data = np.frombuffer(data, f"<u{size}").byteswap().tobytes()
            dst.writestr(info.filename, data)
    _same(_read(big), _read(path))
    np.testing.assert_array_equal(_read(big)["w"], want["w"].numpy())


def test_tensor_metadata_falls_back_to_torch(tmp_path):
    """A conjugate view's bit travels as metadata only torch applies: the reader says so, and
    read_torch gives what the torch path gives."""
    path = str(tmp_path / "c.pt")
    torch.save({"c": torch.randn(3, dtype=torch.complex64).conj(), "r": torch.ones(2)}, path)
    with pytest.raises(torchfree.NeedsTorch, match="conj"):
        _read(path)
    try:
        want = _torch_path(path)
    except _safety.Malformed:
        with pytest.raises(readers.CheckpointError):
            readers.read_torch(path)
    else:
        _same(readers.read_torch(path), want)


def test_converting_a_zip_checkpoint_does_not_import_torch():
    code = (
        "import sys, convert\n"
        "from ported_gens.dcgan import default_checkpoint\n"
        "G = convert.to_generator(default_checkpoint())\n"
        "print('torch' in sys.modules, G.layers[3])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "False", out.stdout
