"""The trained demo model lip-syncs. On the video that `lipsync render` makes of the demo avatar
and the demo speech: the per-frame change of the mouth region (against the avatar's own frame)
follows the speech's loudness, and the rest of the face stays the avatar's frame."""
import json
import os
import subprocess

import cv2
import numpy as np
import pytest

DEMO = os.path.join(os.environ.get("LIPSYNC_TEST_DATA_DIR", ""), "demo")
AVATAR = os.path.join(DEMO, "demo_avatar")
SPEECH = os.path.join(DEMO, "demo_speech.wav")
FPS, RATE, CROP = 25, 16000, 328
# Where the mouth lies in the 328x328 crop that render cuts from each rectangle (rows, columns):
# the lips and the opening at their widest, with a margin. The face crops of the demo avatar are
# aligned by its landmarks, so the mouth is at the same place in every crop.
MOUTH = (76, 188, 92, 244)
MIN_R, MAX_MAD = 0.6, 8.0


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """(render's frames, the avatar frames each was made from, crop rectangles), all grey."""
    binary = os.environ["LIPSYNC_BIN"]
    out = str(tmp_path_factory.mktemp("demo") / "demo.mp4")
    summary = json.loads(subprocess.run(
        [binary, "render", "--avatar", AVATAR, "--audio", SPEECH, "--out", out, "--batch", "4",
         "--json"], check=True, capture_output=True, text=True).stdout)
    with open(os.path.join(AVATAR, "crop_rects.json")) as f:
        rects = json.load(f)
    frames_dir = os.path.join(AVATAR, "frames")
    avatar = [cv2.imread(os.path.join(frames_dir, f"{k:06d}.png"), cv2.IMREAD_GRAYSCALE)
              for k in range(len(rects))]
    height, width = avatar[0].shape
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", out, "-f", "rawvideo", "-pix_fmt", "bgr24",
                          "-"], check=True, capture_output=True).stdout
    video = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in video]
    # render's default order: ping-pong over the avatar's frames, starting at frame 1.
    n, period = len(avatar), 2 * (len(avatar) - 1)
    order = [(1 + i) % period if (1 + i) % period < n else period - (1 + i) % period
             for i in range(len(grey))]
    return grey, [avatar[k] for k in order], [rects[k] for k in order], summary


def speech_loudness(frames):
    """RMS of the 40 ms of speech around each video frame (16 kHz mono as FFmpeg decodes it)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", SPEECH, "-ac", "1", "-ar", str(RATE),
                          "-f", "s16le", "-"], check=True, capture_output=True).stdout
    pcm = np.frombuffer(raw, "<i2").astype(np.float64)
    half = RATE // FPS // 2
    return np.array([np.sqrt(np.mean(pcm[max(i * RATE // FPS - half, 0):
                                         i * RATE // FPS + half] ** 2)) for i in range(frames)])


def mouth_box(rect):
    """MOUTH in frame pixels for a crop rectangle [x1, y1, x2, y2]."""
    x1, y1, x2, y2 = rect
    sy, sx = (y2 - y1) / CROP, (x2 - x1) / CROP
    return (y1 + int(MOUTH[0] * sy), y1 + int(np.ceil(MOUTH[1] * sy)),
            x1 + int(MOUTH[2] * sx), x1 + int(np.ceil(MOUTH[3] * sx)))


def regions(frame, source, rect):
    """Mean absolute difference in grey levels inside the mouth box and in the rest of the face
    rectangle."""
    diff = np.abs(frame.astype(np.int16) - source.astype(np.int16)).astype(np.float64)
    x1, y1, x2, y2 = rect
    my0, my1, mx0, mx1 = mouth_box(rect)
    mouth = diff[my0:my1, mx0:mx1].mean()
    face = diff[y1:y2, x1:x2].sum() - diff[my0:my1, mx0:mx1].sum()
    return mouth, face / ((y2 - y1) * (x2 - x1) - (my1 - my0) * (mx1 - mx0))


def test_mouth_follows_loudness_and_the_face_stays(rendered):
    frames, sources, rects, _ = rendered
    assert len(frames) > 100, f"render wrote {len(frames)} frames"
    mouth, face = np.array([regions(f, s, r) for f, s, r in zip(frames, sources, rects)]).T
    loud = speech_loudness(len(frames))
    r = float(np.corrcoef(mouth, loud)[0, 1])
    print(f"mouth change vs loudness: r = {r:.3f} over {len(frames)} frames; mouth change "
          f"{mouth.min():.1f}..{mouth.max():.1f}, rest of the face {face.mean():.2f} "
          f"(worst frame {face.max():.2f}) grey levels")
    assert r >= MIN_R, f"the mouth region's change follows the loudness with r = {r:.3f}"
    worst = int(np.argmax(face))
    assert face[worst] <= MAX_MAD, \
        f"frame {worst}: the face outside the mouth differs by {face[worst]:.2f} grey levels"


def test_render_reuses_its_working_memory(rendered):
    """The UNet's runs repeat the same allocations batch after batch: once warm, they come from the
    host pool's cached blocks, not from the system (when the pool gave back the blocks the next run
    needed, one render of the demo took 32 GB of fresh pages, 30x its peak)."""
    memory = rendered[3]["host_working_memory"]
    fresh, peak = memory["fresh_bytes"], memory["peak_bytes"]
    print(f"working memory taken from the system: {fresh / 2**20:.0f} MiB, "
          f"peak in use {peak / 2**20:.0f} MiB")
    assert peak > 0
    assert fresh <= 4 * peak, f"{fresh} bytes fresh against a peak of {peak}"
