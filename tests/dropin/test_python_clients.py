"""The Python lipsync server's clients against `lipsync serve` (no --model; the contract on its own
port, as on 50051), each request built as that client builds it, the faces checked against the
Python server's semantics (old_servers_reference.py): with --lipsyncsrv-window python within JPEG
loss of that server's, by default within JPEG loss of lipsync's documented windows and different
from the Python server's.

Facts from github.com/cvoalex/webcodectest (526c12b):
  go-token-server/grpc_client.py: InferenceRequest(model_name, frame_id, audio_override="").
  old/old_fast_service/test_100_frames.py: BatchInferenceRequest, frame_ids cycling over 0..9.
  old/old_fast_service/load_model_grpc.py, quick_model_loader.py: LoadModel(model_name,
    package_path="<name>.zip"), a relative path from the server's working folder.
  old/old_realtime_lipsync/audio_buffer_manager.js: 24 kHz int16 chunks of 960 samples (40 ms),
    16 chunks per frame (8 before, the frame's, 7 after); direct_grpc_client.js and
    pure_grpc_client.js: audio_override = base64 of the PCM ('' without audio);
    old/old_fast_service/websocket_grpc_bridge.py forwards it as InferenceRequest.audio_override.
  old/old_fast_service/multi_model_engine.py: the server the reference restates; packages are
    zip files unpacked to a temp folder (zipfile.extractall), files at the archive's top."""
import base64
import os
import struct
import zipfile

import numpy as np
import pytest

import dropin_util as du
import old_servers_reference as ref

PACKAGE = os.environ["LIPSYNCSRV_PACKAGE"]
ENCODER = os.path.join(os.environ["LIPSYNC_TEST_DATA_DIR"], "tiny_audio_encoder.onnx")
ROWS = du.FRAMES + 2  # a package's aud_ave.npy has the frames plus the two repeated edges


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("avatars")
    work = tmp_path_factory.mktemp("work")
    models = du.Models(seed=7)
    features = np.random.default_rng(2).standard_normal((ROWS, 512)).astype(np.float32) * 0.5
    du.make_avatar(str(root), "anna", models, frames=12, features=features)
    du.make_avatar(str(root), "carl", models, frames=4)  # no features, image frames
    sound = work / "sound.wav"
    du.write_wav(sound, du.speech(1.0, seed=4))
    du.make_avatar(str(root), "bob", models, frames=20, video_with_sound=str(sound))
    pb = du.stubs(tmp_path_factory.mktemp("stubs"))
    logs = tmp_path_factory.mktemp("logs")
    common = ["--lipsyncsrv-encoder", ENCODER, "--lipsyncsrv-max-package-mb", "64"]
    servers = {"lipsync": du.Server(root, *common, log=logs / "lipsync.log"),
               "old": du.Server(root, *common, "--lipsyncsrv-window", "python",
                                log=logs / "old.log")}
    yield {"models": models, "features": features, "pb": pb, "servers": servers, "root": root,
           "work": work}
    for s in servers.values():
        assert s.stop() == 0


def stub(env, who="lipsync"):
    return env["pb"][3].LipSyncServiceStub(env["servers"][who].py)


def face_input(frame):
    """The face crop the avatar pipeline makes of avatar frame `frame` ([6, 320, 320])."""
    import cv2
    x1, y1, x2, y2 = du.rect_of(frame)
    crop = cv2.resize(du.background(frame)[y1:y2, x1:x2], (328, 328), interpolation=cv2.INTER_CUBIC)
    face = crop[4:324, 4:324]
    masked = face.copy()
    masked[5:310, 5:315] = 0
    return np.concatenate([face.transpose(2, 0, 1), masked.transpose(2, 0, 1)]) / 255.0


def expected_face(env, frame, window):
    out = env["models"].unet(face_input(frame)[None], window[None])[0]
    return ref.jpeg(ref.face_bytes(out), 95)


def served_face(reply):
    assert reply.success, reply.error
    assert reply.prediction_shape == "320x320x3"
    face = du.decode_jpeg(reply.prediction_data)
    assert face.shape == (320, 320, 3)
    return face


