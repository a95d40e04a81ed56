#!/usr/bin/env python3
"""Writes the demo show's frames (assets/demo/*.png) with the standard library only.

A rainbow wave that sweeps across the scene in 12 frames, then a white flash: on a crowd it
reads as colour rolling around the stadium. Run it again after changing it; the PNGs are
committed so the demo needs no Python imaging library.
"""
import colorsys
import math
import os
import struct
import zlib

W, H, FRAMES = 96, 48, 12
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo")


def png(path, rows):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(data)


os.makedirs(OUT, exist_ok=True)
for i in range(FRAMES):
    rows = []
    for y in range(H):
        row = []
        for x in range(W):
            hue = (x / W + y / (2 * H) - i / FRAMES) % 1.0
            light = 0.45 + 0.1 * math.sin(2 * math.pi * (y / H + i / FRAMES))
            r, g, b = colorsys.hls_to_rgb(hue, light, 1.0)
            row += [int(r * 255), int(g * 255), int(b * 255)]
        rows.append(row)
    png(os.path.join(OUT, f"{i:02d}-wave.png"), rows)
png(os.path.join(OUT, f"{FRAMES:02d}-flash.png"), [[255] * (3 * W)] * H)
