#!/usr/bin/env python3
"""A Weir exec PE in line mode: one JSON record per line in, one per line out.

Scores a per-account window sum: the larger the spend relative to FRAUD_THRESHOLD,
the closer the score gets to 1. Records without a numeric `sum` pass through with
score 0. Flushes after every record so the worker sees output at once.
"""
import json
import os
import sys

threshold = float(os.environ.get("FRAUD_THRESHOLD", "5000"))

for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        continue
    total = record.get("sum")
    score = 0.0
    if isinstance(total, (int, float)) and total > 0:
        score = round(total / (total + threshold), 4)
    record["score"] = score
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()