def check_close(a, b, what):
    worst, mean = du.diff(a, b)
    print(f"{what}: max {worst}, mean {mean:.3f}")
    assert worst <= 16 and mean <= 0.8, f"{what}: max {worst}, mean {mean:.3f}"


def check_apart(a, b, what):
    print(f"{what} against the other semantics: mean {du.diff(a, b)[1]:.3f}")
    assert du.diff(a, b)[1] > 2.0, f"{what}: no different from the other semantics"


def lipsync_row_window(env, frame):
    return ref.sequence_windows(env["features"], [frame])[0]


def test_token_server_client_uses_the_package_features(env):
    """grpc_client.py: frame ids with an empty override; the window from the features."""
    pb = env["pb"]
    for frame in (0, 5, 11):
        request = pb[2].InferenceRequest(model_name="anna", frame_id=frame, audio_override="")
        lipsync = served_face(stub(env).GenerateInference(request, timeout=120))
        old = served_face(stub(env, "old").GenerateInference(request, timeout=120))
        reply = stub(env).GenerateInference(request, timeout=120)
        assert list(reply.bounds) == [float(v) for v in du.rect_of(frame)] + [96.0, 96.0]
        python = expected_face(env, frame, ref.python_row_window(env["features"], frame))
        ours = expected_face(env, frame, lipsync_row_window(env, frame))
        check_close(old, python, f"frame {frame}, python window")
        check_close(lipsync, ours, f"frame {frame}, lipsync window")
        check_apart(lipsync, python, f"frame {frame}")


def test_batch_client_cycles_frame_ids(env):
    """test_100_frames.py: batches of 10 frame ids (b x 10 + i) % 10, answers in order."""
    pb = env["pb"]
    for b in range(2):
        ids = [(b * 10 + i) % 10 for i in range(10)]
        reply = stub(env).GenerateBatchInference(
            pb[2].BatchInferenceRequest(model_name="anna", frame_ids=ids), timeout=300)
        assert [r.frame_id for r in reply.responses] == ids
        for r in reply.responses:
            check_close(served_face(r), expected_face(env, r.frame_id,
                                                      lipsync_row_window(env, r.frame_id)),
                        f"batch frame {r.frame_id}")


def js_override(seed, samples=15360):
    """audio_buffer_manager.js + direct_grpc_client.js: 16 chunks of 960 int16 samples at 24 kHz,
    base64 (btoa) of their bytes."""
    pcm = du.speech(samples / 24000.0, seed=seed, rate=24000)
    return base64.b64encode((pcm * 32767).astype("<i2").tobytes()).decode()


def test_js_client_base64_override(env):
    pb = env["pb"]
    text = js_override(seed=9)
    assert len(text) == 40960
    pcm = ref.decode_pcm_override(text)
    for frame in (2, 7):
        request = pb[2].InferenceRequest(model_name="anna", frame_id=frame, audio_override=text)
        lipsync = served_face(stub(env).GenerateInference(request, timeout=120))
        old = served_face(stub(env, "old").GenerateInference(request, timeout=120))
        python = expected_face(env, frame, ref.python_pcm_window(pcm))
        ours = expected_face(env, frame, ref.lipsync_pcm_window(env["models"].encode, pcm))
        check_close(old, python, f"frame {frame}, python override")
        check_close(lipsync, ours, f"frame {frame}, lipsync override")
        check_apart(lipsync, python, f"override frame {frame}")
    # One 40 ms chunk (as some clients send) is padded with silence, as the Python server pads.
    short = js_override(seed=3, samples=960)
    reply = stub(env).GenerateInference(
        pb[2].InferenceRequest(model_name="anna", frame_id=1, audio_override=short), timeout=120)
    served_face(reply)
    # One window drives every frame of a batch.
    batch = stub(env).GenerateBatchInference(
        pb[2].BatchInferenceRequest(model_name="anna", frame_ids=[3, 4], audio_override=text),
        timeout=120)
    window = ref.lipsync_pcm_window(env["models"].encode, pcm)
    for r in batch.responses:
        check_close(served_face(r), expected_face(env, r.frame_id, window), "batch override")


