"""Entry point: ``python scripts/evaluate.py SYNSET [key=value ...]`` (same as ``ddistill evaluate``)."""
import sys

from ddistill.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["evaluate", *sys.argv[1:]]))
