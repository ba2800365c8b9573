"""Entry point: ``python scripts/distill.py CONFIG [key=value ...] [--resume]`` (same as ``ddistill distill``)."""
import sys

from ddistill.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["distill", *sys.argv[1:]]))
