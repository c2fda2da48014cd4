#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target from real content: manifests, media and JSON
that the emulator exports and answers, and the MPDs of the amzdash unit tests.

    python3 fuzz/make_seeds.py [--emulator target/debug/amzmusic-emulator] [--out DIR]

The seeds are raw; `scripts/fuzz.sh --seed --update` fuzzes from them and minimises the result
into fuzz/corpus/<target>/ with `cargo fuzz cmin`, which keeps only what adds coverage.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# common/src/fuzzing.rs: the fixed client session the license seeds are issued to.
SESSION_SECRET = bytes([0x42] * 32)
SESSION_ID = "00112233445566778899aabbccddeeff"
SESSION_NONCE = bytes([0x5A] * 16)
SESSION_KID = bytes([0xB3] * 16)
HKDF_INFO = b"gst-widevine-stub license v1"

TRACKS = ["B0EMUHD001", "B0EMUAL001", "B0EMUATM01", "B0EMUUHD01"]


def write(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def boxes(data, start=0, end=None):
    """(type, offset, size) of the ISO BMFF boxes in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
        if size < 8 or pos + size > end:
            size = end - pos
        yield kind, pos, size
        pos += size


def export(emu, data_dir, tmp):
    """Exports a few tracks in every addressing and scheme; returns the export dirs."""
    dirs = []
    runs = [
        ("B0EMUHD001", ["--addressing", "list", "--scheme", "cbcs"]),
        ("B0EMUHD001", ["--addressing", "template", "--scheme", "cenc"]),
        ("B0EMUHD001", ["--addressing", "base", "--scheme", "cbcs"]),
        ("B0EMUAL001", ["--addressing", "base", "--scheme", "cenc"]),
        ("B0EMUAL001", ["--addressing", "template", "--scheme", "cbcs"]),
        ("B0EMUATM01", ["--addressing", "template"]),
        ("B0EMUUHD01", ["--clear"]),
    ]
    for i, (track, args) in enumerate(runs):
        d = os.path.join(tmp, f"export-{i}")
        subprocess.run(
            [emu, "--data-dir", data_dir, "export", "--out", d, track,
             "--license-url", "https://license.example.com/wv"]
            + args,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        dirs.append(d)
    return dirs


def media_seeds(out, dirs):
    """mpd, sidx, clear_lead, pssh and cenc seeds from exported manifests and media."""
    n = 0
    for d in dirs:
        mpd = open(os.path.join(d, "manifest.mpd"), "rb").read()
        write(out, "mpd", f"emulator-{os.path.basename(d)}.mpd", mpd)
        for b64 in re.findall(rb"<cenc:pssh>([^<]+)</cenc:pssh>", mpd):
            raw = base64.b64decode(b64)
            write(out, "pssh", f"mpd-{hashlib.sha1(raw).hexdigest()[:12]}", raw)
        # SegmentBase: the file, its init range and its index range.
        for m in re.finditer(
            rb"<BaseURL>([^<]+\.mp4)</BaseURL>\s*<SegmentBase[^>]*indexRange=\"(\d+)-(\d+)\"", mpd
        ):
            f = open(os.path.join(d, m.group(1).decode()), "rb").read()
            a, b = int(m.group(2)), int(m.group(3))
            head = struct.pack(">QQI", a, 0, 48000)
            write(out, "sidx", f"{os.path.basename(d)}-{m.group(1).decode()}", head + f[a : b + 1])
            fragments(out, f[:a], f[b + 1 :], f"{os.path.basename(d)}-{m.group(1).decode()}")
            n += 1
        # SegmentTemplate: init.mp4 and the first segments.
        for rep in sorted(os.listdir(d)):
            init = os.path.join(d, rep, "init.mp4")
            if os.path.isfile(init):
                segs = sorted(s for s in os.listdir(os.path.join(d, rep)) if s.endswith(".m4s"))
                media = b"".join(open(os.path.join(d, rep, s), "rb").read() for s in segs[:2])
                fragments(out, open(init, "rb").read(), media, f"{os.path.basename(d)}-{rep}")
    return n


def fragments(out, init, media, name):
    """clear_lead seeds (init + the first fragments, mdat payloads cut short), pssh seeds from
    the init's moov, and cenc seeds from the first samples."""
    for kind, pos, size in boxes(init):
        if kind == b"moov":
            for k2, p2, s2 in boxes(init, pos + 8, pos + size):
                if k2 == b"pssh":
                    write(out, "pssh", f"{name}-moov", init[p2 : p2 + s2])
    kept = b""
    sample = b""
    for kind, pos, size in boxes(media):
        if kind == b"moof":
            kept += media[pos : pos + size]
        elif kind == b"mdat":
            # The payload cut to 64 bytes, its header saying so: the next moof stays in view.
            payload = media[pos + 8 : pos + min(size, 8 + 64)]
            kept += struct.pack(">I4s", 8 + len(payload), b"mdat") + payload
            sample = sample or media[pos + 8 : pos + min(size, 8 + 400)]
            if len(kept) > 3000:
                break
        else:
            kept += media[pos : pos + size]
    for chunk in (0, 15, 255):
        write(out, "clear_lead", f"{name}-c{chunk}",
              struct.pack(">HB", len(init), chunk) + init + kept[:4000])
    if sample:
        # cbcs 1:9 with two subsamples; cenc with an 8-byte IV over the whole sample.
        table = struct.pack(">HIHI", 5, 160, 3, len(sample) - 168)
        write(out, "cenc", f"{name}-cbcs", bytes([3, 1, 9, 2]) + table + bytes(16) + sample)
        write(out, "cenc", f"{name}-cenc", bytes([0, 0, 0, 0]) + bytes(8) + sample)


def unit_test_mpds(out):
    """The MPDs the amzdash unit tests parse (raw string literals holding an <MPD)."""
    src = open(os.path.join(ROOT, "gst-plugin-amzdash/src/mpd/tests.rs")).read()
    for i, m in enumerate(re.finditer(r'r#"(.*?)"#', src, re.S)):
        s = m.group(1)
        if "<MPD" in s:
            write(out, "mpd", f"unit-test-{i}.mpd", s)


def x25519_public(secret):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives import serialization

    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def issue(client_public, kind, policy, kids):
    """A license for the fixed session, as common::license::issue_license writes it."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives import hashes, keywrap, serialization
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    # common::fuzzing::SEED_SERVER_SECRET: the server key the fixed session trusts.
    server = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    shared = server.exchange(X25519PublicKey.from_public_bytes(client_public))
    okm = HKDF(hashes.SHA256(), 48, SESSION_NONCE, HKDF_INFO + SESSION_ID.encode()).derive(shared)
    kek, mac_key = okm[:16], okm[16:]
    keys = [
        {"kid": kid.hex(), "wrapped_key": base64.b64encode(keywrap.aes_key_wrap(kek, bytes([0x11] * 16))).decode()}
        for kid in kids
    ]
    server_public = server.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    payload = json.dumps(
        {
            "version": 1,
            "kind": kind,
            "session_id": SESSION_ID,
            "nonce": base64.b64encode(SESSION_NONCE).decode(),
            "server_public_key": base64.b64encode(server_public).decode(),
            "policy": policy,
            "keys": keys,
        },
        separators=(",", ":"),
    ).encode()
    tag = hmac.new(mac_key, payload, hashlib.sha256).digest()
    return json.dumps(
        {"payload": base64.b64encode(payload).decode(), "mac": base64.b64encode(tag).decode()},
        separators=(",", ":"),
    ).encode()


def license_seeds(out):
    public = x25519_public(SESSION_SECRET)
    challenge = json.dumps(
        {
            "version": 1,
            "kind": "license",
            "session_id": SESSION_ID,
            "nonce": base64.b64encode(SESSION_NONCE).decode(),
            "client_public_key": base64.b64encode(public).decode(),
            "key_ids": [SESSION_KID.hex()],
            "content_id": base64.b64encode(b"B0EMUHD001").decode(),
            "client_info": {"cdm": "gst-widevine-stub", "cdm_version": "0.1.0",
                            "security_level": 3, "platform": "linux"},
        },
        separators=(",", ":"),
    ).encode()
    write(out, "license", "challenge", challenge)
    write(out, "license", "request-body", json.dumps(
        {"drmType": "WIDEVINE", "licenseChallenge": base64.b64encode(challenge).decode()}))
    for name, kind, policy, kids in [
        ("license", "license", {"license_duration_secs": 3600, "renewal_delay_secs": 0, "can_renew": True}, [SESSION_KID]),
        ("renewal", "renewal", {"license_duration_secs": 0, "renewal_delay_secs": 60, "can_renew": True}, [SESSION_KID, bytes(16)]),
        ("forever", "license", {"license_duration_secs": 0, "can_renew": False}, [SESSION_KID]),
    ]:
        lic = issue(public, kind, policy, kids)
        write(out, "license", name, lic)
        write(out, "license", f"{name}-body", json.dumps({"license": base64.b64encode(lic).decode()}))
    for code, msg in [("malformed_challenge", "not a challenge"), ("unknown_key_id", "b3" * 16),
                      ("not_entitled", "no"), ("too_many_requests", "slow down")]:
        write(out, "license", f"error-{code}", json.dumps({"error": code, "message": msg}))


class Emulator:
    def __init__(self, emu, data_dir, tmp):
        env_file = os.path.join(tmp, "emu.env")
        self.proc = subprocess.Popen(
            [emu, "--data-dir", data_dir, "serve", "--env-file", env_file],
            stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline().split()
        assert line[0] == "ready", line
        self.base = line[1]
        self.env = dict(re.findall(r"export (\w+)='([^']*)'", open(env_file).read()))
        self.token_file = open(self.env["AMAZONMUSIC_TOKEN_FILE"], "rb").read()

    def call(self, path, headers=None, data=None, method=None):
        h = {"x-api-key": self.env["AMAZONMUSIC_API_KEY"],
             "Authorization": "Bearer " + self.env["AMAZONMUSIC_ACCESS_TOKEN"]}
        h.update(headers or {})
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            return e.read()

    def close(self):
        self.proc.terminate()
        self.proc.wait()


def json_seeds(out, emu):
    ao_headers = {"x-amzn-market": "US", "X-Amzn-Audio-DrmType": "WIDEVINE"}
    for track in TRACKS:
        for cap in ["SD", "HD", "UHD,ATMOS"]:
            body = emu.call(f"/v1/tracks/{track}/audio",
                            dict(ao_headers, **{"X-Amzn-Audio-Device-Capability": cap}))
            write(out, "audio_object", f"{track}-{cap.replace(',', '_')}", body)
    write(out, "audio_object", "error-406", emu.call("/v1/tracks/B0EMUHD001/audio", ao_headers))
    write(out, "api_json", "album", emu.call("/v1/albums/B0EMUALB01/tracks"))
    write(out, "api_json", "playlist", emu.call("/v1/playlists/B0EMUPL001/tracks"))
    write(out, "api_json", "error-404", emu.call("/v1/albums/NOPE/tracks"))
    write(out, "api_json", "token-file", emu.token_file)
    client_id = emu.env["AMAZONMUSIC_CLIENT_ID"]
    form = lambda d: urllib.parse.urlencode(d).encode()
    pair = emu.call("/auth/o2/create/codepair", data=form(
        {"response_type": "device_code", "client_id": client_id, "scope": "amazon_music:access"}))
    write(out, "api_json", "codepair", pair)
    p = json.loads(pair)
    write(out, "api_json", "token-pending", emu.call("/auth/o2/token", data=form(
        {"grant_type": "device_code", "device_code": p["device_code"], "user_code": p["user_code"]})))
    refresh = json.loads(emu.token_file)["refresh_token"]
    write(out, "api_json", "token-answer", emu.call("/auth/o2/token", data=form(
        {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": client_id})))
    query = ("query AmazonMusicSrcTrack($id: ID!) { track(id: $id) { id title isrc explicit "
             "trackNumber discNumber durationMs artists { name } album { id title artists { name } "
             "image { url } } image { url } } }")
    gql = {"content-type": "application/json", "market": "US"}
    for track in TRACKS + ["B0NOSUCH01"]:
        body = json.dumps({"query": query, "variables": {"id": track}}).encode()
        write(out, "api_json", f"firefly-{track}", emu.call("/graphql", gql, body, "POST"))
    body = json.dumps({"query": "query { nope }", "variables": {}}).encode()
    write(out, "api_json", "firefly-errors", emu.call("/graphql", gql, body, "POST"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--emulator", default=os.path.join(ROOT, "target/debug/amzmusic-emulator"))
    ap.add_argument("--data-dir", default=os.path.join(ROOT, "target/debug/emulator-test-data"))
    ap.add_argument("--out", default=os.path.join(ROOT, "fuzz/seeds"))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = export(a.emulator, a.data_dir, tmp)
        media_seeds(a.out, dirs)
        unit_test_mpds(a.out)
        license_seeds(a.out)
        emu = Emulator(a.emulator, a.data_dir, tmp)
        try:
            json_seeds(a.out, emu)
        finally:
            emu.close()
    for t in sorted(os.listdir(a.out)):
        files = os.listdir(os.path.join(a.out, t))
        size = sum(os.path.getsize(os.path.join(a.out, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")


if __name__ == "__main__":
    sys.exit(main())
