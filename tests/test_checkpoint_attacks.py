"""Hostile and damaged checkpoints are refused with a CheckpointError, quickly and in little memory.

Each case here was a crash, a hang, a multi-gigabyte allocation or a silent success before the
readers checked files ahead of loading them (:mod:`convert._safety`). The CLI test at the end
checks the user sees one line and exit status 2.
"""

import collections
import io
import os
import pickle
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

import _nvlabs_pickle as nv
from convert import readers
from panda_jax.errors import CheckpointError

BIN = os.path.join(os.path.dirname(sys.executable), "panda-jax")


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _torch_zip(path, pkl: bytes, storages=(), archive="archive") -> str:
    """A zip laid out as torch.save writes one: ``archive/data.pkl`` and ``archive/data/<key>``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{archive}/data.pkl", pkl)
        z.writestr(f"{archive}/byteorder", "little")
        for key, data in dict(storages).items():
            z.writestr(f"{archive}/data/{key}", data)
        z.writestr(f"{archive}/version", "3\n")
    return str(path)


def _with_storage_ids(obj, ids: dict, legacy=False) -> bytes:
    """``obj`` pickled as torch does, with the strings in ``ids`` written as storage persistent ids."""

    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, str) and o in ids:
                return ids[o] + ((None,) if legacy else ())
            return None

    f = io.BytesIO()
    P(f, protocol=2).dump(obj)
    return f.getvalue()


def _legacy_file(main: bytes, keys, raw: bytes) -> bytes:
    """A legacy (non-zip) torch.save stream: magic, protocol, system info, ``main``, keys, data."""
    b = io.BytesIO()
    for head in (0x1950A86A20F9469CFC6C, 1001, dict(protocol_version=1001, little_endian=True,
                                                    type_sizes=dict(short=2, int=4, long=4))):
        pickle.dump(head, b, protocol=2)
    b.write(main)
    pickle.dump(list(keys), b, protocol=2)
    b.write(raw)
    return b.getvalue()


def _tensor(storage_marker, size, stride, offset=0):
    return _Reduce(torch._utils._rebuild_tensor_v2, storage_marker, offset, size, stride, False, collections.OrderedDict())


def _legacy_storage_bytes(n=1) -> bytes:
    """A float storage of ``n`` elements as NVlabs pickles embed it (a legacy torch.save)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = io.BytesIO()
        torch.save(torch.zeros(n).storage(), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _embedded_storage(n=1):
    return _Reduce(torch.storage._load_from_bytes, _legacy_storage_bytes(n))


def _peak_rss_growth(fn):
    """(result or exception, seconds, growth of peak RSS in MB) of calling ``fn``."""
    def hwm():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) // 1024

    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak to the current RSS
    except OSError:
        pass
    before = hwm()
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # returned for the caller to check
        out = e
    return out, time.perf_counter() - t, hwm() - before


def _refused(path, match, reader=readers.read, seconds=10.0, mb=300):
    out, took, grew = _peak_rss_growth(lambda: reader(path))
    assert isinstance(out, CheckpointError), f"{path}: expected CheckpointError, got {out!r}"
    assert took < seconds, f"{path}: refused after {took:.1f} s"
    assert grew < mb, f"{path}: peak memory grew by {grew} MB"
    import re

    assert re.search(match, str(out)), str(out)
    assert "\n" not in str(out)
    return str(out)


# ---- deep nesting ------------------------------------------------------------------------

N_DEEP = 100_000
DEEP = b"\x80\x02" + b"]" * N_DEEP + b"a" * (N_DEEP - 1) + b"."  # [[[[...]]]] 100,000 levels


def test_deeply_nested_pickle(tmp_path):
    _refused(_write(tmp_path / "deep.pkl", DEEP), "nesting deeper than 100 levels")


def test_deeply_nested_torch_files(tmp_path):
    _refused(_torch_zip(tmp_path / "deep.pth", DEEP), "nesting deeper than 100 levels")
    _refused(_write(tmp_path / "deep.pt", _legacy_file(DEEP, [], b"")), "nesting deeper than 100 levels")


def test_deep_dicts_and_self_reference(tmp_path):
    d = b"\x80\x02" + b"}X\x01\x00\x00\x00k" * 5000 + b"}" + b"s" * 5000 + b"."  # {"k": {"k": ...}}
    _refused(_torch_zip(tmp_path / "dicts.pth", d), "nesting deeper")
    loop = b"\x80\x02]q\x00h\x00a."  # l = []; l.append(l)
    _refused(_torch_zip(tmp_path / "loop.pth", loop), "contains itself")
    _refused(_write(tmp_path / "loop.pkl", loop), "contains itself")


