"""Prints a node's images as its CRI image service lists them, as JSON.

Usage: list-images.py STUBS_DIR unix:///path/to/containerd.sock
STUBS_DIR holds api_pb2*.py generated from api.proto (scripts/testbed.sh cri-images makes it).
"""

import json
import sys

sys.path.insert(0, sys.argv[1])

import api_pb2  # noqa: E402
import api_pb2_grpc  # noqa: E402
import grpc  # noqa: E402


def main(address):
    with grpc.insecure_channel(address) as channel:
        reply = api_pb2_grpc.ImageServiceStub(channel).ListImages(api_pb2.ListImagesRequest(), timeout=30)
    images = [
        {
            "id": image.id,
            "repoTags": list(image.repo_tags),
            "repoDigests": list(image.repo_digests),
            "size": image.size,
            # proto3 cannot tell "false" from "not reported": containerd 1.6 never sets it.
            "pinned": image.pinned,
        }
        for image in reply.images
    ]
    json.dump(sorted(images, key=lambda image: image["id"]), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main(sys.argv[2])
