"""What the users' old servers make of a request, restated in numpy from their code (facts only),
beside what lipsync documents (docs/API.md), so that the served frames can be checked against
both. The models are passed in as callables (PyTorch modules with the avatar's weights).

Go server (go-monolithic-server/cmd/server/main.go, InferBatchComposite):
  - raw_audio: the chunk's log-mel, T frames; min((T - 16) * 25 // 80, batch + 16) encoder
    windows (window k starts at mel frame int(80 k / 25), the last 16 when it runs past the end);
    their embeddings e with the first and last repeated; output frame i reads rows i - 8 .. i + 7
    of that sequence, zeros outside.
  - audio_features (only when raw_audio is empty): one [32,16,16] window copied to every frame.
  - compositing: the 320 output, x255 clamped and truncated, resized to the crop rectangle with its
    own bilinear (source point = dst * 320 / size in float32, x0 = int, x1 = min(x0 + 1, 319),
    truncated result) and drawn over the rectangle of background (start + i) % N; JPEG q75.
Python server (old_fast_service/multi_model_engine.py, generate_inference_only):
  - package features: the frame's row alone, viewed [32,16], each value repeated 16 times.
  - base64 override (> 100 characters): int16 / 32767, padded or cut to 15360 samples, the
    log-mel of those samples as if 16 kHz, mel frames (T - 16) // 2 .. + 16, bands 0..31,
    each value repeated 16 times; the same tensor for every frame id.
lipsync: see docs/API.md ("request the old server accepted -> what lipsync does")."""
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from compositing import paste_face  # noqa: E402

SR, HOP, N_FFT, BANDS = 16000, 200, 800, 80
FRAME = 640  # samples per 25 fps video frame


def _hz_to_mel(hz):
    hz = np.asarray(hz, np.float64)
    lin = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) / (np.log(6.4) / 27)
    return np.where(hz < 1000.0, lin, log)


def _mel_to_hz(mel):
    mel = np.asarray(mel, np.float64)
    return np.where(mel < 15.0, mel * (200.0 / 3), 1000.0 * np.exp((np.log(6.4) / 27) * (mel - 15.0)))


def _filterbank():
    """Slaney mel triangles 55..7600 Hz, area-normalised: [80, 401]."""
    edges = _mel_to_hz(np.linspace(_hz_to_mel(55.0), _hz_to_mel(7600.0), BANDS + 2))
    hz = np.arange(N_FFT // 2 + 1) * SR / N_FFT
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((hz - lo) / (mid - lo), (hi - hz) / (hi - mid)))
    return tri * (2.0 / (hi - lo))


BANK = _filterbank()
WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)


