"""`lipsync.exe` (the Windows build) end to end under Wine on the demo model: info, infer, bench,
check and plan on the CPU provider, `--provider dml` where no DirectX 12 device exists, and files
in a folder whose name has spaces and characters outside any ANSI code page."""
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from cli_util import png_size, run_checked  # noqa: E402

EXE = os.environ["LIPSYNC_EXE"]
WINE_RUN = os.environ["LIPSYNC_WINE_RUN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
DEMO = os.path.join(DATA, "demo")
MODEL = os.path.join(DEMO, "demo.onnx")
FACE = os.path.join(DEMO, "demo_face.png")
AUDIO = os.path.join(DEMO, "demo_audio.npy")


def win(path):
    """The path as a Windows program under Wine sees it: the Unix root is drive Z:."""
    return "Z:" + os.path.abspath(path).replace("/", "\\")


def run(*args, check=True):
    return run_checked([WINE_RUN, EXE], args, "lipsync.exe", check=check, timeout=900,
                       encoding="utf-8")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Random visual and audio inputs of batch 2, as .npy files."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(7)
    visual = d / "visual.npy"
    audio = d / "audio.npy"
    np.save(visual, rng.random((2, 6, 320, 320), dtype=np.float32))
    np.save(audio, rng.random((2, 32, 16, 16), dtype=np.float32))
    return visual, audio


def test_info_lists_the_model_and_providers():
    info = json.loads(run("info", "--model", win(MODEL), "--json").stdout)
    assert [t["name"] for t in info["inputs"]] == ["visual_input", "audio_input"]
    assert info["inputs"][0]["shape"] == [-1, 6, 320, 320]
    assert info["outputs"][0]["shape"] == [-1, 3, 320, 320]
    assert info["opset"] == 17
    assert info["provider"] == "cpu"
    assert "reference" in info["backends_available"]
    providers = {p["name"]: p for p in info["ort_providers"]}
    assert providers["cpu"]["usable"]
    # The Windows ONNX Runtime knows DirectML; Wine has no DirectX 12 device for it.
    assert "dml" in providers
    assert not providers["dml"]["usable"]
    assert "DirectX 12" in providers["dml"]["missing"]


def test_infer_writes_a_face(tmp_path):
    out = tmp_path / "face.png"
    proc = run("infer", "--model", win(MODEL), "--face", win(FACE), "--audio", win(AUDIO),
               "--out", win(out))
    assert "wrote" in proc.stdout
    assert png_size(out) == (320, 320)
    assert out.read_bytes() != open(FACE, "rb").read()


def test_ort_and_reference_backends_agree(tmp_path, inputs):
    visual, audio = inputs
    ort_out = tmp_path / "ort.npy"
    run("check", "--model", win(MODEL), "-i", win(visual), win(audio),
        "--save-output", win(ort_out))
    result = np.load(ort_out)
    assert result.shape == (2, 3, 320, 320)
    assert np.isfinite(result).all() and result.std() > 0
    # The graph compiler's reference backend, a separate implementation, within float32 noise.
    proc = run("check", "--model", win(MODEL), "--backend", "reference", "-i", win(visual),
               win(audio), "--expect", win(ort_out), "--tolerance", "1e-3", "--json")
    assert json.loads(proc.stdout)["ok"] is True


def test_check_fails_on_a_wrong_expectation(tmp_path, inputs):
    visual, audio = inputs
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 3, 320, 320), dtype=np.float32))
    proc = run("check", "--model", win(MODEL), "-i", win(visual), win(audio),
               "--expect", win(wrong), check=False)
    assert proc.returncode != 0


def test_bench_reports_frames_per_second(tmp_path):
    report = tmp_path / "bench.json"
    run("bench", "--model", win(MODEL), "--batch", "1", "--duration", "2", "--warmup", "1",
        "--threads", "2", "--json", win(report))
    data = json.loads(report.read_text())
    rows = data["results"]
    assert rows and rows[0]["batch"] == 1
    assert rows[0]["fps"] > 0


def test_plan_describes_the_compiled_graph():
    proc = run("plan", "--model", win(MODEL))
    assert "convs" in proc.stdout and "MACs per item" in proc.stdout


def test_dml_without_a_directx12_device_fails_clearly(tmp_path):
    out = tmp_path / "dml.png"
    proc = run("infer", "--model", win(MODEL), "--face", win(FACE), "--audio", win(AUDIO),
               "--out", win(out), "--provider", "dml", check=False)
    assert proc.returncode != 0
    assert "DirectML" in proc.stderr and "DirectX 12" in proc.stderr
    assert "--allow-cpu-fallback" in proc.stderr
    assert not out.exists()


def test_dml_falls_back_to_the_cpu_only_when_allowed():
    info = json.loads(run("info", "--model", win(MODEL), "--provider", "dml",
                          "--allow-cpu-fallback", "--json").stdout)
    assert info["provider"] == "cpu"
    assert "DirectX 12" in info["fallback_reason"]


def test_paths_with_spaces_and_non_ascii_characters(tmp_path):
    folder = tmp_path / "modèles et visages 日本"
    folder.mkdir()
    model = folder / "démo.onnx"
    face = folder / "visage é.png"
    audio = folder / "аудио.npy"
    shutil.copy(MODEL, model)
    shutil.copy(FACE, face)
    shutil.copy(AUDIO, audio)
    info = json.loads(run("info", "--model", win(model), "--json").stdout)
    assert info["inputs"][0]["shape"] == [-1, 6, 320, 320]
    out = folder / "sortie 顔.png"
    run("infer", "--model", win(model), "--face", win(face), "--audio", win(audio),
        "--out", win(out))
    assert png_size(out) == (320, 320)
    # Same inputs, same output as from the plain path.
    plain = tmp_path / "plain.png"
    run("infer", "--model", win(MODEL), "--face", win(FACE), "--audio", win(AUDIO),
        "--out", win(plain))
    assert out.read_bytes() == plain.read_bytes()


def test_a_missing_model_is_named():
    proc = run("info", "--model", win(os.path.join(DATA, "no such model.onnx")), check=False)
    assert proc.returncode != 0
    assert "no such model.onnx" in proc.stderr


def test_the_package_runs_on_its_own(tmp_path):
    """make windows-package's zip holds every DLL lipsync.exe loads: the unpacked copy runs."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = os.path.dirname(os.path.dirname(EXE))
    archive = tmp_path / "lipsync-windows-x64.zip"
    subprocess.run(["bash", os.path.join(root, "scripts", "windows-package.sh"), build,
                    str(archive)], check=True, capture_output=True, timeout=600)
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        z.extractall(tmp_path)
    for f in ("lipsync.exe", "onnxruntime.dll", "DirectML.dll", "libwinpthread-1.dll",
              "setup.ps1", "README-windows.txt", "python/lipsync/demo.py"):
        assert f"lipsync-windows-x64/{f}" in names, f
    exe = tmp_path / "lipsync-windows-x64" / "lipsync.exe"
    proc = subprocess.run([WINE_RUN, str(exe), "info", "--model", win(MODEL), "--json"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["provider"] == "cpu"
