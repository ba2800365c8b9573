"""Entry point: ``python scripts/inspect_synset.py SYNSET [--grid out.png]`` (same as ``ddistill show``)."""
import sys

from ddistill.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["show", *sys.argv[1:]]))
