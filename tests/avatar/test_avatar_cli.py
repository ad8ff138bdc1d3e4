"""`lipsync avatar import|check` end to end on the fixture dataset and the tiny models."""
import json
import os
import shutil
import subprocess

BIN = os.environ["LIPSYNC_BIN"]
DATA = os.environ["LIPSYNC_TEST_DATA_DIR"]
FIXTURES = os.path.join(DATA, "avatar")
DATASET = os.path.join(FIXTURES, "dataset")
TINY = os.path.join(DATA, "tiny.onnx")
ENCODER = os.path.join(FIXTURES, "tiny_encoder.onnx")


def run(*args):
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=300)


def import_synctalk(dataset, out, *extra):
    return run("avatar", "import", "--from", "synctalk", str(dataset), "--out", str(out),
               "--model", TINY, "--encoder", ENCODER, *extra)


def test_import_then_check(tmp_path):
    out = tmp_path / "anna"
    r = import_synctalk(DATASET, out, "--name", "anna", "--fps", "25")
    assert r.returncode == 0, r.stderr
    assert "12 frames of 160x120" in r.stdout
    manifest = json.loads((out / "avatar.json").read_text())
    assert manifest["name"] == "anna" and manifest["model_size"] == 320
    assert sorted(os.listdir(out / "frames"))[:2] == ["000000.png", "000001.png"]
    assert len(json.loads((out / "crop_rects.json").read_text())) == 12

    check = run("avatar", "check", str(out), "--json")
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["ok"] and report["frames"] == 12 and report["frames_decoded"]
    assert (report["width"], report["height"]) == (160, 120)


def test_check_reports_a_broken_frame(tmp_path):
    out = tmp_path / "anna"
    assert import_synctalk(DATASET, out).returncode == 0
    (out / "frames" / "000007.png").write_bytes(b"\x89PNG broken")
    quick = run("avatar", "check", "--quick", str(out))
    assert quick.returncode == 0, quick.stderr  # only frame 0 is decoded
    full = run("avatar", "check", str(out))
    assert full.returncode == 2
    assert "frame 7" in full.stderr and "DATA_LOSS" in full.stderr


def test_import_errors_are_clear_and_leave_nothing(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(DATASET, data)
    lines = (data / "landmarks" / "3.lms").read_text().splitlines()
    lines[40] = "12 twelve"
    (data / "landmarks" / "3.lms").write_text("\n".join(lines) + "\n")
    r = import_synctalk(data, tmp_path / "out")
    assert r.returncode == 2
    assert "3.lms' line 41: '12 twelve' is not two numbers" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["data"]

    r = run("avatar", "import", "--from", "synctalk", str(data), "--out", str(tmp_path / "o"),
            "--encoder", ENCODER)
    assert r.returncode == 2 and "--model is required with --from synctalk" in r.stderr
    r = run("avatar", "import", "--from", "go", str(data / "none.yaml"), "--out",
            str(tmp_path / "o"), "--encoder", ENCODER)
    assert r.returncode == 2 and "--model-id is required" in r.stderr
    r = run("avatar", "import", "--from", "elsewhere", str(data), "--out", str(tmp_path / "o"),
            "--encoder", ENCODER)
    assert r.returncode == 2 and "unknown source kind 'elsewhere'" in r.stderr
    r = run("avatar", "check", str(tmp_path / "missing"))
    assert r.returncode == 2 and "NOT_FOUND" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["data"]


def test_import_from_go_config(tmp_path):
    bg = tmp_path / "models" / "anna" / "backgrounds"
    bg.mkdir(parents=True)
    rects = []
    for i in range(5):
        shutil.copy(os.path.join(DATASET, "full_body_img", f"{i}.png"), bg / f"frame_{i:04d}.png")
        rects.append([30, 40, 90, 100])
    (tmp_path / "models" / "anna" / "rects.json").write_text(json.dumps(rects))
    shutil.copy(TINY, tmp_path / "models" / "anna" / "model.onnx")
    (tmp_path / "config.yaml").write_text(
        "models_root: models\nmodels:\n  anna:\n    model_path: anna/model.onnx\n"
        "    background_dir: anna/backgrounds\n    crop_rects_path: anna/rects.json\n"
        "    num_frames: 5\n")
    r = run("avatar", "import", "--from", "go", str(tmp_path / "config.yaml"), "--model-id",
            "anna", "--out", str(tmp_path / "anna"), "--encoder", ENCODER)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "anna" / "crop_rects.json").read_text()) == rects
    assert run("avatar", "check", str(tmp_path / "anna")).returncode == 0
