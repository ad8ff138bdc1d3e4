"""`lipsync render` end to end: frame count and duration per the spec, what changes in a frame and
what does not, the video against the exact image output, and bad input that leaves nothing."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import wave

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from cli_util import run_checked  # noqa: E402

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
FIXTURES = os.path.join(DATA, "avatar")
TINY = os.path.join(DATA, "tiny.onnx")
TINY_FIXED = os.path.join(DATA, "tiny_fixed.onnx")
ENCODER = os.path.join(FIXTURES, "tiny_encoder.onnx")
FPS = 25


def run(*args, check=True):
    return run_checked([BIN], args, "lipsync", check=check)


def expected_frames(samples_16k, fps=FPS):
    """Spec section 2: T = 1 + samples / 200 mel frames, int((T - 16) / 80 * fps) + 2 encoder
    windows, and one video frame per entry of [e0] + windows + [e_last]."""
    mel = 1 + samples_16k // 200
    if mel < 16:
        return 0
    return int((mel - 16) / 80 * fps) + 2 + 2


def write_wav(path, samples, rate=16000, channels=1, seed=0):
    """A voiced-sounding test signal: a pitch sweep with harmonics and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / rate
    f0 = 120 + 40 * np.sin(2 * math.pi * 1.3 * t)
    phase = 2 * math.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * math.pi * 3 * t))
    x = 0.3 * x + 0.01 * rng.standard_normal(samples)
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-count_frames",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def decode_video(path):
    """Every frame of a video as BGR arrays, decoded by the ffmpeg command-line tool."""
    info = [s for s in ffprobe(path)["streams"] if s["codec_type"] == "video"][0]
    w, h = info["width"], info["height"]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo",
                          "-pix_fmt", "bgr24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, h, w, 3)


def read_png(path):
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


def pingpong(i, n, start=1):
    if n == 1:
        return 0
    m = (start + i) % (2 * (n - 1))
    return m if m <= n - 1 else 2 * (n - 1) - m


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    out = tmp_path_factory.mktemp("avatar") / "anna"
    run("avatar", "import", "--from", "synctalk", os.path.join(FIXTURES, "dataset"),
        "--out", str(out), "--model", TINY, "--encoder", ENCODER)
    return out


def rects_of(avatar):
    return json.loads((avatar / "crop_rects.json").read_text())


def avatar_frame(avatar, k):
    return read_png(avatar / "frames" / f"{k:06d}.png")


def test_video_has_the_spec_frame_count_duration_and_an_audio_track(avatar, tmp_path):
    samples = 16000 * 2 + 3456  # 2.2 s: 57 frames, which batch 4 does not divide
    want = expected_frames(samples)
    assert want % 4
    write_wav(tmp_path / "speech.wav", samples)
    out = tmp_path / "out.mp4"
    r = run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "speech.wav"),
            "--out", str(out), "--batch", "4", "--threads", "2", "--json")
    summary = json.loads(r.stdout)
    assert summary["frames"] == want and summary["batch"] == 4
    assert summary["batches"] == math.ceil(want / 4)
    assert [s["name"] for s in summary["stages"]] == ["audio", "frames", "infer", "paste",
                                                     "output"]
    assert all(s["items"] == want for s in summary["stages"])
    assert all(s["busy_s"] > 0 for s in summary["stages"])
    assert summary["fps"] > 0
    assert summary["face_input"] == "tensors"  # automatic on the CPU
    assert sorted(os.listdir(tmp_path)) == ["out.mp4", "speech.wav"]

    probe = ffprobe(out)
    video = [s for s in probe["streams"] if s["codec_type"] == "video"]
    audio = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert len(video) == 1 and len(audio) == 1
    v, a = video[0], audio[0]
    assert v["codec_name"] == "h264" and v["pix_fmt"] == "yuv420p"
    assert (v["width"], v["height"]) == (160, 120)
    assert int(v["nb_read_frames"]) == want
    assert v["avg_frame_rate"] == "25/1"
    assert float(v["duration"]) == pytest.approx(want / FPS, abs=1e-3)
    assert a["codec_name"] == "aac"
    # Sound and picture end together, within one frame.
    assert abs(float(a["duration"]) - float(v["duration"])) <= 1.0 / FPS


