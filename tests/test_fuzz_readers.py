"""A deterministic mutation fuzzer over every reader: damaged input loads or is a PandaError.

Seeds are valid files of each format the project reads: a genforce ``.pth`` (torch zip), an
NVlabs network ``.pkl``, a HuggingFace BigGAN folder (``config.json`` + ``pytorch_model.bin``),
a rosinality ``.pt``, the embedded DCGAN's ``weights.tar``, a factors ``.npz``, the original's
``Uc``/``Us`` ``.npy`` pair, a converted model folder's ``config.json`` and an NVlabs
``init_kwargs.json``. Each case mutates one seed (bit flips, overwrites with interesting values,
truncation, chunk duplication/deletion/insertion; inside zip files a member is mutated and the
archive rewritten with correct CRC-32s, so the pickle and npy parsers themselves are reached;
JSON is mutated structurally: values of other types and sizes, missing and unknown keys) and
runs the reader, and for configs the code that interprets them (config inference and the
shape-only model). A case passes when it loads or raises a ``PandaError`` subclass; any other
exception fails, as does a case over 10 s or one whose peak memory grows by more than 1 GiB.

The cases run in one subprocess (imports paid once) under ``RLIMIT_AS`` (its size after the
imports plus 3 GiB): an allocation that large fails there with MemoryError, and a PandaError
caused by one counts as a failure too. Canary cases (pickles calling ``os.system`` or
``builtins.eval``, directly or swapped into a valid pickle) must be refused naming the global,
and their marker file must not appear.

The default run tries ``FAST`` cases per format; the ``slow`` variant runs the same code with
``SLOW`` per format. A single case is reproduced by
``python tests/test_fuzz_readers.py FORMAT INDEX`` (it prints the mutations and the outcome).
"""

from __future__ import annotations

import io
import json
import os
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTVECTORS = os.environ.get("PANDA_TESTVECTORS", os.path.normpath(os.path.join(HERE, "..", "..", "shared", "testvectors")))

FORMATS = ("genforce_pth", "nvlabs_pkl", "biggan_hf", "rosinality_pt", "dcgan_tar", "factors_npz", "original_npy",
           "model_config", "init_kwargs", "directions")
FAST = 30  # per format: 300 cases in the default run
SLOW = 1000
CASE_SECONDS = 10.0
CASE_MEMORY = 1 << 30
RLIMIT_SLACK = 3 << 30
SEED = 20240607


# ---- mutations (pure functions of a random.Random and bytes) ---------------------------------

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x2E, 0x28, 0x29)
INTERESTING_INTS = (0, 1, -1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 40, (1 << 63) - 1)


def _pos(rng: random.Random, n: int) -> int:
    """A position, biased towards the headers at both ends (zip central directory, npy header)."""
    if n <= 1:
        return 0
    r = rng.random()
    if r < 0.4:
        return rng.randrange(min(n, 256))
    if r < 0.6:
        return rng.randrange(max(0, n - 256), n)
    return rng.randrange(n)


def mutate_bytes(rng: random.Random, data: bytes, ops: list, max_ops: int = 3) -> bytes:
    """Bit flips, interesting values, truncation, chunk duplication/deletion/insertion."""
    b = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.choices(("flip", "byte", "int", "truncate", "dup", "delete", "insert"), (5, 3, 3, 1, 2, 2, 1))[0]
        n = len(b)
        if n == 0:
            b += bytes([rng.randrange(256)])
            ops.append("grow-empty")
            continue
        p = _pos(rng, n)
        if op == "flip":
            bit = rng.randrange(8)
            b[p] ^= 1 << bit
            ops.append(f"flip@{p}.{bit}")
        elif op == "byte":
            v = rng.choice(INTERESTING_BYTES)
            b[p] = v
            ops.append(f"byte@{p}={v:#x}")
        elif op == "int":
            width = rng.choice((2, 4, 8))
            v = rng.choice(INTERESTING_INTS) & ((1 << (8 * width)) - 1)
            b[p:p + width] = v.to_bytes(width, rng.choice(("little", "big")))
            ops.append(f"int{width}@{p}={v:#x}")
        elif op == "truncate":
            del b[p:]
            ops.append(f"truncate@{p}")
        elif op == "dup":
            k = rng.randint(1, min(64, n - p))
            q = rng.randrange(n + 1)
            b[q:q] = b[p:p + k]
            ops.append(f"dup[{p}:{p + k}]@{q}")
        elif op == "delete":
            k = rng.randint(1, min(64, n - p))
            del b[p:p + k]
            ops.append(f"delete[{p}:{p + k}]")
        else:
            k = rng.randint(1, 16)
            b[p:p] = bytes(rng.randrange(256) for _ in range(k))
            ops.append(f"insert{k}@{p}")
    return bytes(b)


