"""The adapter file of a training checkpoint (EMA weights when the run keeps an EMA), to evaluate a run while it
trains or to continue from a committed checkpoint.

    python scripts/export_checkpoint.py build/toy2/adapter-full/checkpoints/step-00000500 /tmp/adapter-500.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genprop_cli.training.trainer import export_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("destination", type=Path)
    parser.add_argument("--no-ema", action="store_true", help="the raw weights, not the EMA")
    parser.add_argument("--half", action="store_true", help="store fp16 weights (half the size, for committing)")
    args = parser.parse_args()
    print(export_checkpoint(args.checkpoint, args.destination, use_ema=not args.no_ema, half=args.half))


if __name__ == "__main__":
    main()