def test_frames_out_changes_only_the_crop_rectangles_and_the_video_matches_it(avatar, tmp_path):
    samples = 16000 + 800
    want = expected_frames(samples)
    write_wav(tmp_path / "speech.wav", samples, seed=1)
    frames_dir = tmp_path / "frames"
    run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "speech.wav"),
        "--frames-out", str(frames_dir), "--batch", "3")
    names = sorted(os.listdir(frames_dir))
    assert names == [f"{i:06d}.png" for i in range(want)]
    rects = rects_of(avatar)
    n = len(rects)
    for i, name in enumerate(names):
        k = pingpong(i, n)
        got, source = read_png(frames_dir / name), avatar_frame(avatar, k)
        x1, y1, x2, y2 = rects[k]
        outside = np.ones(got.shape[:2], bool)
        outside[y1:y2, x1:x2] = False
        assert np.array_equal(got[outside], source[outside]), f"frame {i} changed outside"
        assert np.any(got[~outside] != source[~outside]), f"frame {i}: the face is unchanged"

    run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "speech.wav"),
        "--out", str(tmp_path / "out.mp4"), "--batch", "3", "--crf", "18")
    video = decode_video(tmp_path / "out.mp4")
    assert len(video) == want
    for i in range(want):
        exact = read_png(frames_dir / names[i]).astype(np.float64)
        mse = np.mean((video[i].astype(np.float64) - exact) ** 2)
        psnr = 10 * math.log10(255 ** 2 / max(mse, 1e-12))
        assert psnr > 32, f"frame {i}: {psnr:.1f} dB against the image output"


def test_batch_size_does_not_change_the_frames(avatar, tmp_path):
    write_wav(tmp_path / "speech.wav", 16000, seed=2)
    outs = {}
    for batch in ("1", "5"):
        outs[batch] = tmp_path / f"b{batch}"
        run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "speech.wav"),
            "--frames-out", str(outs[batch]), "--batch", batch)
    names = sorted(os.listdir(outs["1"]))
    assert names == sorted(os.listdir(outs["5"]))
    for name in names:
        a, b = read_png(outs["1"] / name), read_png(outs["5"] / name)
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, name


def test_start_frame_loop_order_and_a_fixed_batch_model(avatar, tmp_path):
    samples = 12000
    want = expected_frames(samples)
    write_wav(tmp_path / "speech.wav", samples, seed=3)
    out = tmp_path / "loop"
    run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "speech.wav"),
        "--frames-out", str(out), "--order", "loop", "--start-frame", "10",
        "--model", TINY_FIXED)
    names = sorted(os.listdir(out))
    assert len(names) == want
    rects = rects_of(avatar)
    for i, name in enumerate(names):
        k = (10 + i) % len(rects)
        got, source = read_png(out / name), avatar_frame(avatar, k)
        x1, y1, x2, y2 = rects[k]
        got[y1:y2, x1:x2] = source[y1:y2, x1:x2] = 0
        assert np.array_equal(got, source), f"frame {i} is not avatar frame {k}"

    jpg = tmp_path / "jpg"
    run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "speech.wav"),
        "--frames-out", str(jpg), "--frames-format", "jpg")
    names = sorted(os.listdir(jpg))
    assert names == [f"{i:06d}.jpg" for i in range(want)]
    assert read_png(jpg / names[-1]).shape == (120, 160, 3)


