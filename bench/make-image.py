#!/usr/bin/env python3
"""Writes an OCI image layout with LAYERS gzip layers of about MB_PER_LAYER
megabytes each (uncompressed) of random-ish, compressible data: each file is
a mix of random bytes and repeated text, so gzip roughly halves it.

usage: make-image.py DIR TAG LAYERS MB_PER_LAYER
"""
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile


def blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest


def layer_tar(index, megabytes, rng):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directory = tarfile.TarInfo(f"data{index}")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        directory.mtime = 1700000000
        tar.addfile(directory)
        words = b"kiln layer %d benchmark text line with some repetition\n" % index
        for n in range(megabytes * 4):
            # 256 KiB per file: half random, half text.
            data = rng.randbytes(128 * 1024) + (words * (128 * 1024 // len(words) + 1))[: 128 * 1024]
            info = tarfile.TarInfo(f"data{index}/file{n:05d}.bin")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def main():
    layout, tag, layers, megabytes = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    rng = random.Random(42)
    diff_ids, descriptors = [], []
    for i in range(layers):
        plain = layer_tar(i, megabytes, rng)
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
        gz = subprocess.run(["pigz", "-6", "-n", "-c"], input=plain, capture_output=True, check=True).stdout
        descriptors.append({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": blob(layout, gz),
            "size": len(gz),
        })
    config = json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"bench layer {i}"} for i in range(layers)],
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": blob(layout, config),
            "size": len(config),
        },
        "layers": descriptors,
    }).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": blob(layout, manifest),
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    total = sum(d["size"] for d in descriptors)
    print(f"{layers} layers, {layers * megabytes} MB uncompressed, {total / 1e6:.0f} MB gzip")


if __name__ == "__main__":
    main()
