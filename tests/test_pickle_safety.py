"""Reading checkpoints never runs code from them.

NVlabs-style network pickles (persistent objects embedding their module source) load as plain
records; pickles that would run a shell command, import a module, or write a file are refused
with the global named and nothing run; torch files load with ``weights_only=True``.
"""

import collections
import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import _nvlabs_pickle as nv
from convert import readers
from panda_jax.errors import CheckpointError


def _write(path, data: bytes):
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _tiny_generator(source=nv.SOURCE_MARK):
    rng = np.random.RandomState(0)
    fc = nv.network(
        "FullyConnectedLayer",
        source,
        {"weight": rng.randn(4, 3).astype(np.float32), "bias": rng.randn(4).astype(np.float32)},
        weight_gain=np.float64(1 / np.sqrt(3)),
        activation="lrelu",
    )
    layer = nv.network(
        "SynthesisLayer",
        source,
        {"weight": rng.randn(2, 4, 3, 3).astype(np.float32)},
        {"magnitude_ema": np.float32(0.5), "up_filter": None, "down_filter": rng.randn(5, 5).astype(np.float32)},
        in_size=np.broadcast_to(np.asarray(36), [2]),
        sampling_rate=np.float64(16.0),
        padding=[9, 8, 9, 8],
    )
    mapping = nv.network("MappingNetwork", source, {}, {"w_avg": rng.randn(4).astype(np.float32)}, {"fc0": fc})
    return nv.network(
        "Generator",
        source,
        children={"mapping": mapping, "synthesis": layer},
        init_kwargs={"z_dim": 3, "w_dim": 4, "mapping_kwargs": nv.EasyDict(num_layers=1), "channel_base": 128},
        z_dim=3,
        layer_names=["L0_36_2"],
    )


@pytest.fixture(scope="module")
def tiny():
    """(pickle protocol 4 bytes, protocol 2 bytes, the torch state dict) of a small network snapshot."""
    with nv.installed():
        G = _tiny_generator()
        snap = nv.snapshot(G, D=nv.network("Discriminator", nv.SOURCE_MARK, {"b": np.ones(2, np.float32)}))
        data4 = pickle.dumps(snap, protocol=4)
        data2 = pickle.dumps(snap, protocol=2)
    sd = {k: v.numpy() for k, v in G.state_dict().items()}
    return data4, data2, sd


def _check_tiny(rec, sd):
    assert readers.is_record(rec)
    assert rec["class_name"] == "Generator"
    assert rec["init_kwargs"] == {"z_dim": 3, "w_dim": 4, "mapping_kwargs": {"num_layers": 1}, "channel_base": 128}
    assert type(rec["init_kwargs"]["mapping_kwargs"]) is dict
    flat = readers.state_dict(rec)
    assert list(flat) == list(sd)  # same keys, same order as module.state_dict()
    for k in sd:
        assert flat[k].dtype == sd[k].dtype and flat[k].shape == sd[k].shape
        np.testing.assert_array_equal(flat[k], sd[k])
    layer = rec["children"]["synthesis"]
    assert layer["class_name"] == "SynthesisLayer"
    assert layer["buffers"]["up_filter"] is None and "synthesis.up_filter" not in flat
    np.testing.assert_array_equal(layer["attributes"]["in_size"], [36, 36])
    assert layer["attributes"]["sampling_rate"] == 16.0
    assert layer["attributes"]["padding"] == [9, 8, 9, 8]
    assert rec["attributes"]["layer_names"] == ["L0_36_2"]
    assert rec["children"]["mapping"]["children"]["fc0"]["attributes"]["activation"] == "lrelu"


@pytest.mark.parametrize("protocol", [4, 2])
def test_nvlabs_pickle_loads_as_records(tmp_path, tiny, protocol):
    data4, data2, sd = tiny
    path = _write(tmp_path / "net.pkl", data4 if protocol == 4 else data2)
    rec = readers.read(path)  # G_ema by default
    _check_tiny(rec, sd)
    D = readers.read_nvlabs_pickle(path, network="D")
    assert D["class_name"] == "Discriminator" and set(readers.state_dict(D)) == {"b"}
    with pytest.raises(CheckpointError, match=r"no network 'G_mapping'.*\['D', 'G', 'G_ema'\]"):
        readers.read_nvlabs_pickle(path, network="G_mapping")
    whole = readers.load_nvlabs_pickle(path)
    assert whole["training_set_kwargs"] == {"path": "data.zip", "resolution": 64, "xflip": False}
    assert whole["augment_pipe"] is None


