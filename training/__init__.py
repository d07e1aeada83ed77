"""Training side of tagger: datasets, architectures, fit/evaluate/export (needs torch)."""

import sys

TORCH_MISSING = ("training needs PyTorch, which is not installed: pip install torch==2.13.0 "
                 "(the CPU or CUDA build you want), then pip install -e '.[train]'")

if sys.argv[:1] == ["-m"]:  # `python -m training.X`, while Python locates X: say what to install, once
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.stderr.write(f"Error: {TORCH_MISSING}\n")
        raise SystemExit(2) from None