def test_avatar_features_from_its_own_sound_or_a_clear_error(env):
    pb = env["pb"]
    reply = stub(env).GenerateInference(pb[2].InferenceRequest(model_name="bob", frame_id=3),
                                        timeout=120)
    served_face(reply)
    missing = stub(env).GenerateInference(pb[2].InferenceRequest(model_name="carl", frame_id=1),
                                          timeout=120)
    assert not missing.success
    assert "no precomputed audio features" in missing.error
    assert "--sequence-out" in missing.error and "audio_override" in missing.error


def zip_folder(folder, out, top=""):
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for base, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(base, name)
                z.write(path, os.path.join(top, os.path.relpath(path, folder)))


def listing(root):
    return sorted(os.listdir(root))


def test_zip_package_load(env):
    """load_model_grpc.py: LoadModel with a .zip, then frames of the new model."""
    pb = env["pb"]
    work = env["work"]
    zip_folder(PACKAGE, work / "pkg.zip")
    zip_folder(PACKAGE, work / "nested.zip", top="nested_package")
    for name, path in (("pkg", work / "pkg.zip"), ("pkg2", work / "nested.zip")):
        reply = stub(env).LoadModel(pb[2].LoadModelRequest(model_name=name,
                                                           package_path=str(path)), timeout=600)
        assert reply.success, reply.error
        assert "imported package" in reply.message
        faces = stub(env).GenerateBatchInference(
            pb[2].BatchInferenceRequest(model_name=name, frame_ids=[0, 5]), timeout=300)
        for r in faces.responses:
            served_face(r)
    names = listing(env["root"])
    assert "pkg" in names and "pkg2" in names
    assert not [n for n in names if n.startswith(".")], names  # nothing unpacked is left


def bomb(path, megabytes):
    """A zip of a valid package layout plus one entry of zeros that inflates to `megabytes`."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("package_info.json", "{}")
        with z.open("aud_ave.npy", "w") as f:
            block = b"\0" * (1 << 20)
            for _ in range(megabytes):
                f.write(block)


def lie_about_size(path, out):
    """The same archive with every entry's declared size set to 1 byte."""
    data = bytearray(open(path, "rb").read())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        while at >= 0:
            struct.pack_into("<I", data, at + offset, 1)
            at = data.find(sig, at + 4)
    open(out, "wb").write(bytes(data))


def test_bad_packages_leave_nothing_and_the_server_goes_on(env, tmp_path):
    pb = env["pb"]
    before = listing(env["root"])
    outside = tmp_path / "escaped.txt"
    escape = tmp_path / "escape.zip"
    with zipfile.ZipFile(escape, "w") as z:
        z.writestr("package_info.json", "{}")
        z.writestr("../" * 8 + str(outside).lstrip("/"), "x")
    windows = tmp_path / "windows.zip"
    with zipfile.ZipFile(windows, "w") as z:
        z.writestr("face_bounds\\..\\..\\evil.npy", "x")
    bomb(tmp_path / "bomb.zip", 100)
    lie_about_size(tmp_path / "bomb.zip", tmp_path / "liar.zip")
    good = tmp_path / "good.zip"
    zip_folder(PACKAGE, good)
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04" + os.urandom(4000))
    cases = [(escape, "leads out of the package folder"),
             (windows, "leads out of the package folder"),
             (tmp_path / "bomb.zip", "unpacks to more than 64 MiB"),
             (tmp_path / "liar.zip", "zip archive"),
             (truncated, "not a readable zip archive"),
             (garbage, "not a readable zip archive")]
    for path, message in cases:
        reply = stub(env).LoadModel(pb[2].LoadModelRequest(model_name="broken",
                                                           package_path=str(path)), timeout=300)
        assert not reply.success and message in reply.error, f"{path.name}: {reply.error}"
        assert listing(env["root"]) == before, path.name
        assert not outside.exists()
    assert env["servers"]["lipsync"].alive()
    served_face(stub(env).GenerateInference(
        pb[2].InferenceRequest(model_name="anna", frame_id=0), timeout=120))


