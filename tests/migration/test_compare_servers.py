"""`lipsync compare-servers` against two lipsync servers (the same frames: zero difference), against
the PyTorch old server and lipsync (the same model in two implementations: small differences,
reported), and against a server that fails (non-zero exit naming the failure)."""
import json
import math
import os
import subprocess

import pytest

import migration_util as mu

BIN = os.environ["LIPSYNC_BIN"]
BATCH, REQUESTS = 2, 3


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    avatars = str(root / "avatars")
    mu.make_avatar(avatars)
    procs = {"old": mu.start_old_server(avatars, str(root)),
             "a": mu.start_lipsync(BIN, avatars, str(root), name="lipsync_a"),
             "b": mu.start_lipsync(BIN, avatars, str(root), name="lipsync_b")}
    yield {k: f"127.0.0.1:{p.port}" for k, p in procs.items()}
    for p in procs.values():
        assert p.stop() == 0, p.output()[-3000:]


def compare(old, new, *extra, model="sanders", size=mu.MODEL_SIZE):
    run = subprocess.run([BIN, "compare-servers", "--old", old, "--new", new, "--model", model,
                          "--batch", str(BATCH), "--requests", str(REQUESTS), "--size", str(size),
                          "--json", *extra],
                         capture_output=True, text=True, timeout=300)
    report = json.loads(run.stdout) if run.stdout.strip().startswith("{") else None
    return run, report


def check_consistent(report):
    assert report["frames_compared"] == (REQUESTS + 1) * BATCH
    for f in report["frames"]:
        assert 0 <= f["mean_abs"] <= f["max_abs"] <= 255
        if f["psnr_db"] is None:
            assert f["max_abs"] == 0
        else:  # mean squared difference >= (mean difference)^2
            assert f["mean_abs"] > 0
            assert f["psnr_db"] <= 10 * math.log10(255 ** 2 / f["mean_abs"] ** 2) + 1e-6
    for side in ("old", "new"):
        lat = report["latency_ms"][side]
        assert 0 < lat["median"] <= lat["p99"] <= lat["max"]


def test_two_lipsync_servers_give_identical_frames(servers):
    run, report = compare(servers["a"], servers["b"], "--tolerance", "0",
                          "--max-abs-tolerance", "0")
    assert run.returncode == 0, run.stdout + run.stderr
    check_consistent(report)
    assert report["ok"] and report["error"] is None
    assert all(f["max_abs"] == 0 and f["psnr_db"] is None for f in report["frames"])


def test_old_server_and_lipsync_differ_only_slightly(servers):
    run, report = compare(servers["old"], servers["a"])
    print(json.dumps({k: report[k] for k in ("worst", "mean_abs", "latency_ms")}, indent=1))
    check_consistent(report)
    # The same weights in PyTorch and ONNX Runtime, the same mel spectrogram in numpy and C++:
    # outputs agree to float rounding, which moves a few pixels by one level before JPEG.
    assert report["worst"]["mean_abs"] < 1.0, report["worst"]
    assert run.returncode == 0, run.stdout + run.stderr
    # A tolerance below the differences found fails the run.
    if report["worst"]["max_abs"] > 0:
        strict, strict_report = compare(servers["old"], servers["a"], "--max-abs-tolerance", "0")
        assert strict.returncode != 0
        assert strict_report["frames_over_tolerance"] > 0


def test_text_report_lists_frames_and_latency(servers):
    run = subprocess.run([BIN, "compare-servers", "--old", servers["old"], "--new", servers["b"],
                          "--batch", "1", "--requests", "2", "--size", str(mu.MODEL_SIZE)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "psnr_db" in run.stdout and "p50" in run.stdout and "p99" in run.stdout
    assert run.stdout.count("\n") >= 3 + 3  # header, 3 frames, summary, latency


def test_failures_give_a_non_zero_exit(servers):
    run, report = compare(servers["old"], servers["a"], model="nobody")
    assert run.returncode != 0
    assert "nobody" in report["error"] and not report["ok"]
    closed = f"127.0.0.1:{mu.free_port()}"
    run, report = compare(servers["old"], closed, "--timeout-ms", "5000")
    assert run.returncode != 0
    assert "new server" in report["error"]
    run, _ = compare(servers["old"], servers["a"], size=320)  # wrong input size
    assert run.returncode != 0


def test_old_server_counts_its_calls(servers, tmp_path):
    pb, pb_grpc = mu.load_stubs(tmp_path / "stubs")
    stub = pb_grpc.MonolithicServiceStub(mu.channel(servers["old"]))
    before = mu.request_count(stub)
    for i in range(3):
        reply = stub.InferBatchComposite(mu.composite_request(pb, 1, seed=i), timeout=60)
        assert reply.success, reply.error
    assert mu.request_count(stub) == before + 3
    listed = {m.model_id: m for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models}
    assert list(listed) == ["sanders"] and listed["sanders"].loaded
    assert listed["sanders"].request_count == before + 3
    bad = stub.InferBatchComposite(mu.composite_request(pb, 1, seed=0, model_id="nobody"))
    assert not bad.success and "nobody" in bad.error