def test_numpy_1x_global_names(tmp_path, tiny):
    """Official pickles were written with numpy 1.x: ``numpy.core.multiarray.scalar`` etc."""
    _, data2, sd = tiny
    assert b"cnumpy._core.multiarray\nscalar\n" in data2
    old = data2.replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
    assert old != data2 and b"numpy._core" not in old
    _check_tiny(readers.read(_write(tmp_path / "old.pkl", old)), sd)


def test_embedded_source_is_never_run(tmp_path):
    marker = tmp_path / "source_ran"
    source = f"open({str(marker)!r}, 'w').write('ran')\nimport os\nos.system('touch {marker}')\n"
    with nv.installed():
        data = pickle.dumps(nv.snapshot(_tiny_generator(source)))
    rec = readers.read(_write(tmp_path / "net.pkl", data))
    assert not marker.exists()
    import hashlib

    assert rec["source_sha256"] == hashlib.sha256(source.encode()).hexdigest()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


# ---- malicious pickles -------------------------------------------------------------------


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _payloads(marker, tmp_path):
    """name -> (pickle bytes, the refused global)."""
    evil_mod = tmp_path / "evil_module_for_pickle_test.py"
    evil_mod.write_text(f"open({str(marker)!r}, 'w').write('imported')\nvalue = 1\n")
    return {
        "os.system": (pickle.dumps(_Reduce(os.system, f"touch {marker}")), f"{os.system.__module__}.system"),
        "subprocess": (pickle.dumps(_Reduce(subprocess.call, ["touch", str(marker)])), "subprocess.call"),
        "import": (b"\x80\x04cevil_module_for_pickle_test\nvalue\n.", "evil_module_for_pickle_test.value"),
        "builtins.open": (pickle.dumps(_Reduce(open, str(marker), "w")), f"{open.__module__}.open"),
        "builtins.exec": (pickle.dumps(_Reduce(exec, f"open({str(marker)!r}, 'w').write('x')")), "builtins.exec"),
        "builtins.eval": (pickle.dumps(_Reduce(eval, f"open({str(marker)!r}, 'w').write('x')")), "builtins.eval"),
        "getattr": (pickle.dumps(_Reduce(getattr, _Reduce(__import__, "os"), "system")), "builtins.getattr"),
    }


PAYLOADS = ["os.system", "subprocess", "import", "builtins.open", "builtins.exec", "builtins.eval", "getattr"]


@pytest.mark.parametrize("name", PAYLOADS)
def test_malicious_pickle_refused(tmp_path, monkeypatch, name):
    marker = tmp_path / "pwned"
    monkeypatch.syspath_prepend(str(tmp_path))
    data, refused = _payloads(marker, tmp_path)[name]
    path = _write(tmp_path / "evil.pkl", data)
    with pytest.raises(CheckpointError) as e:
        readers.read(path)
    assert repr(refused) in str(e.value), str(e.value)
    assert "nothing from it was run" in str(e.value)
    assert not marker.exists()
    assert "evil_module_for_pickle_test" not in sys.modules


@pytest.mark.parametrize("name", ["import", "builtins.open", "builtins.exec"])
def test_payloads_are_live(tmp_path, monkeypatch, name):
    """Control: the same bytes do their harm under a plain ``pickle.load``."""
    marker = tmp_path / "pwned"
    monkeypatch.syspath_prepend(str(tmp_path))
    data, _ = _payloads(marker, tmp_path)[name]
    try:
        obj = pickle.loads(data)
        if hasattr(obj, "close"):
            obj.close()
    finally:
        sys.modules.pop("evil_module_for_pickle_test", None)
    assert marker.exists()


def test_malicious_global_inside_a_network_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with nv.installed():
        G = _tiny_generator()
        G.hook = _Reduce(os.system, f"touch {marker}")  # a plain attribute of the persistent object
        data = pickle.dumps(nv.snapshot(G))
    with pytest.raises(CheckpointError, match=f"'{os.system.__module__}.system'"):
        readers.read(_write(tmp_path / "evil.pkl", data))
    assert not marker.exists()