def mel(pcm):
    """Model spec section 2 steps 2-5: [80, 1 + len // 200], zero-padded centred STFT."""
    x = np.asarray(pcm, np.float64)
    y = np.append(x[:1], x[1:] - 0.97 * x[:-1])
    padded = np.pad(y, N_FFT // 2)
    t = 1 + len(x) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(t)[:, None]
    spectrum = np.abs(np.fft.rfft(padded[idx] * WINDOW, axis=1))
    db = 20 * np.log10(np.maximum(1e-5, spectrum @ BANK.T)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4).T.astype(np.float32)


def encoder_windows(m, count):
    """The first `count` encoder inputs [count, 1, 80, 16] of a mel spectrogram."""
    t = m.shape[1]
    out = np.empty((count, 1, BANDS, 16), np.float32)
    for k in range(count):
        start = min(int(80.0 * k / 25.0), t - 16)
        out[k, 0] = m[:, start:start + 16]
    return out


def frame_windows(embeddings, frames):
    """Rows f - 8 .. f + 7 of [e0] + e + [e_last] (zeros outside) for each f: [n, 32, 16, 16]."""
    return sequence_windows(np.concatenate([embeddings[:1], embeddings, embeddings[-1:]]), frames)


def sequence_windows(seq, frames):
    """Rows f - 8 .. f + 7 of a per-frame sequence [rows, 512] (zeros outside): lipsync's window
    from a package's features."""
    out = np.zeros((len(frames), 16, 512), np.float32)
    for n, f in enumerate(frames):
        for r in range(16):
            j = f - 8 + r
            if 0 <= j < len(seq):
                out[n, r] = seq[j]
    return out.reshape(len(frames), 32, 16, 16)


def go_audio(encode, pcm, batch):
    """The Go server's windows for raw_audio as sent."""
    m = mel(pcm)
    count = min(max(0, (m.shape[1] - 16) * 25 // 80), batch + 16)
    if count == 0:
        return np.zeros((batch, 32, 16, 16), np.float32)
    return frame_windows(encode(encoder_windows(m, count)), range(batch))


def lipsync_audio(encode, pcm, batch, start_frame):
    """lipsync's windows: the chunk begins at frame start - lead, lead = min(8, start); it is
    used up to lead + batch + 11 frames and completed with silence to lead + batch + 7 frames;
    windows as for a whole signal; output frame i is the chunk's frame lead + i."""
    lead = min(8, start_frame)
    used = np.asarray(pcm, np.float32)[:(lead + batch + 11) * FRAME]
    chunk = np.zeros(max(len(used), (lead + batch + 7) * FRAME), np.float32)
    chunk[:len(used)] = used
    m = mel(chunk)
    count = int((m.shape[1] - 16) / 80.0 * 25.0) + 2
    return frame_windows(encode(encoder_windows(m, count)), range(lead, lead + batch))


def features_audio(window, batch):
    """audio_features: the one window for every frame."""
    return np.repeat(np.asarray(window, np.float32).reshape(1, 32, 16, 16), batch, axis=0)


def face_bytes(output):
    """[3, S, S] float in [0, 1] -> S x S x 3 uint8 BGR, x255 clamped and truncated."""
    return np.clip(np.float32(255.0) * output, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def paste_go(frame, face, rect):
    x1, y1, x2, y2 = rect
    w, h, s = x2 - x1, y2 - y1, face.shape[0]
    f = face.astype(np.float32)
    sx = np.arange(w, dtype=np.float32) * np.float32(np.float32(s) / np.float32(w))
    sy = np.arange(h, dtype=np.float32) * np.float32(np.float32(s) / np.float32(h))
    x0, y0 = sx.astype(np.int64), sy.astype(np.int64)
    xa, ya = np.minimum(x0 + 1, s - 1), np.minimum(y0 + 1, s - 1)
    wx = (sx - x0.astype(np.float32))[None, :, None]
    wy = (sy - y0.astype(np.float32))[:, None, None]
    one = np.float32(1)
    top = f[y0][:, x0] * (one - wx) + f[y0][:, xa] * wx
    bottom = f[ya][:, x0] * (one - wx) + f[ya][:, xa] * wx
    out = frame.copy()
    out[y1:y2, x1:x2] = (top * (one - wy) + bottom * wy).astype(np.uint8)
    return out


# lipsync's PasteFace (model spec section 3), shared with the compatibility services' reference.
paste_synctalk = paste_face


def jpeg(image, quality):
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def composite(unet, visual, audio, backgrounds, rects, start, paste):
    """Decoded JPEG frames of one InferBatchComposite: visual [B,6,S,S], audio [B,32,16,16]."""
    faces = unet(visual, audio)
    frames = []
    for i, out in enumerate(faces):
        k = (start + i) % len(backgrounds)
        frames.append(jpeg(paste(backgrounds[k], face_bytes(out), rects[k]), 75))
    return frames


def python_row_window(sequence, frame):
    """The Python server's window of `frame` from package features [rows, 512]."""
    return np.repeat(np.asarray(sequence[frame], np.float32).reshape(32, 16, 1), 16, axis=2)


def python_pcm_window(pcm_24k):
    """The Python server's tensor for a base64 override (already decoded to 15360 floats)."""
    m = mel(pcm_24k)
    start = (m.shape[1] - 16) // 2
    return np.repeat(m[:32, start:start + 16, None], 16, axis=2).astype(np.float32)


def decode_pcm_override(text):
    """As the Python server: base64 -> int16 -> / 32767, padded or cut to 15360 samples."""
    import base64
    pcm = np.frombuffer(base64.b64decode(text), "<i2").astype(np.float32) / 32767.0
    out = np.zeros(15360, np.float32)
    out[:min(len(pcm), 15360)] = pcm[:15360]
    return out


def resample_24k_to_16k(pcm):
    """Band-limited 3:2 resampling through the FFT (lipsync uses FFmpeg's resampler: the two
    agree closely away from the clip's ends)."""
    n = len(pcm)
    m = n * 2 // 3
    spectrum = np.fft.rfft(pcm)
    return (np.fft.irfft(spectrum[:m // 2 + 1], m) * (m / n)).astype(np.float32)


def lipsync_pcm_window(encode, pcm_24k):
    """lipsync's window of a base64 override: the clip at 16 kHz, its frame 8 (as for a chunk of
    one output frame with 8 frames before it)."""
    return lipsync_audio(encode, resample_24k_to_16k(pcm_24k), 1, 8)[0]
