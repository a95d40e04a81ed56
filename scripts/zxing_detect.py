#!/usr/bin/env python3
"""zxing-cpp on a greyscale photo, tiled like C3S's own detector (zxing-cpp returns at most 255
codes per call). Used by benches/qr.rs for comparison.

Usage: zxing_detect.py RAW_GREY WIDTH HEIGHT TILE OVERLAP [RUNS]
Prints one JSON object: {"seconds": median wall time of RUNS detections (default 1),
"codes": [{"hex", "cx", "cy"}]}.
"""
import json
import sys
import time

import numpy as np
import zxingcpp

raw, w, h, tile, overlap = sys.argv[1], *map(int, sys.argv[2:6])
runs = int(sys.argv[6]) if len(sys.argv) > 6 else 1
img = np.fromfile(raw, dtype=np.uint8).reshape(h, w)


def starts(length):
    step = tile - overlap
    out = list(range(0, max(length - overlap, 1), step))
    if out and out[-1] + tile < length:
        out.append(length - tile)
    return out


def detect():
    codes = {}
    for y in starts(h):
        for x in starts(w):
            part = np.ascontiguousarray(img[y:y + tile, x:x + tile])
            for b in zxingcpp.read_barcodes(part, formats=zxingcpp.BarcodeFormat.QRCode):
                key = bytes(b.bytes).hex()
                if key in codes:
                    continue
                p = b.position
                pts = [p.top_left, p.top_right, p.bottom_right, p.bottom_left]
                codes[key] = {"hex": key, "cx": x + sum(q.x for q in pts) / 4, "cy": y + sum(q.y for q in pts) / 4}
    return codes


times = []
for _ in range(runs):
    started = time.perf_counter()
    codes = detect()
    times.append(time.perf_counter() - started)
times.sort()
print(json.dumps({"seconds": times[len(times) // 2], "codes": list(codes.values())}))
