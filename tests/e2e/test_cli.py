"""End-to-end tests of the `lipsync` command on the demo model (made by the make_demo_model test)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from cli_util import png_size, run_checked  # noqa: E402

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
DEMO = os.path.join(DATA, "demo")
MODEL = os.path.join(DEMO, "demo.onnx")


def run(*args, check=True, cwd=None):
    return run_checked([BIN], args, "lipsync", check=check, cwd=cwd)


def test_info_lists_inputs_outputs_and_opset():
    info = json.loads(run("info", "--model", MODEL, "--json").stdout)
    assert [t["name"] for t in info["inputs"]] == ["visual_input", "audio_input"]
    assert info["inputs"][0]["shape"] == [-1, 6, 320, 320]
    assert info["inputs"][1]["shape"] == [-1, 32, 16, 16]
    assert info["outputs"][0]["shape"] == [-1, 3, 320, 320]
    assert info["opset"] == 17
    assert info["dynamic_batch"] is True
    assert "cpu" in info["ort_providers_available"]


def test_info_says_which_providers_can_load_and_what_the_others_miss():
    info = json.loads(run("info", "--model", MODEL, "--json").stdout)
    providers = info["ort_providers"]
    assert {"name": "cpu", "usable": True, "missing": ""} in providers
    assert info["ort_providers_available"] == [p["name"] for p in providers if p["usable"]]
    for p in providers:
        assert p["usable"] == (p["missing"] == ""), p
    # This ONNX Runtime knows the GPU providers; whether their libraries load depends on the
    # machine, and when they do not, the reason names a library.
    gpu = [p for p in providers if p["name"] in ("cuda", "tensorrt")]
    assert gpu, providers
    for p in gpu:
        assert p["usable"] or ".so" in p["missing"], p
    text = run("info", "--model", MODEL).stdout
    for p in providers:
        if not p["usable"]:
            assert f"{p['name']} unavailable: {p['missing']}" in text


DYNAMO = os.path.join(DATA, "graph", "compat", "dynamo", "model.onnx")


@pytest.mark.parametrize("backend", ["ort", "reference"])
def test_info_and_plan_on_a_dynamo_export_from_another_folder(backend, tmp_path):
    info = json.loads(run("info", "--model", DYNAMO, "--backend", backend, "--json",
                          cwd=tmp_path).stdout)
    assert [t["name"] for t in info["inputs"]] == ["visual_input", "audio_input"]
    assert info["outputs"][0]["shape"] == [-1, 3, 320, 320]
    assert info["producer"].startswith("pytorch 2.11")
    plan = run("plan", "--model", DYNAMO, cwd=tmp_path).stdout
    assert "steps: 99 (93 convs)" in plan and "MACs per item: 4.886 G" in plan


def test_infer_writes_a_face_of_the_right_size(tmp_path):
    out = tmp_path / "face.png"
    proc = run("infer", "--model", MODEL, "--face", os.path.join(DEMO, "demo_face.png"),
               "--audio", os.path.join(DEMO, "demo_audio.npy"), "--out", str(out),
               "--threads", "2")
    assert png_size(out) == (320, 320)
    assert "inference" in proc.stdout and "ms" in proc.stdout
    # The written image decodes and can be fed back in (exercises the 320x320 path).
    run("infer", "--model", MODEL, "--face", str(out), "--out", str(tmp_path / "again.png"))
    assert png_size(tmp_path / "again.png") == (320, 320)


def test_infer_output_is_deterministic_and_depends_on_audio(tmp_path):
    face = os.path.join(DEMO, "demo_face.png")
    a, b, c = (tmp_path / n for n in ("a.png", "b.png", "c.png"))
    run("infer", "--model", MODEL, "--face", face, "--seed", "1", "--out", str(a))
    run("infer", "--model", MODEL, "--face", face, "--seed", "1", "--out", str(b))
    run("infer", "--model", MODEL, "--face", face, "--seed", "2", "--out", str(c))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_infer_bad_inputs_give_clear_errors(tmp_path):
    missing = run("infer", "--model", MODEL, "--face", str(tmp_path / "none.png"),
                  "--out", str(tmp_path / "o.png"), check=False)
    assert missing.returncode == 2
    assert "none.png" in missing.stderr and "does not exist" in missing.stderr

    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    bad = run("infer", "--model", MODEL, "--face", str(junk), "--out", str(tmp_path / "o.png"),
              check=False)
    assert bad.returncode == 2 and "cannot decode image" in bad.stderr

    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((32, 16), np.float32))
    r = run("infer", "--model", MODEL, "--face", os.path.join(DEMO, "demo_face.png"),
            "--audio", str(wrong), "--out", str(tmp_path / "o.png"), check=False)
    assert r.returncode == 2
    assert "expected shape [32,16,16] or [1,32,16,16], got [32,16]" in r.stderr

    nan = tmp_path / "nan.npy"
    arr = np.zeros((32, 16, 16), np.float32)
    arr[3, 4, 5] = np.nan
    np.save(nan, arr)
    r = run("infer", "--model", MODEL, "--face", os.path.join(DEMO, "demo_face.png"),
            "--audio", str(nan), "--out", str(tmp_path / "o.png"), check=False)
    assert r.returncode == 2 and "NaN" in r.stderr

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(open(MODEL, "rb").read()[:100000])
    r = run("info", "--model", str(truncated), check=False)
    assert r.returncode == 2 and "DATA_LOSS" in r.stderr


def test_bench_json_has_cold_and_warm_figures(tmp_path):
    out = tmp_path / "bench.json"
    run("bench", "--model", MODEL, "--batch", "1,2", "--iterations", "3", "--warmup", "1",
        "--threads", "2", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["implementation"] == "lipsync-ort-cpu"
    assert report["session_create_ms"] > 0
    assert report["peak_rss_mb"] > 0
    assert [r["batch"] for r in report["results"]] == [1, 2]
    for r in report["results"]:
        lat = r["latency_ms"]
        assert r["iterations"] == 3 and r["warmup"] == 1
        assert r["first_inference_ms"] > 0
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["fps"] == pytest.approx(r["batch"] * 1000.0 / lat["median"])


def test_bench_runs_at_once_report_throughput(tmp_path):
    out = tmp_path / "bench.json"
    run("bench", "--model", MODEL, "--batch", "2", "--iterations", "5", "--warmup", "1",
        "--threads", "2", "--runs", "2", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["runs_at_once"] == 2
    r = report["results"][0]
    assert r["runs_at_once"] == 2
    assert r["iterations"] == 5 and len(r["samples_ms"]) == 5  # counted over both runs
    assert r["fps"] == r["throughput_fps"] > 0
    for runs in ("0", "17"):
        bad = run("bench", "--model", MODEL, "--runs", runs, "--iterations", "1", check=False)
        assert bad.returncode == 2 and f"--runs {runs} is outside 1..16" in bad.stderr


def test_bench_rejects_bad_batch():
    r = run("bench", "--model", MODEL, "--batch", "0", "--iterations", "1", check=False)
    assert r.returncode == 2 and "--batch 0 is outside 1..64" in r.stderr
    for flags in (["--iterations", "-1"], ["--warmup", "-1"], ["--duration", "0"]):
        r = run("bench", "--model", MODEL, "--batch", "1", *flags, check=False)
        assert r.returncode == 2 and "take 0 or more runs" in r.stderr, flags


def test_check_compares_against_expected_output(tmp_path):
    rng = np.random.default_rng(0)
    visual = rng.random((2, 6, 320, 320), dtype=np.float32)
    audio = rng.random((2, 32, 16, 16), dtype=np.float32)
    np.save(tmp_path / "v.npy", visual)
    np.save(tmp_path / "a.npy", audio)
    run("check", "--model", MODEL, "--input", f"visual_input={tmp_path / 'v.npy'}",
        "--input", f"audio_input={tmp_path / 'a.npy'}", "--save-output", str(tmp_path / "o.npy"))
    out = np.load(tmp_path / "o.npy")
    assert out.shape == (2, 3, 320, 320)
    same = run("check", "--model", MODEL, "--input", f"audio_input={tmp_path / 'a.npy'}",
               "--input", f"visual_input={tmp_path / 'v.npy'}", "--expect", str(tmp_path / "o.npy"),
               "--json")
    assert json.loads(same.stdout)["max_abs_diff"] == 0.0
    np.save(tmp_path / "off.npy", out + 1e-3)
    off = run("check", "--model", MODEL, "--input", str(tmp_path / "v.npy"),
              "--input", str(tmp_path / "a.npy"), "--expect", str(tmp_path / "off.npy"), "--json",
              check=False)
    assert off.returncode == 1
    result = json.loads(off.stdout)
    assert result["ok"] is False and result["max_abs_diff"] == pytest.approx(1e-3, rel=1e-2)


def test_threads_do_not_change_results(tmp_path):
    rng = np.random.default_rng(5)
    np.save(tmp_path / "v.npy", rng.random((1, 6, 320, 320), dtype=np.float32))
    np.save(tmp_path / "a.npy", rng.random((1, 32, 16, 16), dtype=np.float32))
    args = ["check", "--model", MODEL, "--input", str(tmp_path / "v.npy"),
            "--input", str(tmp_path / "a.npy")]
    run(*args, "--threads", "1", "--save-output", str(tmp_path / "o1.npy"))
    run(*args, "--threads", "2", "--save-output", str(tmp_path / "o2.npy"))
    assert np.abs(np.load(tmp_path / "o1.npy") - np.load(tmp_path / "o2.npy")).max() <= 1e-5


def test_unknown_provider_and_missing_gpu_provider():
    r = run("info", "--model", MODEL, "--provider", "fpga", check=False)
    assert r.returncode == 2 and "unknown provider 'fpga'" in r.stderr
    cuda = run("info", "--model", MODEL, "--provider", "cuda", check=False)
    if cuda.returncode == 0:
        pytest.skip("this machine has a working ONNX Runtime CUDA provider")
    assert "UNAVAILABLE" in cuda.stderr and "libonnxruntime_providers_cuda.so" in cuda.stderr
    fallback = run("info", "--model", MODEL, "--provider", "cuda", "--allow-cpu-fallback")
    assert "provider cpu" in fallback.stdout and "fallback:" in fallback.stdout


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_times_batch_sizes_and_reports_its_choice():
    import re
    import signal
    import threading
    port = free_port()
    proc = subprocess.Popen([BIN, "serve", "--model", MODEL, "--listen", f"127.0.0.1:{port}",
                             "--max-batch", "4", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(300, proc.kill)  # a server that never starts fails, not hangs
    watchdog.start()
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "serving model" in line:
                break
        log = "".join(lines)
        timed = [int(b) for b in re.findall(r"batch (\d+): [0-9.]+ ms per frame", log)]
        assert timed == [1, 2, 4], log
        chosen = re.search(r"preferred batch (\d+)", log)
        assert chosen and int(chosen.group(1)) in (1, 2, 4), log
        assert f"batches of up to {chosen.group(1)} (max 4)" in log, log
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        watchdog.cancel()
    assert code == 0
    bad = run("serve", "--model", MODEL, "--max-batch", "4", "--preferred-batch", "8", check=False)
    assert bad.returncode == 2
    assert "--preferred-batch must be auto or a number from 1 to --max-batch (4), got '8'" in bad.stderr
