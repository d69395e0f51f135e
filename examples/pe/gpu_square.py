#!/usr/bin/env python3
"""A Weir exec PE that computes on the GPU the worker allocated to it (line mode).

The worker starts it with CUDA_VISIBLE_DEVICES (and WEIR_GPUS) set to the UUIDs of the
devices the master placed it on, so CUDA shows it those and no others. For every
record it squares `value` on the device and adds three fields:

  device   the CUDA device's name, or "cpu" without torch or without a CUDA device
  visible  CUDA_VISIBLE_DEVICES as the worker set it
  square   value * value, computed on that device

One answer line per input line, flushed, as the line protocol asks.
"""
import json
import os
import sys

try:
    import torch

    device = torch.device("cuda") if torch.cuda.is_available() else None
except ImportError:  # still a valid PE without torch: it computes on the CPU
    torch, device = None, None

name = torch.cuda.get_device_name(0) if device is not None else "cpu"
visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")

for line in sys.stdin:
    record = json.loads(line)
    value = int(record.get("value", 0))
    if device is not None:
        square = int((torch.tensor([value], device=device, dtype=torch.int64) ** 2).item())
    else:
        square = value * value
    record.update(device=name, visible=visible, square=square)
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()