def test_shared_references_are_not_walked_exponentially(tmp_path):
    """60 levels of ``[x, x]``: 2**60 paths, 60 objects. Read quickly, sharing kept."""
    x: list = []
    for _ in range(60):
        x = [x, x]
    path = _torch_zip(tmp_path / "dag.pth", pickle.dumps(x, protocol=2))
    out, took, _ = _peak_rss_growth(lambda: readers.read(path))
    assert isinstance(out, list) and out[0] is out[1] and took < 5
    _refused(_write(tmp_path / "dag.pkl", pickle.dumps(x, protocol=4)), "pickled list, not an NVlabs network")


# ---- numpy and fake NVlabs records ---------------------------------------------------------


def test_bare_numpy_reconstruct(tmp_path):
    data = b"\x80\x04cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R."
    _refused(_write(tmp_path / "np.pkl", data), "bare numpy _reconstruct")
    inside = b"\x80\x04}X\x01\x00\x00\x00a" + data[2:-1] + b"s."
    _refused(_write(tmp_path / "np2.pkl", inside), "bare numpy _reconstruct")
    state_twice = data[:-1] + b"(K\x01)h\x00\x89C\x00tb" + b"."
    _refused(_write(tmp_path / "np3.pkl", state_twice), "not a readable pickle|numpy")


def _meta(**change):
    """An NVlabs persistent object, as ``torch_utils.persistence`` pickles it, with fields changed."""
    state = {"_parameters": {"w": np.ones(2, np.float32)}, "_buffers": {}, "_modules": {}, "_init_kwargs": {},
             "_init_args": (), "training": False}
    state.update(change.pop("state", {}))
    meta = dict(type="class", version=6, module_src=nv.SOURCE_MARK, class_name="Generator", state=state)
    meta.update(change)
    return meta


def _persistent(meta):
    with nv.installed():
        return pickle.dumps({"G_ema": _Reduce(nv._reconstruct_persistent_obj, meta)}, protocol=4)


FAKE_RECORDS = {
    "meta not a dict": (["not", "a", "dict"], "persistent object without a meta dict"),
    "type not class": (_meta(type="module"), "persistent object of type 'module'"),
    "class name not an identifier": (_meta(class_name="os.system('x')"), "class name"),
    "version a string": (_meta(version="6; rm"), "version"),
    "source not text": (_meta(module_src=b"bytes"), "source"),
    "state a list": (_meta() | {"state": [1, 2]}, "without a state dict"),
    "parameter a string": (_meta(state={"_parameters": {"w": "weights"}}), r"Generator._parameters\['w'\]"),
    "parameters a list": (_meta(state={"_parameters": [np.ones(2, np.float32)]}), "Generator._parameters"),
    "child a plain dict": (
        _meta(state={"_modules": {"m": {"kind": "nvlabs_network", "children": {}, "parameters": {}, "buffers": {}}}}),
        r"_modules\['m'\] \(not a network module\)"),
    "init_args an int": (_meta(state={"_init_args": 7}), "_init_args"),
    "init_kwargs a list": (_meta(state={"_init_kwargs": [1]}), "_init_kwargs"),
    "state key not text": (_meta(state={3: 4}), "non-text key"),
    "non-persistent set of ints": (_meta(state={"_non_persistent_buffers_set": {1, 2}}), "_non_persistent_buffers_set"),
}


@pytest.mark.parametrize("name", list(FAKE_RECORDS))
def test_fake_nvlabs_records(tmp_path, name):
    meta, match = FAKE_RECORDS[name]
    _refused(_write(tmp_path / "fake.pkl", _persistent(meta)), match)


def test_a_dict_that_looks_like_a_record_is_not_a_network(tmp_path):
    forged = {"G_ema": {"kind": "nvlabs_network", "children": "x", "parameters": 5, "buffers": None, "class_name": "G"}}
    _refused(_write(tmp_path / "forged.pkl", pickle.dumps(forged, protocol=4)), r"'G_ema' is a dict, not a network")
    with pytest.raises(CheckpointError, match="malformed"):
        readers.state_dict({"kind": "nvlabs_network", "children": {"a": {"kind": "x"}}, "parameters": {}, "buffers": {}})


