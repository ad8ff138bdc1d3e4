"""The side-by-side comparison and the PyTorch baseline benchmark."""
import json
import subprocess
import sys

from lipsync import export, torch_bench


def test_torch_bench_json_schema(tmp_path):
    out = tmp_path / "t.json"
    assert torch_bench.main(["--demo", "--size", "160", "--batch", "1,2", "--iterations", "3",
                             "--warmup", "1", "--threads", "2", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["implementation"] == "pytorch-eager-cpu"
    assert rep["threads"] == 2 and rep["session_create_ms"] > 0 and rep["peak_rss_mb"] > 0
    assert [r["batch"] for r in rep["results"]] == [1, 2]
    for r in rep["results"]:
        lat = r["latency_ms"]
        assert r["iterations"] == 3 == len(r["samples_ms"])
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
