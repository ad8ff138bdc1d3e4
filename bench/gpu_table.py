"""Prints the GPU benchmark as one table from the JSON lines of gpu_engine_bench, gpu_torch_bench
and the test runs (bench/gpu_bench.sh). Exits 1 when a check or a test failed.

    python3 bench/gpu_table.py results/*.jsonl
"""
import json
import sys


# The physical floor of each block of the demo UNet on an H200 at batch 32, in microseconds, from
# the model's layer-by-layer roofline (float16, 80% of the HBM bandwidth): F1 with the block as one
# kernel, F2 with its upsample + concat (up blocks) or residual add folded in too.
FLOOR_H200_B32_US = {
    "inc.inconv.0": (64.85, 64.85),
    "down1.maxpool_conv.0.double_conv.0": (68.27, 68.27),
    "down1.maxpool_conv.0.double_conv.1": (27.31, 27.31),
    "down2.maxpool_conv.0.double_conv.0": (20.48, 20.48),
    "down2.maxpool_conv.0.double_conv.1": (13.66, 13.66),
    "audio_model.conv1": (0.41, 0.41),
    "up3.conv.double_conv.1": (6.83, 6.83),
    "up4.conv.double_conv.0": (40.97, 30.73),
    "up4.conv.double_conv.1": (27.31, 27.31),
    "up5.conv.double_conv.0": (136.54, 95.58),
    "up5.conv.double_conv.1": (54.61, 54.61),
}


def kernels(records):
    """The fused kernel each configuration chose per group at load, against the unfused steps,
    and the kernels of one forward pass."""
    reports = [r for r in records if r["kind"] == "kernels"]
    for r in reports:
        rep = r["report"]
        if not rep["groups"]:
            continue
        print(f"\n== fused kernels chosen at load ({r['config']}, cuda_kernels={r['cuda_kernels']}, "
              f"load {r['load_s']:.1f} s): median ms of the group at the tuning batch")
        print(f"  {'group':48} {'batch':>5} {'chosen':34} {'ms':>8} {'unfused':>8} {'speedup':>8}"
              f"  floor F1/F2 us (H200, b32)")
        for g in rep["groups"]:
            unfused = g["variants"][0]["ms"]
            floor = FLOOR_H200_B32_US.get(g["group"].split(" (")[0])
            for batch, name in g["chosen"].items():
                chosen = next((v for v in g["variants"] if v["name"] == name), None)
                ms = chosen["ms"].get(batch) if chosen else None
                ref = unfused.get(batch)
                speedup = f"{ref / ms:7.2f}x" if ms and ref else ""
                against = ""
                if floor and batch == "32" and ms:
                    against = f"  {floor[0]:.1f}/{floor[1]:.1f} ({1000 * ms / floor[1]:.1f}x F2)"
                print(f"  {g['group']:48} {batch:>5} {name:34} "
                      f"{ms if ms is not None else float('nan'):8.3f} "
                      f"{ref if ref is not None else float('nan'):8.3f} {speedup:>8}{against}")
            for v in g["variants"]:
                times = ", ".join(f"b{b} {t:.3f}" for b, t in v["ms"].items())
                state = "ok" if v["status"] == "ok" else f"NOT USED: {v['status']}"
                print(f"      {v['name']:34} {times:28} {state}")
    if reports:
        print("\n== kernels per forward pass (tuning batches), and the second stream")
        for r in reports:
            counts = ", ".join(f"batch {b}: {n}" for b, n in r["report"]["kernels_per_forward"].items())
            print(f"  {r['config']:24} {counts}")
        side = {r["report"]["side_stream"] for r in reports}
        for text in sorted(side):
            print(f"  side stream: {text}")


def timeline(records):
    """The kernels of one forward pass on the GPU's timeline (gpu_kernel_gaps, medians)."""
    rows = [r for r in records if r["kind"] == "timeline"]
    if not rows:
        return
    print("\n== kernels and the gaps between them per forward pass (frame form, device buffers; "
          "CUPTI, median of each configuration's forward passes)")
    print(f"  {'configuration':34} {'batch':>5} {'kernels':>8} {'span us':>9} {'busy us':>9} "
          f"{'gaps us':>9} {'largest':>8} {'host us':>9}")
    for r in rows:
        print(f"  {r['config']:34} {r['batch']:5d} {r['kernels']:8.0f} {r['span_us']:9.1f} "
              f"{r['busy_us']:9.1f} {r['gaps_us']:9.1f} {r['largest_gap_us']:8.1f} "
              f"{r['host_us']:9.1f}")
        if r.get("dropped_records"):
            print(f"    ({r['dropped_records']} records dropped: the counts above are short)")


def main(paths):
    records = []
    for path in paths:
        with open(path) as f:
            records += [json.loads(line) for line in f if line.strip()]
    failed = False
    print("== correctness")
    for r in records:
        if r["kind"] == "check":
            failed |= not r["pass"]
            print(f"  {'PASS' if r['pass'] else 'FAIL'}  {r['check']}: {r['value']:.3g} "
                  f"(bound {r['bound']:g})")
        elif r["kind"] == "test":
            failed |= not r["pass"]
            print(f"  {'PASS' if r['pass'] else 'FAIL'}  test {r['name']} ({r['seconds']:.1f} s)")
    speed = [r for r in records if r["kind"] == "speed"]
    batches = sorted({r["batch"] for r in speed})
    print("\n== speed: median ms per batch (frames per second at the largest batch); host = host "
          "buffers in and out, device = already on the GPU")
    header = f"  {'implementation':44} {'form':8} {'io':7}" + "".join(
        f"{'b' + str(b) + ' ms':>10}" for b in batches) + f"{'FPS':>9}"
    print(header)
    rows = {}
    for r in speed:
        name = r["impl"]
        if "config" in r:
            name += f" {r['config']}"
        elif "precision" in r:
            name += f" {r['precision']}" + (" graph" if r.get("cuda_graph") else "")
        rows.setdefault((name, r["form"], r["io"]), {})[r["batch"]] = r
    for (name, form, io), by_batch in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                           kv[0][0])):
        cells = "".join(f"{by_batch[b]['median_ms']:10.2f}" if b in by_batch else f"{'':>10}"
                        for b in batches)
        top = by_batch.get(batches[-1]) if batches else None
        fps = f"{top['fps']:9.0f}" if top else ""
        print(f"  {name:44} {form:8} {io:7}{cells}{fps}")
    kernels(records)
    timeline(records)
    print("\n== accuracy (same inputs): max abs difference of the [0,1] output, share of uint8 "
          "pixels within 1")
    for r in records:
        if r["kind"] == "accuracy":
            print(f"  {r['impl'] + ' ' + r['precision']:30} vs {r['against']:24} max abs "
                  f"{r['max_abs']:.4g}, within 1: {100 * r['uint8_within_1']:.1f}%")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
