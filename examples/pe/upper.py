#!/usr/bin/env python3
"""A Weir exec PE in lines mode: uppercases the string field `page`, passes the rest.

Protocol (docs/pe-protocol.md): one JSON object per line in, exactly one line out per
line in, in order. The worker keeps each record's source, seq, key and event time, so
the script only deals with fields. Flushes after every line so the worker sees each
answer at once.
"""
import json
import sys

out = sys.stdout.buffer
for raw in sys.stdin.buffer:
    try:
        record = json.loads(raw)
    except ValueError as e:
        # Still one answer per line: drop what cannot be read, and say so on stderr.
        print(f"upper.py: dropping unreadable line: {e}", file=sys.stderr, flush=True)
        out.write(b"\n")
        out.flush()
        continue
    if isinstance(record, dict) and isinstance(record.get("page"), str):
        record["page"] = record["page"].upper()
    out.write(json.dumps(record, separators=(",", ":")).encode() + b"\n")
    out.flush()
