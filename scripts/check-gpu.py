#!/usr/bin/env python3
"""Does the installed torch see a CUDA GPU? One line either way; exit 1 when it does not.

The nightly GPU job runs this right after setting up, so that a torch that cannot reach the GPU (a CPU-only
build, or a CUDA build newer than the runner's NVIDIA driver supports) fails the job in one line naming both
versions, instead of every later step failing, or skipping, for the same reason.

    python scripts/check-gpu.py
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import warnings


def driver() -> str:
    """The NVIDIA driver version as nvidia-smi reports it, or why it is not known."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "unknown (no nvidia-smi on PATH)"
    try:
        r = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown (nvidia-smi: {e})"
    lines = (r.stdout if r.returncode == 0 else r.stdout + r.stderr).split("\n")
    first = next((line.strip() for line in lines if line.strip()), "")
    if r.returncode != 0:
        return f"unknown (nvidia-smi exit code {r.returncode}: {first or 'no output'})"
    return first or "unknown (nvidia-smi printed nothing)"


def main() -> int:
    import torch

    cuda = torch.version.cuda or "none (a CPU-only build)"
    # with a driver older than the wheel's CUDA, torch only warns (a paragraph on stderr) and says False: the
    # versions below say it in one line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seen = torch.cuda.is_available()
        gpus = torch.cuda.device_count() if seen else 0
    if not gpus:
        print(f"Error: torch {torch.__version__} sees no CUDA GPU (torch.cuda.is_available() is False): "
              f"torch's CUDA {cuda}, NVIDIA driver {driver()}", file=sys.stderr)
        return 1
    names = ", ".join(sorted({torch.cuda.get_device_name(i) for i in range(gpus)}))
    print(f"torch {torch.__version__} sees {gpus} CUDA GPU{'s' if gpus > 1 else ''} ({names}): torch's CUDA {cuda}, "
          f"NVIDIA driver {driver()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