# Globals a mutated pickle may name instead of its own: allowed ones (wrong arguments) and
# dangerous ones (must be refused by name).
SWAP_GLOBALS = (
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"), ("torch", "HalfStorage"), ("torch", "LongStorage"), ("torch", "Size"),
    ("builtins", "set"), ("_codecs", "encode"), ("numpy.core.multiarray", "_reconstruct"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("torch_utils.persistence", "_reconstruct_persistent_obj"),
    ("os", "system"), ("builtins", "eval"), ("builtins", "getattr"), ("subprocess", "Popen"),
)
_GLOBAL = re.compile(rb"c([A-Za-z_][\w.]*)\n([A-Za-z_][\w.]*)\n")


def mutate_pickle(rng: random.Random, data: bytes, ops: list) -> bytes:
    """A pickle mutated at the byte level, or one of its globals swapped for another."""
    found = list(_GLOBAL.finditer(data))
    if found and rng.random() < 0.3:
        m = rng.choice(found)
        mod, name = rng.choice(SWAP_GLOBALS)
        ops.append(f"global@{m.start()}:{m.group(1).decode()}.{m.group(2).decode()}->{mod}.{name}")
        return data[:m.start()] + b"c" + mod.encode() + b"\n" + name.encode() + b"\n" + data[m.end():]
    return mutate_bytes(rng, data, ops, max_ops=2)


_NPY_SHAPE = re.compile(rb"'shape': \(([^)]*)\)")
NPY_DIMS = ("0", "1", "-1", "3", "1000000000", "4611686018427387904", "99999999999999999999", "2, 2, 2, 2", "")


def mutate_npy(rng: random.Random, data: bytes, ops: list) -> bytes:
    """An .npy file: its header's shape rewritten (declared sizes far beyond the data), its
    dtype or order changed, or byte mutations."""
    m = _NPY_SHAPE.search(data[:512])
    r = rng.random()
    if m and r < 0.35:
        dims = ", ".join(rng.choice(NPY_DIMS) for _ in range(rng.randint(1, 3))) or ""
        ops.append(f"npy-shape=({dims})")
        return data[:m.start(1)] + dims.encode() + (b"," if "," not in dims and dims else b"") + data[m.end(1):]
    if r < 0.5 and b"'descr': '" in data[:512]:
        new = rng.choice((b"<f8", b"|O", b"<c16", b"V8", b"<U4", b">f4", b"<f2", b"|b1", b"<i8"))
        ops.append(f"npy-descr={new.decode()}")
        return re.sub(rb"'descr': '[^']*'", b"'descr': '" + new + b"'", data, count=1)
    if r < 0.55:
        ops.append("npy-fortran")
        return data.replace(b"'fortran_order': False", b"'fortran_order': True", 1)
    return mutate_bytes(rng, data, ops, max_ops=2)


def zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def write_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A stored (uncompressed) zip with correct CRC-32s; repeated names are kept."""
    out = io.BytesIO()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" when a mutation repeats a member
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            for name, body in members:
                z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), body)
    return out.getvalue()


def mutate_zip(rng: random.Random, data: bytes, ops: list) -> bytes:
    """Half the time the raw bytes (the zip parser and the CRC checks); else one member's
    content (data.pkl most often, npy members of an npz) or the member list, rewritten with
    correct CRCs so the content reaches its own parser."""
    if rng.random() < 0.3:
        return mutate_bytes(rng, data, ops)
    members = zip_members(data)
    r = rng.random()
    if r < 0.1 and len(members) > 1:
        i = rng.randrange(len(members))
        op = rng.choice(("drop", "dup", "rename", "swap"))
        ops.append(f"member-{op}:{members[i][0]}")
        if op == "drop":
            del members[i]
        elif op == "dup":
            members.insert(rng.randrange(len(members) + 1), members[i])
        elif op == "rename":
            name = members[i][0]
            members[i] = (rng.choice((name + "x", name.replace("/", "/../", 1), "other/" + name.split("/", 1)[-1],
                                      name.upper())), members[i][1])
        else:
            j = rng.randrange(len(members))
            members[i], members[j] = (members[i][0], members[j][1]), (members[j][0], members[i][1])
        return write_zip(members)
    pkl = [i for i, (n, _) in enumerate(members) if n.endswith(".pkl")]
    npy = [i for i, (n, _) in enumerate(members) if n.endswith(".npy")]
    if pkl and r < 0.85:
        i = pkl[0]
    elif npy:
        i = rng.choice(npy)
    else:
        i = rng.randrange(len(members))
    name, body = members[i]
    ops.append(f"in:{name}")
    if name.endswith(".pkl"):
        body = mutate_pickle(rng, body, ops)
    elif name.endswith(".npy"):
        body = mutate_npy(rng, body, ops)
    else:
        body = mutate_bytes(rng, body, ops, max_ops=2)
    members[i] = (name, body)
    return write_zip(members)


def _deep(n):
    x = []
    for _ in range(n):
        x = [x]
    return x


JSON_VALUES = ("sixty-four", "", -1, 0, 1, 2.5, -0.0, 10**6, 10**30, 1e308, True, False, None, [], {}, [1, 2, 3],
               {"a": 1}, [[True, 16, 8]], "x" * 10_000)


def mutate_json_obj(rng: random.Random, obj, ops: list):
    """A JSON value with one part replaced, deleted, added, renamed or nested very deeply."""
    if not isinstance(obj, (dict, list)) or not obj or rng.random() < 0.1:
        v = rng.choice(JSON_VALUES + ("deep",))
        ops.append(f"json-root={str(v)[:20]}")
        return _deep(5000) if v == "deep" else v
    # walk down a random path
    node, path = obj, []
    while True:
        keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        k = rng.choice(keys)
        child = node[k]
        if isinstance(child, (dict, list)) and child and rng.random() < 0.6:
            node, path = child, path + [k]
            continue
        op = rng.choices(("value", "delete", "add", "rename", "deep"), (6, 2, 1, 1, 1))[0]
        where = ".".join(map(str, path + [k]))
        if op == "value":
            v = rng.choice(JSON_VALUES)
            node[k] = v
            ops.append(f"json:{where}={str(v)[:20]}")
        elif op == "delete":
            del node[k]
            ops.append(f"json-del:{where}")
        elif op == "add" and isinstance(node, dict):
            node["bogus_setting"] = rng.choice(JSON_VALUES)
            ops.append(f"json-add:{'.'.join(map(str, path))}.bogus_setting")
        elif op == "rename" and isinstance(node, dict):
            node[str(k).upper() + "_"] = node.pop(k)
            ops.append(f"json-rename:{where}")
        else:
            node[k] = _deep(rng.choice((50, 5000)))
            ops.append(f"json-deep:{where}")
        break
    return obj


def mutate_json(rng: random.Random, data: bytes, ops: list) -> bytes:
    if rng.random() < 0.25:
        return mutate_bytes(rng, data, ops, max_ops=2)
    try:
        obj = json.loads(data)
    except ValueError:
        return mutate_bytes(rng, data, ops, max_ops=2)
    obj = mutate_json_obj(rng, obj, ops)
    try:
        text = json.dumps(obj)
    except (RecursionError, ValueError):
        text = "[" * 5000 + "]" * 5000
    return text.encode()


# ---- the worker: seeds, cases, the loop ----------------------------------------------------


def _write(path, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class Formats:
    """The seeds (built once in ``root``) and, per format, how a case is made and loaded."""

    def __init__(self, root: str):
        self.root = root
        self.seeds: dict[str, dict[str, bytes]] = {}
        tv = TESTVECTORS
        self.seeds["genforce_pth"] = {"checkpoint.pth": _read(os.path.join(tv, "pggan_genforce", "checkpoint.pth"))}
        self.seeds["rosinality_pt"] = {
            "checkpoint.pt": _read(os.path.join(tv, "stylegan2_rosinality", "checkpoint_weights_only.pt"))}
        from ported_gens.dcgan import default_checkpoint

        self.seeds["dcgan_tar"] = {"weights.tar": _read(default_checkpoint())}
        self.seeds["nvlabs_pkl"] = {"network.pkl": self._nvlabs_pickle()}
        hf = os.path.join(tv, "biggan_deep")
        self.seeds["biggan_hf"] = {"config.json": _read(os.path.join(hf, "config.json")),
                                   "pytorch_model.bin": _read(os.path.join(hf, "pytorch_model.bin"))}
        nv = os.path.join(tv, "stylegan2_ada_nvlabs")
        self.seeds["init_kwargs"] = {"init_kwargs.json": _read(os.path.join(nv, "init_kwargs.json")),
                                     "G_ema.pt": _read(os.path.join(nv, "G_ema.pt"))}
        self._factor_seeds()
        self._direction_seeds()
        self._model_seed()
        # Unmutated files are linked, not copied, into each case's folder.
        self.seed_dir = os.path.join(root, "seeds")
        for fmt, files in self.seeds.items():
            os.makedirs(os.path.join(self.seed_dir, fmt), exist_ok=True)
            for name, data in files.items():
                _write(os.path.join(self.seed_dir, fmt, name), data)

    @staticmethod
    def _nvlabs_pickle() -> bytes:
        import pickle

        import numpy as np

        import _nvlabs_pickle as nv

        rng = np.random.RandomState(0)
        with nv.installed():
            fc = nv.network("FullyConnectedLayer", nv.SOURCE_MARK,
                            {"weight": rng.randn(4, 3).astype(np.float32), "bias": rng.randn(4).astype(np.float32)},
                            weight_gain=np.float64(0.5), activation="lrelu")
            mapping = nv.network("MappingNetwork", nv.SOURCE_MARK, {}, {"w_avg": rng.randn(4).astype(np.float32)},
                                 {"fc0": fc})
            layer = nv.network("SynthesisLayer", nv.SOURCE_MARK, {"weight": rng.randn(2, 4, 3, 3).astype(np.float32)},
                               {"magnitude_ema": np.float32(0.5)}, in_size=np.asarray([36, 36]), padding=[9, 8, 9, 8])
            G = nv.network("Generator", nv.SOURCE_MARK, children={"mapping": mapping, "synthesis": layer},
                           init_kwargs={"z_dim": 3, "w_dim": 4, "mapping_kwargs": nv.EasyDict(num_layers=1)}, z_dim=3)
            snap = nv.snapshot(G, D=nv.network("Discriminator", nv.SOURCE_MARK, {"b": np.ones(2, np.float32)}))
            return pickle.dumps(snap, protocol=4)

    def _factor_seeds(self):
        import numpy as np

        import panda_jax as pj

        rng = np.random.default_rng(0)
        F = pj.Factors(rng.random((8, 3), dtype=np.float32), rng.random((16, 2), dtype=np.float32), 4, 4,
                       {"model": "default", "layer": 2})
        d = tempfile.mkdtemp(dir=self.root)
        self.seeds["factors_npz"] = {"factors.npz": _read(pj.save_factors(os.path.join(d, "factors.npz"), F))}
        uc, us = pj.save_original(d, F)
        self.uc_name, self.us_name = os.path.basename(uc), os.path.basename(us)
        self.seeds["original_npy"] = {self.uc_name: _read(uc), self.us_name: _read(us)}

    def _direction_seeds(self):
        """Published latent directions: GANSpace's and SeFa's .npz, ReSeFa's .npy."""
        import numpy as np

        rng = np.random.default_rng(1)
        f = io.BytesIO()
        np.savez(f, lat_comp=rng.standard_normal((3, 1, 8)).astype(np.float32),
                 lat_mean=rng.standard_normal((1, 8)).astype(np.float32), lat_stdev=np.ones(3, np.float32),
                 var_ratio=np.asarray([0.5, 0.3, 0.2], np.float32))
        ganspace = f.getvalue()
        f = io.BytesIO()
        np.savez(f, layers=np.asarray([0, 1]), boundaries=rng.standard_normal((8, 8)).astype(np.float32),
                 values=np.arange(8, dtype=np.float32))
        sefa = f.getvalue()
        f = io.BytesIO()
        np.save(f, rng.standard_normal((1, 8)).astype(np.float32))
        self.seeds["directions"] = {"ganspace_ipca_c3.npz": ganspace, "sefa.npz": sefa, "resefa.npy": f.getvalue()}

    def _model_seed(self):
        from helpers import small_generator
        from ported_gens.base import save_generator

        self.model_params = save_generator(small_generator("dcgan"), os.path.join(self.root, "model")) + "/params"
        self.seeds["model_config"] = {"config.json": _read(os.path.join(self.root, "model", "config.json"))}

    # -- a case: mutate one file of the seed, link the others --------------------------------
    def make(self, fmt: str, rng: random.Random, case_dir: str, ops: list) -> str:
        files = self.seeds[fmt]
        os.makedirs(case_dir)
        if fmt == "biggan_hf":
            target = "config.json" if rng.random() < 0.6 else "pytorch_model.bin"
        elif fmt == "init_kwargs":
            target = "init_kwargs.json"
        else:
            target = rng.choice(sorted(files))
        ops.append(f"file:{target}")
        data = files[target]
        if target.endswith(".json"):
            data = mutate_json(rng, data, ops)
        elif target.endswith(".npy"):
            data = mutate_npy(rng, data, ops)
        elif target.endswith(".pkl"):
            data = mutate_pickle(rng, data, ops)
        elif data[:2] == b"PK":
            data = mutate_zip(rng, data, ops)
        else:
            data = mutate_bytes(rng, data, ops)
        _write(os.path.join(case_dir, "TARGET"), target.encode())
        for name in files:
            dst = os.path.join(case_dir, name)
            if name == target:
                _write(dst, data)
            else:
                os.symlink(os.path.join(self.seed_dir, fmt, name), dst)
        if fmt == "model_config":
            os.symlink(self.model_params, os.path.join(case_dir, "params"))
        return case_dir

    def load(self, fmt: str, case_dir: str):
        import convert
        import panda_jax as pj
        from convert import readers
        from ported_gens.base import abstract, load_dir

        def configured(obj):  # config inference and the shape-only model: what interprets configs
            family, config = convert.converter_for(obj).config_for(obj)
            return abstract(family, config)

        if fmt == "biggan_hf":
            return configured(readers.read(case_dir))
        if fmt == "init_kwargs":
            return configured(readers.read(os.path.join(case_dir, "G_ema.pt")))
        if fmt == "factors_npz":
            return pj.load_factors(os.path.join(case_dir, "factors.npz"))
        if fmt == "original_npy":
            return pj.load_original(os.path.join(case_dir, self.uc_name), os.path.join(case_dir, self.us_name))
        if fmt == "model_config":
            return load_dir(case_dir)
        if fmt == "directions":
            from panda_jax.directions import load_directions

            return load_directions(os.path.join(case_dir, _read(os.path.join(case_dir, "TARGET")).decode()))
        (name,) = self.seeds[fmt]
        return readers.read(os.path.join(case_dir, name))


def canaries(root: str) -> dict[str, tuple[str, str]]:
    """``{name: (path, refused global)}``: pickles that would run a command or eval if loaded."""
    import pickle

    marker = os.path.join(root, "CANARY-RAN")
    out = {}
    cmd = f"touch {marker}".encode()
    os_system = b"\x80\x02cos\nsystem\nq\x00X" + len(cmd).to_bytes(4, "little") + cmd + b"\x85R."
    code = f"open({marker!r}, 'w').close()".encode()
    eval_ = b"\x80\x02cbuiltins\neval\nX" + len(code).to_bytes(4, "little") + code + b"\x85R."
    out["pkl-os-system"] = (_write(os.path.join(root, "os_system.pkl"), os_system), "os.system")
    out["pkl-eval"] = (_write(os.path.join(root, "eval.pkl"), eval_), "builtins.eval")
    # inside a torch zip: data.pkl replaced, and a real state dict's OrderedDict swapped for eval
    seed = _read(os.path.join(TESTVECTORS, "pggan_genforce", "checkpoint.pth"))
    members = zip_members(seed)
    prefix = members[0][0].split("/")[0]
    swapped = [(n, os_system if n.endswith("data.pkl") else b) for n, b in members]
    out["zip-os-system"] = (_write(os.path.join(root, "os_system.pth"), write_zip(swapped)), "os.system")
    swapped = []
    for n, b in members:
        if n == f"{prefix}/data.pkl":
            assert b"ccollections\nOrderedDict\n" in b
            b = b.replace(b"ccollections\nOrderedDict\n", b"cbuiltins\neval\n", 1)
        swapped.append((n, b))
    out["zip-eval-in-state-dict"] = (_write(os.path.join(root, "eval.pth"), write_zip(swapped)), "builtins.eval")
    del pickle
    return out


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _caused_by_memory(e: BaseException) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, MemoryError):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def run_case(formats: Formats, fmt: str, index: int, seed: int, work: str) -> dict:
    from benchmarks.worker import _reset_peak
    from panda_jax.errors import PandaError

    rng = random.Random(f"{seed}:{fmt}:{index}")
    ops: list[str] = []
    case_dir = os.path.join(work, f"{fmt}-{index}")
    formats.make(fmt, rng, case_dir, ops)
    measured = _reset_peak()
    rss0 = _status("VmRSS")
    t0 = time.perf_counter()
    res = {"format": fmt, "index": index, "ops": ops}
    try:
        formats.load(fmt, case_dir)
        res["outcome"] = "loaded"
    except PandaError as e:
        res["outcome"] = "memory" if _caused_by_memory(e) else "refused"
        res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    except Exception as e:  # noqa: BLE001 - anything else is what the fuzzer looks for
        res["outcome"] = "crash"
        res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        res["where"] = "".join(traceback.format_tb(e.__traceback__)[-3:])[-1500:]
    res["seconds"] = round(time.perf_counter() - t0, 3)
    res["peak_growth"] = (_status("VmHWM") - rss0) if measured else 0
    shutil.rmtree(case_dir, ignore_errors=True)
    return res