def test_shared_modules_cannot_multiply(tmp_path):
    """Modules that share children 40 levels deep would flatten to 2**40 tensors."""
    with nv.installed():
        m = nv.network("Leaf", nv.SOURCE_MARK, {"w": np.ones(1, np.float32)})
        for _ in range(40):
            m = nv.network("Pair", nv.SOURCE_MARK, children={"a": m, "b": m})
        data = pickle.dumps({"G_ema": m}, protocol=4)
    _refused(_write(tmp_path / "pairs.pkl", data), "modules shared many times|more than 100000 modules")


# ---- sizes declared against the bytes present --------------------------------------------


def test_stride0_view_in_a_network_pickle(tmp_path):
    """424 bytes declaring a 20000 x 20000 float tensor over a one-element storage."""
    data = pickle.dumps(_tensor(_embedded_storage(1), (20000, 20000), (0, 0)))
    assert len(data) < 500
    _refused(_write(tmp_path / "stride0.pkl", data), r"more elements \(400000000\) than its storage \(1\)", mb=100)


def test_stride0_view_in_torch_files(tmp_path):
    ids = {"S": ("storage", torch.FloatStorage, "0", "cpu", 1)}
    pkl = _with_storage_ids({"w": _tensor("S", (20000, 20000), (0, 0))}, ids)
    _refused(_torch_zip(tmp_path / "stride0.pth", pkl, {"0": b"\0" * 4}), "more elements", mb=100)
    pkl = _with_storage_ids({"w": _tensor("S", (20000, 20000), (0, 0))}, ids, legacy=True)
    legacy = _legacy_file(pkl, ["0"], (1).to_bytes(8, "little") + b"\0" * 4)
    _refused(_write(tmp_path / "stride0.pt", legacy), "more elements", mb=100)


def test_view_outside_storage_and_bad_sizes(tmp_path):
    ids = {"S": ("storage", torch.FloatStorage, "0", "cpu", 4)}
    cases = {
        "outside": (_tensor("S", (5,), (1,)), "outside its storage"),
        "offset": (_tensor("S", (2,), (1,), offset=3), "outside its storage"),
        "negative": (_tensor("S", (2,), (-1,)), "stride"),
        "huge dim": (_tensor("S", (1 << 62,), (1,)), "size"),
        "stride length": (_tensor("S", (2, 2), (1,)), "stride"),
    }
    for name, (t, match) in cases.items():
        pkl = _with_storage_ids({"w": t}, ids)
        _refused(_torch_zip(tmp_path / f"{name}.pth", pkl, {"0": b"\0" * 16}), match)


def test_declared_storage_larger_than_the_file(tmp_path):
    ids = {"S": ("storage", torch.FloatStorage, "0", "cpu", 1 << 34)}
    pkl = _with_storage_ids({"w": _tensor("S", (4,), (1,))}, ids)
    _refused(_torch_zip(tmp_path / "big.pth", pkl, {"0": b"\0" * 16}), "member of 16 bytes, 68719476736 declared")
    pkl = _with_storage_ids({"w": _tensor("S", (4,), (1,))}, ids, legacy=True)
    legacy = _legacy_file(pkl, ["0"], (4).to_bytes(8, "little") + b"\0" * 16)
    _refused(_write(tmp_path / "big.pt", legacy), "4 elements stored, 17179869184 declared", mb=100)
    honest_header = _legacy_file(pkl, ["0"], (1 << 34).to_bytes(8, "little") + b"\0" * 16)
    _refused(_write(tmp_path / "big2.pt", honest_header), "the file ends before its data", mb=100)
    pkl = _with_storage_ids({"w": _tensor("S", (4,), (1,))}, {"S": ("storage", torch.FloatStorage, "0", "cpu", 4)})
    _refused(_torch_zip(tmp_path / "missing.pth", pkl, {}), "no member data/0")


def test_one_storage_referenced_many_times_is_bounded(tmp_path):
    """A 256 KB storage rebuilt 20,000 times would be 5 GB of copies from a 1 MB file."""
    st = _embedded_storage(1 << 16)
    data = pickle.dumps([_tensor(st, (1 << 16,), (1,)) for _ in range(20000)], protocol=4)
    assert len(data) < 2 << 20
    _refused(_write(tmp_path / "many.pkl", data), "more memory than the file could hold", mb=400)


