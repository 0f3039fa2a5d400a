"""The benchmark tool runs end to end (quick mode) and writes its JSON, plots and report.

Nothing here asserts anything about speed: quick-mode numbers come from small shapes and few
repeats on whatever machine runs the tests.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECTIONS = ("sweep", "convergence", "stochastic", "refinement", "edits", "scale", "memory", "end_to_end")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # the scale section sets the device count itself
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    with open(out / "results.json") as f:
        return out, json.load(f), p.stdout


def test_quick_run_writes_json_with_every_section(quick_run):
    _, res, _ = quick_run
    assert res["meta"]["mode"] == "quick"
    assert res["meta"]["failed_sections"] == []
    assert res["meta"]["machine"]["cpu_count"] >= 1
    assert res["rates"]["matmul_gflops"] > 0 and res["rates"]["memory_GBps"] > 0
    for name in SECTIONS:
        assert name in res and "error" not in res[name], name

    sweep = res["sweep"]
    assert [r["size"] for r in sweep["spatial"]] == [8, 16, 32, 64]
    for r in sweep["spatial"] + sweep["samples"]:
        for k in ("reference_original_order_s", "torch_same_algebra_s", "panda_jax_s", "speedup_vs_reference",
                  "speedup_vs_torch_same_algebra", "flops_per_iteration", "feature_bytes_per_iteration"):
            assert r[k] > 0, k
        assert r["panda_jax"]["gflops"] > 0 and 0 < r["panda_jax"]["frac_matmul"]
        assert r["panda_jax"]["feature_GBps"] > 0 and r["panda_jax"]["frac_bandwidth"] > 0
    for eng in ("panda_jax", "torch_same_algebra", "reference_original_order"):
        assert isinstance(sweep["slopes"][eng]["vs_S"], float) and isinstance(sweep["slopes"][eng]["vs_N"], float)

    conv = res["convergence"]["engines"]
    assert set(conv) == {"reference_original_order", "torch_same_algebra", "panda_jax", "panda_jax_auto_lr"}
    # Same init, same lr, same algorithm: the loss curves agree.
    assert conv["torch_same_algebra"]["max_loss_diff_vs_reference"] < 1e-3
    assert conv["panda_jax"]["max_loss_diff_vs_reference"] < 1e-3

    models = {r["model"] for r in res["stochastic"]["rows"]}
    assert models == {"dcgan", "stylegan2"}
    for r in res["stochastic"]["rows"]:
        assert r["stream_step_auto_s"] > 0 and r["generator_s"] > 0 and r["final_loss"] < r["first_loss"]
    assert {r["samples"] for r in res["refinement"]["rows"]} == {1, 64}
    assert "panda_jax_singles_s" in next(r for r in res["refinement"]["rows"] if r["samples"] == 64)
    assert {r["model"] for r in res["edits"]["rows"]} == {"dcgan", "stylegan2"}
    assert all(r["edits_per_s"] > 0 for r in res["edits"]["rows"])

    scale = res["scale"]["rows"]
    assert [r["devices"] for r in scale[:3]] == [1, 2, 4]
    assert scale[2]["padded_samples"] == 2  # 6 samples on 4 devices
    assert all(r["max_rel_diff_parts"] < 1e-4 and r["rel_diff_final_loss"] < 1e-4 for r in scale)

    mem = res["memory"]["rows"]
    assert [(r["mode"], r["multiple"]) for r in mem] == [("stream", 1), ("stream", 10), ("stream", 100),
                                                         ("full", 1), ("full", 10)]
    assert all(r["peak_rss_bytes"] > 0 for r in mem)
    assert res["memory"]["compiled"] and "temp_bytes" in res["memory"]["compiled"][0]

    e2e = res["end_to_end"]
    assert e2e["original"]["final_parts_finite"]
    assert e2e["original"]["features_shape"] == [16, 16, 16, 128]  # the faces DCGAN's layer 3
    # The second run reuses the compiled programs of the first.
    assert 0 < e2e["panda_jax_cached_run"]["process_wall_s"] < e2e["panda_jax_first_run"]["process_wall_s"]
    for run in (e2e["panda_jax_first_run"], e2e["panda_jax_cached_run"]):  # the --timings phases, parsed
        ph = run["phases"]
        assert ph["steps"] == 10 and 0 < ph["steps_s"] <= ph["fit_s"] and ph["model_s"] > 0 and ph["startup_and_exit_s"] > 0
        assert run["runs_wall_s"] == [run["process_wall_s"]]  # quick mode: one run of each kind


def test_end_to_end_reports_the_median_run_and_the_range():
    from benchmarks.end_to_end import median_run
    from benchmarks.report import _wall

    runs = [{"process_wall_s": w, "id": i} for i, w in enumerate([5.3, 4.9, 6.1])]
    m = median_run(runs)
    assert m["id"] == 0 and m["runs_wall_s"] == [5.3, 4.9, 6.1]  # launch order kept
    assert median_run(runs[:2])["id"] == 1  # even count: the lower middle
    assert _wall(m) == "5.3 s (4.9 s to 6.1 s)"
    assert _wall(median_run(runs[:1])) == "5.3 s"


def test_quick_run_writes_plots_and_report(quick_run):
    out, _, stdout = quick_run
    for name in ("sweep.png", "convergence.png", "memory.png", "scale.png"):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    md = (out / "RESULTS.md").read_text()
    for heading in ("## Machine", "## 1. Full-batch fit: one iteration", "## 2. Full-batch fit to convergence",
                    "## 3. Stochastic fit with the generator in the loop", "## 4. Refinement",
                    "## 5. Edits rendered per second", "## 6. Several devices", "## 7. Memory",
                    "## 8. Time to parts, end to end"):
        assert heading in md, heading
    assert "Quick mode" in md and "failed" not in md.lower()
    assert "(sweep.png)" in md
    assert "wrote" in stdout


def test_report_rebuilds_from_json(quick_run, tmp_path):
    out, _, _ = quick_run
    p = subprocess.run([sys.executable, "-m", "benchmarks.run", "--from-json", str(out / "results.json"),
                        "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / "RESULTS.md").read_text() == (out / "RESULTS.md").read_text()


def test_results_md_keeps_the_sections_other_scripts_write(tmp_path):
    from benchmarks.common import own_sections, replace_section

    doc = ("# panda-jax benchmarks\n\n## 1. Fit\n\nrows\n\n"
           "## Generators: images per second (`python -m benchmarks.gen_speed`)\n\ngen rows\n\n"
           "## Editor latency (`python -m benchmarks.editor_latency`)\n\nold latency\n")
    kept = own_sections(doc)
    assert [k.splitlines()[0] for k in kept] == [
        "## Generators: images per second (`python -m benchmarks.gen_speed`)",
        "## Editor latency (`python -m benchmarks.editor_latency`)"]
    assert "rows" not in kept[1] and "gen rows" in kept[0]
    path = tmp_path / "RESULTS.md"
    path.write_text(doc)
    replace_section("## Generators: images per second (`python -m benchmarks.gen_speed`)",
                    "## Generators: images per second (`python -m benchmarks.gen_speed`)\n\nnew rows\n", str(path))
    new = path.read_text()
    assert "new rows" in new and "gen rows" not in new and "old latency" in new and "## 1. Fit\n\nrows" in new
    replace_section("## Locality (`python -m benchmarks.locality`)", "## Locality (`python -m benchmarks.locality`)\n\nt\n",
                    str(path))
    assert path.read_text().endswith("## Locality (`python -m benchmarks.locality`)\n\nt\n")


def test_gen_speed_section_names_its_machine_and_rows(tmp_path):
    from benchmarks import gen_speed
    from benchmarks.common import replace_section

    res = {"machine": {"cpu": "Test CPU", "cpu_count": 2, "jax": "0.0", "jax_backend": "cpu"},
           "results": {"dcgan_faces64": {"family": "dcgan", "image_shape": [64, 64, 3], "layer": 2,
                                         "feature_shape": [8, 8, 256], "batch": 8,
                                         "generate_images_per_s": 235.04, "render_images_per_s": 427.6}}}
    text = gen_speed.section(res)
    assert text.startswith(gen_speed.SECTION) and "Machine: Test CPU, 2 cores" in text
    assert "| dcgan_faces64 (dcgan) | 64x64x3 | 2 (8x8x256) | 235 | 428 |" in text
    md = tmp_path / "RESULTS.md"
    md.write_text("# r\n\n## 1. Fit\n\nrows\n\n" + gen_speed.SECTION + "\n\nold\n\n## Editor latency (x)\n\ne\n")
    replace_section(gen_speed.SECTION, text, str(md))
    doc = md.read_text()
    assert "old" not in doc and "| 235 | 428 |" in doc and "## 1. Fit\n\nrows" in doc and "## Editor latency (x)" in doc