def run_canaries(work: str) -> list[dict]:
    from convert import readers
    from panda_jax.errors import CheckpointError

    out = []
    for name, (path, glob) in canaries(work).items():
        res = {"format": "canary", "index": name, "ops": [glob]}
        try:
            readers.read(path)
            res["outcome"] = "loaded"
        except CheckpointError as e:
            res["outcome"] = "refused" if glob in str(e) else "refused-unnamed"
            res["error"] = str(e)[:300]
        except Exception as e:  # noqa: BLE001
            res["outcome"] = "crash"
            res["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        if os.path.exists(os.path.join(work, "CANARY-RAN")):
            res["outcome"] = "EXECUTED"
        res["seconds"], res["peak_growth"] = 0.0, 0
        out.append(res)
    return out


def _limit_memory():
    import resource

    limit = _status("VmSize") + RLIMIT_SLACK
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def worker(spec: dict) -> None:
    """Run the cases of ``spec`` (formats, count, start, seed, work) and print one JSON line per
    case (a ``start`` line first, so a hang is attributed)."""
    import warnings

    warnings.simplefilter("ignore")
    sys.path.insert(0, HERE)
    import jax  # noqa: F401  (imports before the memory limit is set)
    import torch  # noqa: F401

    import convert  # noqa: F401
    import ported_gens  # noqa: F401

    work = spec["work"]
    formats = Formats(work)

    def emit(obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    if spec.get("canaries", True):
        for res in run_canaries(work):
            emit(res)
    # Warm each format once, unmutated, before the limit (first-call imports and compilations).
    for fmt in spec["formats"]:
        d = os.path.join(work, f"warm-{fmt}")
        shutil.copytree(os.path.join(formats.seed_dir, fmt), d, symlinks=True)
        _write(os.path.join(d, "TARGET"), sorted(formats.seeds[fmt])[0].encode())
        if fmt == "model_config":
            os.symlink(formats.model_params, os.path.join(d, "params"))
        formats.load(fmt, d)
    _limit_memory()
    for fmt in spec["formats"]:
        for index in range(spec["start"], spec["start"] + spec["count"]):
            emit({"start": [fmt, index]})
            emit(run_case(formats, fmt, index, spec["seed"], work))
    emit({"done": True})


# ---- the tests: run the worker, collect, check ----------------------------------------------


def run_fuzzer(tmp: str, count: int, formats=FORMATS, start: int = 0, seed: int = SEED, with_canaries=True) -> list[dict]:
    spec = dict(formats=list(formats), count=count, start=start, seed=seed, work=tmp, canaries=with_canaries)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), HERE, os.environ.get("PYTHONPATH", "")]))
    err = open(os.path.join(tmp, "worker.stderr"), "w+")
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in proc.stdout] + [lines.put(None)], daemon=True).start()
    results, current = [], None
    try:
        while True:
            try:
                line = lines.get(timeout=CASE_SECONDS + 20 if current else 300)
            except queue.Empty:
                proc.kill()
                results.append({"format": current[0] if current else "setup", "index": current[1] if current else -1,
                                "outcome": "hang", "ops": [], "seconds": CASE_SECONDS, "peak_growth": 0})
                break
            if line is None:
                break
            msg = json.loads(line)
            if "start" in msg:
                current = msg["start"]
            elif "done" in msg:
                break
            else:
                results.append(msg)
                current = None
    finally:
        if proc.poll() is None:
            proc.wait(30)
        err.seek(0)
        stderr = err.read()
        err.close()
    if current is not None and not any(r["outcome"] == "hang" for r in results):
        results.append({"format": current[0], "index": current[1], "outcome": "died", "ops": [],
                        "error": stderr[-2000:], "seconds": 0, "peak_growth": 0})
    if not results or proc.returncode not in (0, -9):
        raise AssertionError(f"the fuzz worker failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    return results


def _bad(r: dict) -> str | None:
    if r["outcome"] not in ("loaded", "refused"):
        return r["outcome"]
    if r["seconds"] > CASE_SECONDS:
        return f"slow ({r['seconds']} s)"
    if r["peak_growth"] > CASE_MEMORY:
        return f"memory ({r['peak_growth'] >> 20} MiB)"
    return None


def table(results: list[dict]) -> str:
    rows = ["format            tried  loaded  refused  failed  max s  max MiB"]
    for fmt in list(FORMATS) + ["canary"]:
        rs = [r for r in results if r["format"] == fmt]
        if not rs:
            continue
        rows.append(f"{fmt:<17} {len(rs):>5}  {sum(r['outcome'] == 'loaded' for r in rs):>6}  "
                    f"{sum(r['outcome'] == 'refused' for r in rs):>7}  {sum(_bad(r) is not None for r in rs):>6}  "
                    f"{max(r['seconds'] for r in rs):>5.2f}  {max(r['peak_growth'] for r in rs) >> 20:>7}")
    return "\n".join(rows)


@pytest.mark.parametrize("count", [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)])
def test_fuzz_every_reader(tmp_path, count, testvectors):
    results = run_fuzzer(str(tmp_path), count)
    print("\n" + table(results))
    bad = [(r, _bad(r)) for r in results if _bad(r)]
    report = "\n".join(
        f"{r['format']}#{r['index']} {why}: {r.get('error', '')[:300]}\n  ops: {r['ops']}\n{r.get('where', '')}"
        for r, why in bad[:10])
    assert not bad, f"{len(bad)} of {len(results)} cases failed:\n{report}\n{table(results)}"
    cases = [r for r in results if r["format"] != "canary"]
    assert len(cases) == count * len(FORMATS)
    for fmt in FORMATS:  # the mutations reach the parsers: some cases load, most are refused
        outcomes = {r["outcome"] for r in cases if r["format"] == fmt}
        assert "refused" in outcomes, f"{fmt}: no mutated input was refused"
    canary = [r for r in results if r["format"] == "canary"]
    assert len(canary) == 4 and all(r["outcome"] == "refused" for r in canary), canary