def test_bad_overrides_are_answered_without_echoing_them(env):
    pb = env["pb"]
    good = js_override(seed=1)
    odd = base64.b64encode(b"\1" * 30721).decode()
    cases = [(good[:5000] + "#" + good[5001:], "not valid base64"),
             (good[:-1], "not whole groups of 4"),
             (good[:-4] + "QQ=A", "data after the '=' padding"),
             (odd, "30721 bytes, not a whole number of 16-bit samples"),
             (" " * 120, "holds no samples")]
    for text, message in cases:
        for call in ("GenerateInference", "GenerateBatchInference"):
            if call == "GenerateInference":
                reply = stub(env).GenerateInference(pb[2].InferenceRequest(
                    model_name="anna", frame_id=0, audio_override=text), timeout=120)
            else:
                reply = stub(env).GenerateBatchInference(pb[2].BatchInferenceRequest(
                    model_name="anna", frame_ids=[0, 1], audio_override=text),
                    timeout=120).responses[0]
            assert not reply.success and message in reply.error, f"{call}: {reply.error}"
            assert len(reply.error) < 400 and text[:60] not in reply.error
    loaded = stub(env).LoadModel(pb[2].LoadModelRequest(model_name="anna", audio_override=odd),
                                 timeout=120)
    assert not loaded.success and "16-bit samples" in loaded.error and len(loaded.error) < 400
    empty = stub(env).GenerateInference(pb[2].InferenceRequest(model_name="", frame_id=0))
    assert not empty.success and "model_name is empty" in empty.error
    served_face(stub(env).GenerateInference(
        pb[2].InferenceRequest(model_name="anna", frame_id=0, audio_override=good), timeout=120))
    assert env["servers"]["lipsync"].alive()


def test_load_model_override_is_the_default_of_empty_overrides(env):
    """multi_model_engine.py: LoadModel's audio_override becomes the model's audio, which requests
    with an empty override (the JavaScript clients without audio, grpc_client.py) then get."""
    pb = env["pb"]
    text = js_override(seed=12)
    pcm = ref.decode_pcm_override(text)
    loaded = stub(env).LoadModel(pb[2].LoadModelRequest(model_name="anna", audio_override=text),
                                 timeout=120)
    assert loaded.success, loaded.error
    bad = stub(env).LoadModel(pb[2].LoadModelRequest(
        model_name="anna", audio_override=base64.b64encode(b"\0" * 301).decode()), timeout=120)
    assert not bad.success  # and the default stays
    try:
        for request in (pb[2].InferenceRequest(model_name="anna", frame_id=4, audio_override=""),
                        pb[2].InferenceRequest(model_name="anna", frame_id=4)):
            face = served_face(stub(env).GenerateInference(request, timeout=120))
            check_close(face, expected_face(env, 4, ref.lipsync_pcm_window(env["models"].encode,
                                                                           pcm)),
                        "default override")
    finally:  # an empty default: the features again
        reset = stub(env).LoadModel(pb[2].LoadModelRequest(model_name="anna", audio_override=""),
                                    timeout=120)
        assert reset.success, reset.error
    face = served_face(stub(env).GenerateInference(
        pb[2].InferenceRequest(model_name="anna", frame_id=4, audio_override=""), timeout=120))
    check_close(face, expected_face(env, 4, lipsync_row_window(env, 4)), "features again")


def test_features_sequence_out_makes_audio_features(env, tmp_path):
    """The command the no-features error names: its sequence gives the windows `--out` gives."""
    import subprocess
    encoder = os.path.join(env["root"], "anna", "audio_encoder.onnx")
    run = subprocess.run([du.BIN, "features", "--audio", str(env["work"] / "sound.wav"),
                          "--encoder", encoder, "--threads", "1",
                          "--sequence-out", str(tmp_path / "seq.npy"),
                          "--out", str(tmp_path / "windows.npy")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    seq, windows = np.load(tmp_path / "seq.npy"), np.load(tmp_path / "windows.npy")
    assert seq.dtype == np.float32 and seq.shape == (windows.shape[0], 512)
    np.testing.assert_array_equal(seq[0], seq[1])
    np.testing.assert_array_equal(seq[-1], seq[-2])
    np.testing.assert_allclose(ref.sequence_windows(seq, range(len(seq))), windows, atol=1e-6)