def test_any_audio_format_is_resampled(avatar, tmp_path):
    samples_44k = 44100 + 22050
    write_wav(tmp_path / "stereo.wav", samples_44k, rate=44100, channels=2, seed=4)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "stereo.wav"), "-c:a", "aac",
                    str(tmp_path / "speech.m4a")], check=True)
    r = run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "stereo.wav"),
            "--out", str(tmp_path / "a.mp4"), "--json")
    want = expected_frames(math.ceil(samples_44k * 16000 / 44100))
    assert json.loads(r.stdout)["frames"] == want
    r = run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "speech.m4a"),
            "--out", str(tmp_path / "b.mp4"), "--json")
    # AAC adds its priming and padding; the count stays within a frame of the WAV's.
    assert abs(json.loads(r.stdout)["frames"] - want) <= 1


def expect_failure(args, message, folder, before):
    r = run(*args, check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr, r.stderr
    assert sorted(os.listdir(folder)) == before, "output left behind"
    return r


def test_bad_input_is_a_clear_error_and_leaves_no_output(avatar, tmp_path):
    out = str(tmp_path / "out.mp4")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + os.urandom(3000))
    empty, short = tmp_path / "empty.wav", tmp_path / "short.wav"
    write_wav(empty, 0)
    write_wav(short, 1500)
    write_wav(tmp_path / "ok.wav", 8000)
    before = sorted(os.listdir(tmp_path))
    base = ["render", "--avatar", str(avatar), "--out", out]
    expect_failure(base + ["--audio", str(garbage)], "garbage.wav", tmp_path, before)
    expect_failure(base + ["--audio", str(tmp_path / "none.wav")], "NOT_FOUND", tmp_path, before)
    expect_failure(base + ["--audio", str(empty)], "holds no audio samples", tmp_path, before)
    expect_failure(base + ["--audio", str(short)], "too short", tmp_path, before)
    ok = ["--audio", str(tmp_path / "ok.wav")]
    expect_failure(["render", "--avatar", str(avatar), "--out", str(tmp_path / "no/dir/o.mp4")] +
                   ok, "does not exist", tmp_path, before)
    expect_failure(["render", "--avatar", str(avatar), "--out", "/proc/lipsync_test.mp4"] + ok,
                   "cannot write", tmp_path, before)
    expect_failure(base + ok + ["--batch", "0"], "batch 0", tmp_path, before)
    expect_failure(base + ok + ["--face-input", "floats"],
                   "face input must be auto, frames or tensors, got 'floats'", tmp_path, before)
    expect_failure(base + ok + ["--start-frame", "12"], "start frame 12 is outside", tmp_path,
                   before)
    expect_failure(base + ok + ["--frames-out", str(tmp_path / "f")], "give --out", tmp_path,
                   before)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    before = sorted(os.listdir(tmp_path))
    expect_failure(["render", "--avatar", str(avatar), "--frames-out", str(tmp_path / "full")] +
                   ok, "already exists", tmp_path, before)