def test_malicious_embedded_storage_refused(tmp_path):
    """The storage bytes are themselves a pickle; torch's weights-only loader refuses globals there."""
    marker = tmp_path / "pwned"
    inner = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)
    data = pickle.dumps(_Reduce(torch.storage._load_from_bytes, inner))
    with pytest.raises(CheckpointError, match="embedded tensor storage"):
        readers.read(_write(tmp_path / "evil.pkl", data))
    assert not marker.exists()


def test_tensor_view_outside_storage_refused(tmp_path):
    buf = io.BytesIO()
    torch.save(torch.zeros(4).storage(), buf, _use_new_zipfile_serialization=False)
    storage = _Reduce(torch.storage._load_from_bytes, buf.getvalue())
    data = pickle.dumps(_Reduce(torch._utils._rebuild_tensor_v2, storage, 0, (1000,), (1,), False, collections.OrderedDict()))
    with pytest.raises(CheckpointError, match="tensor view outside its storage"):
        readers.read(_write(tmp_path / "bad.pkl", data))


def test_persistent_id_and_object_arrays_refused(tmp_path):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if obj == "secret" else None

    f = io.BytesIO()
    P(f).dump({"a": "secret"})
    with pytest.raises(CheckpointError, match="persistent id"):
        readers.read(_write(tmp_path / "pid.pkl", f.getvalue()))
    data = pickle.dumps(np.array([1, "a"], dtype=object))
    with pytest.raises(CheckpointError, match="numpy dtype"):
        readers.read(_write(tmp_path / "obj.pkl", data))


def test_tensorflow_pickle_gets_a_pointer(tmp_path):
    data = b"\x80\x04cdnnlib.tflib.network\nNetwork\n."
    with pytest.raises(CheckpointError, match="TensorFlow StyleGAN pickle.*legacy.py"):
        readers.read(_write(tmp_path / "tf.pkl", data))


def test_not_a_snapshot(tmp_path):
    with pytest.raises(CheckpointError, match="pickled list, not an NVlabs network snapshot"):
        readers.read(_write(tmp_path / "list.pkl", pickle.dumps([1, 2])))
    with pytest.raises(CheckpointError, match="not a readable pickle"):
        readers.read(_write(tmp_path / "cut.pkl", pickle.dumps({"a": list(range(100))})[:40]))


# ---- torch files: weights_only -----------------------------------------------------------


@pytest.mark.parametrize("zipfile", [True, False])
def test_torch_files_weights_only(tmp_path, zipfile):
    sd = {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}
    path = str(tmp_path / "sd.pt")
    torch.save(sd, path, _use_new_zipfile_serialization=zipfile)
    with open(path, "rb") as f:
        assert (f.read(2) == b"PK") == zipfile  # the legacy file is a pickle, told by its magic number
    got = readers.read(path)
    assert set(got) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(got[k], sd[k].numpy())

    marker = tmp_path / "pwned"
    evil = str(tmp_path / "evil.pt")
    torch.save({"w": torch.zeros(1), "x": _Reduce(os.system, f"touch {marker}")}, evil, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(CheckpointError, match="system"):
        readers.read(evil)
    assert not marker.exists()


def test_init_kwargs_beside_a_state_dict(tmp_path):
    path = str(tmp_path / "G_ema.pt")
    torch.save({"w": torch.ones(2)}, path)
    plain = readers.read(path)
    assert getattr(plain, "init_kwargs", None) is None
    (tmp_path / "init_kwargs.json").write_text('{"z_dim": 8, "mapping_kwargs": {"num_layers": 2}}')
    got = readers.read(path)
    assert isinstance(got, readers.StateDict) and got.init_kwargs == {"z_dim": 8, "mapping_kwargs": {"num_layers": 2}}
    np.testing.assert_array_equal(got["w"], [1.0, 1.0])
    (tmp_path / "init_kwargs.json").write_text('{"z_dim": 8,')
    with pytest.raises(CheckpointError, match="init_kwargs.json.*not readable JSON"):
        readers.read(path)
