"""The side-by-side comparison and the PyTorch baseline benchmark."""
import json
import subprocess
import sys

from lipsync import export, torch_bench


def test_torch_bench_json_schema(tmp_path):
    out = tmp_path / "t.json"
    assert torch_bench.main(["--demo", "--size", "160", "--batch", "1,2", "--iterations", "2",
                             "--warmup", "1", "--threads", "2", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["implementation"] == "pytorch-eager-cpu"
    assert rep["threads"] == 2 and rep["session_create_ms"] > 0 and rep["peak_rss_mb"] > 0
    assert rep["backend"] == "pytorch" and rep["provider"] == "cpu"
    assert rep["precision"] == "float32" and rep["date"].endswith("Z")
    assert [r["batch"] for r in rep["results"]] == [1, 2]
    for r in rep["results"]:
        lat = r["latency_ms"]
        assert r["iterations"] == 2 == len(r["samples_ms"])
        assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def test_compare_prints_one_table_with_both(tmp_path, demo_checkpoint, engine_bin):
    onnx_path = tmp_path / "d.onnx"
    assert export.main(["--checkpoint", demo_checkpoint, "--out", str(onnx_path),
                        "--no-verify"]) == 0
    out = tmp_path / "c.json"
    proc = subprocess.run(
        [sys.executable, "-m", "lipsync.compare", "--checkpoint", demo_checkpoint, "--onnx",
         str(onnx_path), "--engine", engine_bin, "--iterations", "4", "--rounds", "2",
         "--warmup", "1", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "pytorch-eager-cpu" in proc.stdout and "lipsync-ort-cpu" in proc.stdout
    assert "speedup" in proc.stdout
    rep = json.loads(out.read_text())
    names = [r["implementation"] for r in rep["results"]]
    assert names == ["pytorch-eager-cpu", "lipsync-ort-cpu"]
    assert rep["max_abs_diff"] <= 1e-4
    assert all(r["iterations"] == 4 for r in rep["results"])
    assert rep["results"][1]["speedup"] > 0
    # Both again in the `lipsync bench` schema, over the pooled samples.
    keys = {"implementation", "model", "backend", "provider", "threads", "precision",
            "session_create_ms", "date", "host", "results", "peak_rss_mb"}
    assert [r["implementation"] for r in rep["reports"]] == names
    for r in rep["reports"]:
        assert keys <= set(r), keys - set(r)
        assert r["results"][0]["iterations"] == 4 and r["session_create_ms"] > 0
    assert rep["reports"][0]["backend"] == "pytorch" and rep["reports"][1]["backend"] == "ort"


def test_compare_rejects_an_export_of_other_weights(small_checkpoint, other_export, engine_bin):
    proc = subprocess.run(
        [sys.executable, "-m", "lipsync.compare", "--checkpoint", small_checkpoint, "--size",
         "160", "--onnx", other_export, "--engine", engine_bin, "--iterations", "2",
         "--rounds", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and "outputs differ" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_torch_bench_rejects_bad_arguments(capsys):
    assert torch_bench.main(["--demo", "--batch", "0"]) == 2
    assert torch_bench.main(["--demo", "--batch", "1,x"]) == 2
    assert torch_bench.main(["--demo", "--dtype", "float16"]) == 2
    assert "float16 needs --device cuda" in capsys.readouterr().err