# ---- regressions: what the fuzzer found, each checked directly ------------------------------


def _declaring(arr, shape: str) -> bytes:
    """``arr`` as .npy bytes whose header declares ``shape`` instead of its own."""
    import numpy as np

    f = io.BytesIO()
    np.save(f, arr)
    return _NPY_SHAPE.sub(b"'shape': (" + shape.encode() + b")", f.getvalue(), count=1)


@pytest.mark.parametrize("shape", ["1000000000,", "4611686018427387904, 2", "100000, 100000"])
def test_array_headers_declaring_more_than_the_file_are_refused_before_allocating(tmp_path, shape):
    """np.load allocated the declared shape first: a factors .npz, an original .npy or a
    directions file of a few hundred bytes asked for gigabytes (a MemoryError, or with
    overcommit a huge allocation). Now the header is checked against the bytes present."""
    import numpy as np

    import panda_jax as pj
    from panda_jax.directions import load_directions
    from panda_jax.errors import DirectionsError, FactorsError

    A, P = np.eye(4, 2, dtype=np.float32), np.ones((16, 2), np.float32)
    F = pj.Factors(A, P, 4, 4)
    good = pj.save_factors(str(tmp_path / "f.npz"), F)
    members = [(n, _declaring(A, shape) if n == "appearance.npy" else b) for n, b in zip_members(_read(good))]
    bad = _write(tmp_path / "bad.npz", write_zip(members))
    with pytest.raises(FactorsError, match=r"appearance.npy: the header declares shape .* but only \d+ bytes follow"):
        pj.load_factors(bad)
    uc, us = pj.save_original(str(tmp_path), F)
    _write(us, _declaring(P, shape))
    with pytest.raises(FactorsError, match=r"declares shape"):
        pj.load_original(uc, us)
    direction = _write(tmp_path / "resefa.npy", _declaring(np.ones((3, 8), np.float32), shape))
    with pytest.raises(DirectionsError, match=r"declares shape"):
        load_directions(direction)