def test_broken_avatar_fails_cleanly_even_mid_render(avatar, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(avatar, broken)
    write_wav(tmp_path / "speech.wav", 16000)
    (broken / "frames" / "000005.png").write_bytes(b"\x89PNG no more")
    before = sorted(os.listdir(tmp_path))
    r = expect_failure(["render", "--avatar", str(broken), "--audio", str(tmp_path / "speech.wav"),
                        "--out", str(tmp_path / "out.mp4")], "frame 5", tmp_path, before)
    assert "DATA_LOSS" in r.stderr
    expect_failure(["render", "--avatar", str(broken), "--audio", str(tmp_path / "speech.wav"),
                    "--frames-out", str(tmp_path / "frames")], "frame 5", tmp_path, before)
    (broken / "unet.onnx").unlink()
    expect_failure(["render", "--avatar", str(broken), "--audio", str(tmp_path / "speech.wav"),
                    "--out", str(tmp_path / "out.mp4")], "unet.onnx' not found", tmp_path,
                   before)


def test_video_avatar_renders_like_its_images(avatar, tmp_path):
    """The same frames as one lossless video: ping-pong reading walks back through it."""
    video_avatar = tmp_path / "video_avatar"
    shutil.copytree(avatar, video_avatar)
    subprocess.run(["ffmpeg", "-v", "error", "-framerate", "25", "-i",
                    str(video_avatar / "frames" / "%06d.png"), "-c:v", "libx264rgb", "-crf", "0",
                    "-g", "5", str(video_avatar / "frames.mp4")], check=True)
    shutil.rmtree(video_avatar / "frames")
    manifest = json.loads((video_avatar / "avatar.json").read_text())
    manifest["frames"] = "frames.mp4"
    (video_avatar / "avatar.json").write_text(json.dumps(manifest))
    samples = 16000 + 4000  # 31 frames over 12 avatar frames: forward, back and forward again
    write_wav(tmp_path / "speech.wav", samples, seed=5)
    for name, source in (("from_video", video_avatar), ("from_images", avatar)):
        run("render", "--avatar", str(source), "--audio", str(tmp_path / "speech.wav"),
            "--frames-out", str(tmp_path / name), "--batch", "2")
    names = sorted(os.listdir(tmp_path / "from_images"))
    assert len(names) == expected_frames(samples)
    assert names == sorted(os.listdir(tmp_path / "from_video"))
    for name in names:
        a = read_png(tmp_path / "from_images" / name)
        b = read_png(tmp_path / "from_video" / name)
        assert np.array_equal(a, b), name


def test_frames_diff_compares_two_renders(avatar, tmp_path):
    write_wav(tmp_path / "speech.wav", 16000)
    for name, batch in (("a", "1"), ("b", "4")):
        run("render", "--avatar", str(avatar), "--audio", str(tmp_path / "speech.wav"),
            "--frames-out", str(tmp_path / name), "--batch", batch)
    a, b = tmp_path / "a", tmp_path / "b"
    same = json.loads(run("frames-diff", str(a), str(b), "--json").stdout)
    assert same["frames"] == expected_frames(16000)
    assert same["max_abs"] == 0 and same["share_within_1"] == 1.0 and same["within_tolerance"]
    # One frame changed: 3 steps in a 10x10 block, 1 step in another.
    import cv2
    name = sorted(os.listdir(b))[5]
    img = read_png(b / name).astype(np.int16)
    img[0:10, 0:10] = np.clip(img[0:10, 0:10] + 3, 0, 255)
    img[20:30, 0:10] = np.clip(img[20:30, 0:10] + 1, 0, 255)
    cv2.imwrite(str(b / name), img.astype(np.uint8))
    r = run("frames-diff", str(a), str(b), check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "max abs 3" in r.stdout and f"worst frame {name}" in r.stdout, r.stdout
    assert "DIFFERENT" in r.stdout
    loose = run("frames-diff", str(a), str(b), "--max-abs", "3", "--min-within-1", "0.9")
    assert "OK" in loose.stdout
    (b / name).unlink()
    r = run("frames-diff", str(a), str(b), check=False)
    assert r.returncode == 2 and f"'{name}' is in one only" in r.stderr, r.stderr
    r = run("frames-diff", str(a), str(tmp_path / "none"), check=False)
    assert r.returncode == 2 and "is not a folder" in r.stderr, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_the_render_and_removes_the_partial_file(avatar, tmp_path, sig):
    write_wav(tmp_path / "speech.wav", 16000 * 120)  # long enough to be caught mid-way
    proc = subprocess.Popen([BIN, "render", "--avatar", str(avatar), "--audio",
                             str(tmp_path / "speech.wav"), "--out", str(tmp_path / "out.mp4")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Wait for the render to start writing (its hidden temp file appears), then interrupt it.
    deadline = time.monotonic() + 120
    while not any(n.startswith(".out.mp4.tmp") for n in os.listdir(tmp_path)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the render never started writing"
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    assert "CANCELLED: render cancelled" in err
    assert sorted(os.listdir(tmp_path)) == ["speech.wav"]
