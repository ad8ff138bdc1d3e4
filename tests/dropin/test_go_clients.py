"""The Go monolithic server's clients against `lipsync serve` (no --model; the contract on its own
port, as on 50053), each request built as that client builds it, its frames checked against the
old server's semantics (old_servers_reference.py): with --monolithic-align go --monolithic-paste
go within JPEG loss of the Go server's, by default within JPEG loss of lipsync's documented
semantics and different from the Go server's exactly inside the face rectangle.

Facts from github.com/cvoalex/webcodectest (526c12b), go-monolithic-server:
  testing/test_batch_sizes.go: batch sizes 1, 4, 8, 25; start_frame_idx = iteration x batch;
    sample_rate never set; visual_frames = the batch's B face crops, then its B masked crops
    (3 x 320 x 320 float32 BGR / 255 each, from load_frames.py); raw_audio from extractAudioChunk:
    (B + 15) x 40 ms of int16 / 32768 from frame max(0, start - 8), shortened at the file's end.
  testing/test_client.go: batch 24, start = batch number x 24, random visual frames in [-1, 1),
    no raw_audio, audio_features = 8192 random floats in [-1, 1) (one [32,16,16] window).
  testing/test_end_to_end.py: batch 24, start 0, raw_audio = the first int(24 / 25 x rate)
    samples of the WAV (int16 / 32768), sample_rate = the WAV's rate, crops converted to RGB.
  cmd/server/main.go: the server the reference restates."""
import json
import os
import subprocess

import cv2
import numpy as np
import pytest

import dropin_util as du
import old_servers_reference as ref

AUDIO_SECONDS = 3.2  # 80 frames, like the avatar


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("avatars")
    models = du.Models(seed=3)
    du.make_avatar(str(root), "sanders", models)
    pb = du.stubs(tmp_path_factory.mktemp("stubs"))
    logs = tmp_path_factory.mktemp("logs")
    servers = {"lipsync": du.Server(root, log=logs / "lipsync.log"),
               "old": du.Server(root, "--monolithic-align", "go", "--monolithic-paste", "go",
                                log=logs / "old.log")}
    wav = (du.speech(AUDIO_SECONDS, seed=1) * 32767).astype(np.int16)  # what readWAVFile gives
    yield {"models": models, "pb": pb, "servers": servers, "wav": wav,
           "backgrounds": [du.background(i) for i in range(du.FRAMES)],
           "rects": [du.rect_of(i) for i in range(du.FRAMES)]}
    for s in servers.values():
        assert s.stop() == 0


def crops(start, batch, rgb=False):
    """Face crops and masked crops [B,3,320,320] of avatar frames start.., BGR / 255 (RGB for the
    end-to-end test, which converts them)."""
    faces, masked = [], []
    for i in range(start, start + batch):
        x1, y1, x2, y2 = du.rect_of(i)
        face = cv2.resize(du.background(i)[y1:y2, x1:x2], (320, 320))
        if rgb:
            face = cv2.cvtColor(face, cv2.COLOR_BGR2RGB)
        cover = face.copy()
        cover[5:310, 5:315] = 0
        faces.append(face.transpose(2, 0, 1) / 255.0)
        masked.append(cover.transpose(2, 0, 1) / 255.0)
    return np.array(faces, np.float32), np.array(masked, np.float32)


def go_chunk(samples, start_frame, batch, rate=16000):
    """extractAudioChunk (test_batch_sizes.go), restated."""
    needed = (rate * (batch + 15) * 40) // 1000
    first = max(0, start_frame - 8)
    start_sample = (first * rate * 40) // 1000
    if start_sample >= len(samples):
        start_sample %= len(samples)
    needed = min(needed, len(samples) - start_sample)
    return (samples[start_sample:start_sample + needed].astype(np.float32) / 32768.0).astype("<f4")


def batch_sizes_request(pb, wav, batch, start):
    """One request of test_batch_sizes.go: crops then masked crops, sample_rate unset."""
    faces, masked = crops(start, batch)
    visual = np.concatenate([faces, masked]).astype("<f4")
    return pb[0].CompositeBatchRequest(model_id="sanders", visual_frames=visual.tobytes(),
                                       raw_audio=go_chunk(wav, start, batch).tobytes(),
                                       batch_size=batch, start_frame_idx=start)


def call(env, who, request):
    reply = env["pb"][1].MonolithicServiceStub(env["servers"][who].go).InferBatchComposite(
        request, timeout=300)
    assert reply.success, f"{who}: {reply.error}"
    assert len(reply.composited_frames) == request.batch_size
    frames = [du.decode_jpeg(f) for f in reply.composited_frames]
    assert all(f.shape == (du.FRAME_H, du.FRAME_W, 3) for f in frames)
    return frames