def test_a_huge_memo_index_is_refused_before_the_unpickler_grows_its_memo(tmp_path):
    """One flipped LONG_BINPUT argument in data.pkl made CPython's unpickler ask for tens of GB
    (its memo table grows to twice the index): rosinality_pt#939, dcgan_tar#940, biggan_hf#538."""
    import pickle

    from convert import readers
    from panda_jax.errors import CheckpointError

    pkl = b"\x80\x02}r\xff\xff\xff\x7f."  # EMPTY_DICT, LONG_BINPUT 2**31 - 1, STOP
    seed = zip_members(_read(os.path.join(TESTVECTORS, "pggan_genforce", "checkpoint.pth")))
    path = _write(tmp_path / "memo.pth", write_zip([(n, pkl if n.endswith("data.pkl") else b) for n, b in seed]))
    with pytest.raises(CheckpointError, match=r"memo index 2147483647 in a pickle of 9 bytes"):
        readers.read(path)
    with pytest.raises(CheckpointError, match=r"not a readable pickle \(opcodes: memo index 2147483647"):
        readers.read(_write(tmp_path / "memo.pkl", pkl))
    assert pickle.loads(b"\x80\x02}r\x01\x00\x00\x00.") == {}  # the same opcodes, a small index: fine


def test_a_huge_memo_index_in_a_legacy_torch_file_is_refused(tmp_path):
    """The same flipped LONG_BINPUT in the main pickle of a legacy (non-zip) torch.save file:
    its memo indices are bounded by the main pickle's own length, not by the data after it."""
    import pickle

    from convert import _safety, readers
    from panda_jax.errors import CheckpointError

    head = b"".join(pickle.dumps(x, protocol=2) for x in (
        _safety.LEGACY_MAGIC, _safety.LEGACY_PROTOCOL, {"protocol_version": 1001, "little_endian": True}))
    main = b"\x80\x02}r\xff\xff\xff\x7f."  # EMPTY_DICT, LONG_BINPUT 2**31 - 1, STOP
    path = _write(tmp_path / "memo.pt", head + main + pickle.dumps([], protocol=2) + b"\0" * 4096)
    with pytest.raises(CheckpointError, match=r"memo index 2147483647 in a pickle of 9 bytes"):
        readers.read(path)
    ok = _write(tmp_path / "ok.pt", head + b"\x80\x02}r\x01\x00\x00\x00." + pickle.dumps([], protocol=2))
    assert readers.read_torch(ok) == {}  # a small index: an empty state dict, read
    # The header's system info and the storage key list after the main pickle are pickles too.
    magic = b"".join(pickle.dumps(x, protocol=2) for x in (_safety.LEGACY_MAGIC, _safety.LEGACY_PROTOCOL))
    bad_info = _write(tmp_path / "info.pt", magic + main + pickle.dumps({}, protocol=2)
                      + pickle.dumps([], protocol=2))
    with pytest.raises(CheckpointError, match=r"legacy torch system info: memo index 2147483647 in a pickle of 9"):
        readers.read(bad_info)
    bad_keys = _write(tmp_path / "keys.pt", head + pickle.dumps({}, protocol=2) + b"\x80\x02]r\xff\xff\xff\x7f.")
    with pytest.raises(CheckpointError, match=r"storage key list: memo index 2147483647 in a pickle of 9"):
        readers.read(bad_keys)


