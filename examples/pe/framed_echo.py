#!/usr/bin/env python3
"""A Weir exec PE in framed mode: answers every frame with the same frame.

Frames are a little-endian u32 length followed by that many bytes of a record batch
(layout in common/src/record/mod.rs); one answer frame per request frame.
"""
import struct
import sys

inp = sys.stdin.buffer
out = sys.stdout.buffer


def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = inp.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


while True:
    header = read_exact(4)
    if header is None:
        break
    (length,) = struct.unpack("<I", header)
    body = read_exact(length)
    if body is None:
        print("framed_echo.py: input ended inside a frame", file=sys.stderr, flush=True)
        sys.exit(1)
    out.write(header + body)
    out.flush()