def expected(env, request, align, paste):
    """Decoded JPEGs of the reference: align 'go' or 'lipsync', paste 'go' or 'lipsync'."""
    b, start = request.batch_size, request.start_frame_idx
    m = env["models"]
    visual = np.frombuffer(request.visual_frames, "<f4").reshape(b, 6, 320, 320)
    if request.raw_audio:
        pcm = np.frombuffer(request.raw_audio, "<f4")
        audio = (ref.go_audio(m.encode, pcm, b) if align == "go"
                 else ref.lipsync_audio(m.encode, pcm, b, start))
    else:
        audio = ref.features_audio(np.frombuffer(request.audio_features, "<f4"), b)
    return ref.composite(m.unet, visual, audio, env["backgrounds"], env["rects"], start,
                         ref.paste_go if paste == "go" else ref.paste_synctalk)


def check_close(served, reference, what):
    """Within JPEG loss: the same pixels up to float rounding, through the same quality."""
    for i, (a, b) in enumerate(zip(served, reference)):
        worst, mean = du.diff(a, b)
        print(f"{what} frame {i}: max {worst}, mean {mean:.3f}")
        assert worst <= 12 and mean <= 0.6, f"{what} frame {i}: max {worst}, mean {mean:.3f}"


def check_documented_difference(env, request, served, old_reference):
    """Outside the face rectangle the frames are the old server's; inside they are not (the paste
    alone moves the face by a few pixels and keeps the crop's border)."""
    start = request.start_frame_idx
    for i, (a, b) in enumerate(zip(served, old_reference)):
        rect = env["rects"][(start + i) % du.FRAMES]
        outside = du.rect_mask(a.shape, rect, inside=False, margin=16)
        assert du.diff(a, b, outside)[0] <= 4, f"frame {i} changed outside its rectangle"
        inside = du.diff(a, b, du.rect_mask(a.shape, rect))[1]
        print(f"frame {i}: outside max {du.diff(a, b, outside)[0]}, inside mean {inside:.2f}")
        assert inside > 1.5, f"frame {i}: inside the rectangle only {inside:.2f} from the old server"


def run_both(env, request, what):
    lipsync, old = call(env, "lipsync", request), call(env, "old", request)
    check_close(old, expected(env, request, "go", "go"), f"{what}, old behaviour")
    check_close(lipsync, expected(env, request, "lipsync", "lipsync"), f"{what}, default")
    check_documented_difference(env, request, lipsync, expected(env, request, "go", "go"))
    return lipsync


@pytest.mark.parametrize("batch", [1, 4, 8, 25])
def test_batch_sizes_client(env, batch):
    for iteration in range(2):
        request = batch_sizes_request(env["pb"], env["wav"], batch, iteration * batch)
        assert request.sample_rate == 0
        run_both(env, request, f"batch {batch} iteration {iteration}")


def test_alignment_is_right_at_the_start_and_8_frames_off_after(env):
    """The Go server reads the window of its chunk's frame i for output frame i. Its clients'
    chunk starts at frame 0 for the first batch (right) and 8 frames early after (late)."""
    m = env["models"]
    for start, same in ((0, True), (8, False), (25, False)):
        request = batch_sizes_request(env["pb"], env["wav"], 8, start)
        served = call(env, "lipsync", request)
        go_rows = expected(env, request, "go", "lipsync")  # the Go rows, lipsync's paste
        close = all(du.diff(a, b)[1] <= 0.6 for a, b in zip(served, go_rows))
        assert close == same, f"start {start}"
        if not same:  # lipsync's frame i has the Go server's window of frame i + 8 (up to the
            # chunk's last rows: the Go server makes 2 encoder windows fewer than the spec)
            pcm = np.frombuffer(request.raw_audio, "<f4")
            go = ref.go_audio(m.encode, pcm, 16)
            np.testing.assert_allclose(ref.lipsync_audio(m.encode, pcm, 8, start)[:4], go[8:12],
                                       atol=1e-5)


def test_shortened_last_chunk(env):
    """The last batch of the file: the helper's chunk runs out 7 frames short."""
    request = batch_sizes_request(env["pb"], env["wav"], 8, 72)
    assert len(request.raw_audio) == 16 * 640 * 4  # frames 64..79 of 80
    run_both(env, request, "shortened chunk")
    request.raw_audio = request.raw_audio[:4]  # the shortest the Go server took: one sample
    run_both(env, request, "one sample")


