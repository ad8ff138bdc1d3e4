"""The table of bench/gpu_render_bench.sh run: per batch and render setting, `lipsync render`'s
frames/s, each stage's busy milliseconds per frame (from render --json; the inference stage's
divided by its runs at once), the stage that limits render (the most busy time per frame) and
the UNet alone (`lipsync bench --json`) in frames/s.

    python3 bench/gpu_render_table.py --results results --batches 1,8,25
reads results/render_b<batch>.json (render's defaults), results/render_b<batch>_<variant>.json
(other settings) and results/bench.json; writes results/summary.json.
"""
import glob
import argparse
import json
import os
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", required=True)
    p.add_argument("--batches", required=True, help="comma-separated")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    unet, rows, stage_names, failed = {}, [], [], []
    bench = os.path.join(args.results, "bench.json")
    if os.path.exists(bench):  # absent when lipsync bench failed
        with open(bench) as f:
            unet = {r["batch"]: r for r in json.load(f)["results"]}
    for batch in batches:
        default = os.path.join(args.results, f"render_b{batch}.json")
        variants = sorted(glob.glob(os.path.join(args.results, f"render_b{batch}_*.json")))
        logs = glob.glob(os.path.join(args.results, f"render_b{batch}.log")) + \
            glob.glob(os.path.join(args.results, f"render_b{batch}_*.log"))
        for log in sorted(logs):
            if not os.path.exists(log[:-4] + ".json"):  # the render failed: its log says why
                failed.append(os.path.basename(log)[:-4])
        for path in ([default] if os.path.exists(default) else []) + variants:
            with open(path) as f:
                render = json.load(f)
            runs = render.get("model_runs", 1)
            # Several runs at once sum their busy time: per run, it is what bounds the stage.
            stages = {s["name"]: s["busy_ms_per_frame"] / (runs if s["name"] == "infer" else 1)
                      for s in render["stages"]}
            stage_names += [n for n in stages if n not in stage_names]
            limit = max(stages, key=stages.get)
            setting = f"{render.get('face_input', '?')}, {runs} run{'s' if runs > 1 else ''}"
            if render.get("frame_cache_mb") == 0:  # every avatar frame decoded on the way
                threads = render.get("frame_threads", 0)
                setting += f", no frame kept, {threads or 'no'} decode thread{'s' * (threads != 1)}"
            rows.append({"batch": batch, "setting": setting, "default": path == default,
                         "frames": render["frames"], "render_fps": render["fps"],
                         "busy_ms_per_frame": stages, "limited_by": limit,
                         "unet_fps": unet[batch]["fps"] if batch in unet else None,
                         "peak_rss_mb": render.get("peak_rss_mb"),
                         "backends": (render.get("unet_backend"),
                                      render.get("audio_encoder_backend"))})
    head = ["batch", "render setting", "frames", "render fps"] + \
        [f"{n} ms/f" for n in stage_names] + ["limited by", "UNet fps", "render/UNet"]
    lines = [head]
    for r in rows:
        unet_fps = r["unet_fps"]
        setting = r["setting"] + ("" if r["default"] else " (not default)")
        lines.append([str(r["batch"]), setting, str(r["frames"]), f"{r['render_fps']:.1f}"] +
                     [f"{r['busy_ms_per_frame'].get(n, 0.0):.2f}" for n in stage_names] +
                     [r["limited_by"], f"{unet_fps:.1f}" if unet_fps else "-",
                      f"{100 * r['render_fps'] / unet_fps:.0f}%" if unet_fps else "-"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    for line in lines:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths)))
    print("ms/f: a stage's busy time per output frame (render --json busy_ms_per_frame; infer's "
          "divided by its runs at once); UNet fps: lipsync bench's median at the same batch; "
          "setting: how faces reach the UNet (frames: uint8, converted by the backend; tensors: "
          "float, built on the CPU) and its runs at once; 'no frame kept': every avatar frame "
          "decoded as the walk reaches it, ahead on the decode threads or by the frames stage")
    for backends in sorted({r["backends"] for r in rows if r["backends"][0]}):
        print(f"UNet on {backends[0]}, audio encoder on {backends[1]}")
    for name in failed:
        print(f"{name}: render failed, see {name}.log")
    if not unet:
        print("lipsync bench failed, see bench.log")
    with open(os.path.join(args.results, "summary.json"), "w") as f:
        json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