def test_embedded_storage_declaring_more_than_it_holds(tmp_path):
    raw = bytearray(_legacy_storage_bytes(4))
    count_at = raw.rindex((4).to_bytes(8, "little"))
    raw[count_at:count_at + 8] = (1 << 33).to_bytes(8, "little")
    data = pickle.dumps(_Reduce(torch.storage._load_from_bytes, bytes(raw)))
    _refused(_write(tmp_path / "emb.pkl", data), "embedded tensor storage")


# ---- damaged zip files -------------------------------------------------------------------


def _flip_in_member(src, dst, member_suffix, at=0.5):
    data = bytearray(open(src, "rb").read())
    with zipfile.ZipFile(src) as z:
        info = max((i for i in z.infolist() if i.filename.endswith(member_suffix)), key=lambda i: i.file_size)
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little"), \
        int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    pos = start + int(info.file_size * at)
    data[pos] ^= 0x10
    return _write(dst, bytes(data))


@pytest.mark.parametrize("member", ["data.pkl", "/data/0", "/data/1"])
def test_bit_flipped_genforce_checkpoint(testvectors, tmp_path, member):
    src = os.path.join(testvectors, "pggan_genforce", "checkpoint.pth")
    readers.read(src)  # the original reads
    bad = _flip_in_member(src, tmp_path / "flipped.pth", member)
    _refused(bad, r"Bad CRC-32 .*damaged")


def test_bit_flipped_dcgan_tar(tmp_path):
    from ported_gens import dcgan

    bad = _flip_in_member(dcgan.default_checkpoint(), tmp_path / "weights.tar", "/data/0", at=0.3)
    _refused(bad, "Bad CRC-32")


def test_compressed_or_repeated_members(tmp_path):
    pkl = pickle.dumps({"a": 1}, protocol=2)
    path = str(tmp_path / "deflated.pth")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pkl)
    _refused(path, "compressed")
    import warnings

    path = str(tmp_path / "twice.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pkl)
            z.writestr("archive/data.pkl", pickle.dumps({"a": 2}, protocol=2))
    _refused(path, "repeated member names")


# ---- weights: NaN/inf and integers ---------------------------------------------------------


def _sd(**change):
    sd = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3), "bn.num_batches_tracked": torch.tensor(5)}
    sd.update(change)
    return sd


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_are_named(tmp_path, bad):
    w = torch.randn(3, 2)
    w[1, 1] = bad
    path = str(tmp_path / "sd.pt")
    torch.save({"generator": _sd(**{"a.weight": w})}, path)
    _refused(path, r"tensor 'generator.a.weight' holds 1 NaN/inf value")
    torch.save(_sd(**{"a.bias": torch.tensor([1.0, bad, bad], dtype=torch.float16)}), path, _use_new_zipfile_serialization=False)
    _refused(path, r"tensor 'a.bias' holds 2 NaN/inf values")


def test_integer_weights_are_refused_by_check_weights(tmp_path):
    sd = {k: v.numpy() for k, v in _sd().items()}
    readers.check_weights(sd)  # num_batches_tracked may be an integer
    for dtype in (np.int64, np.int32, np.uint8, np.bool_):
        bad = dict(sd, **{"a.weight": sd["a.weight"].astype(dtype)})
        with pytest.raises(CheckpointError, match=f"tensor 'a.weight' is {np.dtype(dtype)}, not floating point"):
            readers.check_weights(bad, "sd.pt")
    with pytest.raises(CheckpointError, match="'a.bias' is a str, not a tensor"):
        readers.check_weights(dict(sd, **{"a.bias": "x"}))
    readers.check_weights(dict(sd, step=np.array(3)), integer_keys=("num_batches_tracked", "step"))
    # a state dict with its constructor arguments beside it is a network's weights: checked on reading
    path = str(tmp_path / "G_ema.pt")
    torch.save(_sd(**{"a.weight": torch.ones(3, 2, dtype=torch.int64)}), path)
    assert isinstance(readers.read(path), dict)  # no sidecar: a generic torch file, dtypes left to the family
    (tmp_path / "init_kwargs.json").write_text("{}")
    _refused(path, "tensor 'a.weight' is int64, not floating point")