def test_audio_features_client(env):
    """test_client.go: no raw_audio, one random window for the batch, random faces."""
    rng = np.random.default_rng(5)
    for batch_number in range(2):
        visual = (rng.random((24, 6, 320, 320)) * 2 - 1).astype("<f4")
        features = (rng.random(8192) * 2 - 1).astype("<f4")
        request = env["pb"][0].CompositeBatchRequest(
            model_id="sanders", visual_frames=visual.tobytes(), audio_features=features.tobytes(),
            batch_size=24, start_frame_idx=batch_number * 24)
        run_both(env, request, f"audio_features batch {batch_number}")


def test_end_to_end_client(env):
    """test_end_to_end.py: batch 24 x 40 ms from the file's start, sample_rate set, RGB crops."""
    faces, masked = crops(0, 24, rgb=True)
    visual = np.concatenate([faces, masked], axis=1).astype("<f4")  # [24, 6, 320, 320]
    audio = (env["wav"][:int(24 / 25.0 * 16000)].astype(np.float32) / 32768.0).astype("<f4")
    request = env["pb"][0].CompositeBatchRequest(
        model_id="sanders", batch_size=24, start_frame_idx=0, visual_frames=visual.tobytes(),
        raw_audio=audio.tobytes(), sample_rate=16000)
    run_both(env, request, "end to end")


def test_other_sample_rates_are_resampled(env):
    """sample_rate set to another rate: the chunk is resampled (the Go server took it as 16 kHz)."""
    pcm16 = go_chunk(env["wav"], 16, 4)
    t16 = np.arange(len(pcm16)) / 16000.0
    t48 = np.arange(len(pcm16) * 3) / 48000.0
    pcm48 = np.interp(t48, t16, pcm16).astype("<f4")
    base = batch_sizes_request(env["pb"], env["wav"], 4, 16)
    at48 = env["pb"][0].CompositeBatchRequest()
    at48.CopyFrom(base)
    at48.raw_audio, at48.sample_rate = pcm48.tobytes(), 48000
    a, b = call(env, "lipsync", base), call(env, "lipsync", at48)
    for x, y in zip(a, b):
        assert du.diff(x, y)[1] < 1.5
    at48.sample_rate = 0  # the same samples taken as 16 kHz, as the Go server would: 3x slower
    c = call(env, "lipsync", at48)
    assert max(du.diff(x, y)[1] for x, y in zip(a, c)) > 3.0


def test_bad_inputs_are_answered_and_the_server_goes_on(env):
    pb = env["pb"]
    stub = pb[1].MonolithicServiceStub(env["servers"]["lipsync"].go)
    good = batch_sizes_request(pb, env["wav"], 2, 10)
    cases = [
        ("odd byte count", {"raw_audio": good.raw_audio + b"\0"}, "not a whole number of float32"),
        ("no audio", {"raw_audio": b""}, "has no audio"),
        ("short features", {"raw_audio": b"", "audio_features": b"\0" * 100},
         "audio_features holds 100 bytes; expected 32768"),
        ("rate", {"sample_rate": 7999}, "sample_rate 7999"),
        ("empty id", {"model_id": ""}, "model_id is empty"),
        ("batch 33", {"batch_size": 33}, "batch_size 33 is outside 1..32"),
    ]
    for what, change, message in cases:
        request = pb[0].CompositeBatchRequest()
        request.CopyFrom(good)
        for k, v in change.items():
            setattr(request, k, v)
        reply = stub.InferBatchComposite(request, timeout=120)
        assert not reply.success and message in reply.error, f"{what}: {reply.error}"
        assert len(reply.error) < 400 and not reply.composited_frames, what
    assert call(env, "lipsync", good)
    assert env["servers"]["lipsync"].alive()


def test_compare_servers_reports_the_alignment(env):
    def compare(old, new):
        run = subprocess.run([du.BIN, "compare-servers", "--old", f"127.0.0.1:{old.go_port}",
                              "--new", f"127.0.0.1:{new.go_port}", "--model", "sanders",
                              "--batch", "2", "--requests", "1", "--size", "320", "--json",
                              "--tolerance", "255"],
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout + run.stderr
        return json.loads(run.stdout)["alignment"]

    servers = env["servers"]
    late = compare(servers["old"], servers["lipsync"])
    assert late["measured"] and late["offset_frames"] == 8, late
    assert "320 ms" in late["summary"] and "--monolithic-align go" in late["summary"]
    same = compare(servers["lipsync"], servers["lipsync"])
    assert same["measured"] and same["offset_frames"] == 0, same