def test_factor_members_that_are_not_arrays_big_endian_or_empty(tmp_path):
    """factors_npz#36 (a member without the npy magic came back as bytes: AttributeError),
    #56 (a big-endian float array: TypeError from JAX), #333 (parts [10**9, 0]: JAX compiled
    for minutes)."""
    import numpy as np

    import panda_jax as pj
    from panda_jax.errors import FactorsError

    A, P = np.eye(4, 2, dtype=np.float32), np.ones((16, 2), np.float32)
    good = zip_members(_read(pj.save_factors(str(tmp_path / "f.npz"), pj.Factors(A, P, 4, 4))))

    def with_member(name, body):
        return _write(tmp_path / "x.npz", write_zip([(n, body if n == name else b) for n, b in good]))

    with pytest.raises(FactorsError, match="appearance is not an array"):
        pj.load_factors(with_member("appearance.npy", b"not an npy member"))
    f = io.BytesIO()
    np.save(f, P.astype(">f4"))
    F = pj.load_factors(with_member("parts.npy", f.getvalue()))
    assert F.parts.dtype == np.float32 and np.array_equal(np.asarray(F.parts), P)
    with pytest.raises(FactorsError, match="empty factors"):
        pj.load_factors(with_member("parts.npy", _declaring(np.zeros((0, 2), np.float32), "1000000000, 0")))