def test_integer_and_nan_weights_in_network_pickles_and_hf_folders(tmp_path):
    with nv.installed():
        G = nv.network("Generator", nv.SOURCE_MARK, {"w": np.ones(2, np.int32)})
        data = pickle.dumps(nv.snapshot(G), protocol=4)
        G2 = nv.network("Generator", nv.SOURCE_MARK, {}, {"w_avg": np.array([0.0, np.nan], np.float32)})
        data2 = pickle.dumps(nv.snapshot(G2), protocol=4)
    _refused(_write(tmp_path / "int.pkl", data), r"\(G_ema\): tensor 'w' is int32, not floating point")
    _refused(_write(tmp_path / "nan.pkl", data2), r"tensor 'G(_ema)?.buffers.w_avg' holds 1 NaN/inf value")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    torch.save({"x.weight": torch.ones(2, dtype=torch.int16)}, hf / "pytorch_model.bin")
    _refused(str(hf), "tensor 'x.weight' is int16")


# ---- not a checkpoint at all ---------------------------------------------------------------


def test_truncated_files(testvectors, tmp_path):
    src = open(os.path.join(testvectors, "stylegan2_genforce", "checkpoint.pth"), "rb").read()
    for cut in (10, 1000, len(src) // 2, len(src) - 10):
        _refused(_write(tmp_path / "cut.pth", src[:cut]), "not a readable PyTorch checkpoint")
    legacy = io.BytesIO()
    torch.save({"w": torch.ones(100)}, legacy, _use_new_zipfile_serialization=False)
    for cut in (20, 200, len(legacy.getvalue()) - 8):
        _refused(_write(tmp_path / "cut.pt", legacy.getvalue()[:cut]), "not a readable PyTorch checkpoint")
    with nv.installed():
        data = pickle.dumps(nv.snapshot(nv.network("Generator", nv.SOURCE_MARK, {"w": np.ones(64, np.float32)})))
    for cut in (3, 100, len(data) // 2, len(data) - 1):
        _refused(_write(tmp_path / "cut.pkl", data[:cut]), "not a readable pickle|not a well-formed")


def test_empty_files_and_folders(tmp_path):
    empty = _write(tmp_path / "empty.pth", b"")
    for reader in (readers.read, readers.read_torch, readers.read_nvlabs_pickle):
        _refused(empty, "is empty", reader=reader)
    folder = tmp_path / "checkpoint.pth"
    folder.mkdir()
    _refused(str(folder), "is a folder", reader=readers.read_torch)
    _refused(str(folder), "is a folder", reader=readers.read_nvlabs_pickle)
    _refused(str(folder), "has no pytorch_model.bin")  # read() takes a folder for a HuggingFace model
    _refused(str(tmp_path / "missing.pth"), "does not exist")


def test_numpy_and_text_files(tmp_path):
    np.save(tmp_path / "a.npy", np.ones(3, np.float32))
    _refused(str(tmp_path / "a.npy"), r"numpy \.npy array")
    np.savez(tmp_path / "f.npz", appearance=np.ones(3), parts=np.ones(3))
    _refused(str(tmp_path / "f.npz"), r"this holds appearance.npy, parts.npy \(a numpy .npz archive\?\)")
    _refused(_write(tmp_path / "notes.pth", b"these are my notes\n"), "looks like text")
    _refused(_write(tmp_path / "cfg.pth", b'{"z_dim": 512}'), "looks like JSON")
    _refused(_write(tmp_path / "zeros.pth", b"\0" * 1000), "neither a PyTorch checkpoint nor a pickle")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("[" * 100000)
    torch.save({"x": torch.ones(1)}, hf / "pytorch_model.bin")
    _refused(str(hf), "config.json' is not valid JSON")


def test_legacy_torch_file_still_reads(tmp_path):
    """The checks accept what torch.save writes in its legacy format, shared storages included."""
    base = torch.arange(12, dtype=torch.float32)
    sd = {"a": base[:6].view(2, 3), "b": base[6:], "c": torch.ones(2, dtype=torch.float64), "n": torch.tensor(3)}
    path = str(tmp_path / "legacy.pt")
    torch.save(sd, path, _use_new_zipfile_serialization=False)
    got = readers.read(path)
    for k, v in sd.items():
        np.testing.assert_array_equal(got[k], v.numpy())


# ---- the command line ----------------------------------------------------------------------


def test_cli_one_line_exit_2(tmp_path):
    bad = _write(tmp_path / "deep.pkl", DEEP)
    r = subprocess.run([BIN, "convert", bad, str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("panda-jax: error:") and "nesting deeper" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
