#!/usr/bin/env python3
"""Seeds the demo scene through the public HTTP API (so the demo also proves the API).

Usage: seed_demo.py BASE_URL ADMIN_LOGIN ADMIN_PASSWORD FRAMES_DIR
Waits for /readyz, logs in, and creates the scene "Demo scene" with every image in FRAMES_DIR
(sorted by name) unless it already exists. Idempotent: a second run changes nothing.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

DEMO_NAME = "Demo scene"
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                 ".gif": "image/gif", ".webp": "image/webp"}


def call(method, url, token=None, body=None, content_type="application/json"):
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_ready(base, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            status, _ = call("GET", f"{base}/readyz")
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.3)
    sys.exit(f"the server at {base} was not ready within {seconds} s")


def main():
    base, login, password, frames_dir = sys.argv[1:5]
    wait_ready(base)
    status, session = call("POST", f"{base}/api/auth/login", body={"login": login, "password": password})
    if status != 200:
        sys.exit(f"admin login failed ({status}): {session}")
    token = session["token"]
    status, page = call("GET", f"{base}/api/scenes?per_page=200", token)
    if any(s["name"] == DEMO_NAME for s in page["items"]):
        print(f"demo scene already there", file=sys.stderr)
        return
    status, scene = call("POST", f"{base}/api/scenes", token, {
        "name": DEMO_NAME, "description": "A rainbow wave rolling round the stands, then a flash.",
        "venue": "Anywhere", "width": 96, "height": 48, "idle_color": "#202020",
        "location_methods": ["qr", "gps", "observer", "seat", "flash"]})
    if status != 201:
        sys.exit(f"creating the demo scene failed ({status}): {scene}")
    scene_id = scene["scene_id"]
    for name in sorted(os.listdir(frames_dir)):
        ext = os.path.splitext(name)[1].lower()
        if ext not in CONTENT_TYPES:
            continue
        with open(os.path.join(frames_dir, name), "rb") as f:
            data = f.read()
        duration = 400 if "flash" in name else 120
        status, body = call("POST", f"{base}/api/scenes/{scene_id}/frames?duration_ms={duration}&name={name}",
                            token, data, CONTENT_TYPES[ext])
        if status != 201:
            sys.exit(f"uploading {name} failed ({status}): {body}")
    # a seat map, so a phone can locate itself by typing its seat: section A, rows 1-4 from
    # the front, seats 1-10 left to right, spread over the scene
    lines = ["section,row,seat,x,y"]
    for row in range(1, 5):
        for seat in range(1, 11):
            lines.append(f"A,{row},{seat},{4.8 + (seat - 1) * 9.6:.1f},{6 + (row - 1) * 12}")
    status, body = call("PUT", f"{base}/api/scenes/{scene_id}/seats", token,
                        ("\n".join(lines) + "\n").encode(), "text/csv")
    if status != 200:
        sys.exit(f"importing the demo seat map failed ({status}): {body}")
    # the show: every frame, looping
    status, body = call("PUT", f"{base}/api/scenes/{scene_id}/show", token, {"loop": True})
    if status != 200:
        sys.exit(f"building the demo show failed ({status}): {body}")
    status, body = call("PATCH", f"{base}/api/scenes/{scene_id}", token, {"status": "open"})
    if status != 200:
        sys.exit(f"opening the demo scene failed ({status}): {body}")
    print(f"demo scene {scene_id} created", file=sys.stderr)


if __name__ == "__main__":
    main()