def test_direction_files_with_damaged_headers_or_empty_arrays(tmp_path):
    """directions#626 (a header numpy cannot tokenize: TokenError), #628 (a dimension beyond
    int64: OverflowError), #644 (an unsupported zip flag: NotImplementedError), #890 (shape
    [0, 10**9, 3]: ValueError from reshape) were not DirectionsErrors."""
    import numpy as np

    from panda_jax.directions import load_directions
    from panda_jax.errors import DirectionsError

    f = io.BytesIO()
    np.save(f, np.ones((1, 8), np.float32))
    good = f.getvalue()
    cases = {
        "token": good.replace(b"}", b"{", 1),
        "overflow": _declaring(np.ones((1, 8), np.float32), "99999999999999999999, 0"),
        "empty": _declaring(np.zeros((0, 2, 3), np.float32), "0, 1000000000, 3"),
    }
    for name, data in cases.items():
        with pytest.raises(DirectionsError):
            load_directions(_write(tmp_path / f"{name}.npy", data))


def test_biggan_layer_key_that_is_not_an_index(testvectors, tmp_path):
    """biggan_hf#351: a flipped byte in a tensor name (generator.layers.!0...) was a ValueError
    from int() in the config inference."""
    import convert
    from convert import readers
    from panda_jax.errors import CheckpointError

    obj = readers.read(os.path.join(testvectors, "biggan_deep"))
    sd = obj["state_dict"]
    key = next(k for k in sd if k.startswith("generator.layers.0."))
    sd["generator.layers.!0." + key.split(".", 3)[3]] = sd.pop(key)
    with pytest.raises(CheckpointError, match=r"not generator.layers.<index>"):
        convert.converter_for(obj).config_for(obj)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(json.loads(sys.argv[2]))
    else:  # reproduce one case: FORMAT INDEX [SEED]
        fmt, index = sys.argv[1], int(sys.argv[2])
        with tempfile.TemporaryDirectory() as tmp:
            for r in run_fuzzer(tmp, 1, [fmt], index, int(sys.argv[3]) if len(sys.argv) > 3 else SEED, with_canaries=False):
                print(json.dumps(r, indent=1))
