#!/usr/bin/env python3
"""A Weir exec PE in lines mode that crashes once, to exercise restart and replay.

The first time it runs (the file named by CRASH_ONCE_MARKER does not exist yet) it
creates that file, answers CRASH_ONCE_AFTER lines (default 1) unchanged, then exits
with status 3 in the middle of the batch. Every later run finds the marker and passes
all lines through. The worker must restart it and replay the unanswered batch.
"""
import os
import sys

marker = os.environ.get("CRASH_ONCE_MARKER")
if not marker:
    print("crash_once.py: CRASH_ONCE_MARKER is not set", file=sys.stderr, flush=True)
    sys.exit(2)
crash_after = int(os.environ.get("CRASH_ONCE_AFTER", "1"))
first_run = not os.path.exists(marker)
if first_run:
    with open(marker, "w") as f:
        f.write("crashed\n")

out = sys.stdout.buffer
answered = 0
for line in sys.stdin.buffer:
    if first_run and answered >= crash_after:
        print(f"crash_once.py: crashing after {answered} lines", file=sys.stderr, flush=True)
        sys.exit(3)
    out.write(line if line.endswith(b"\n") else line + b"\n")
    out.flush()
    answered += 1
