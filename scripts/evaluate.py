"""Entry point: ``python scripts/evaluate.py SYNSET [key=value ...]`` (same as ``ddistill evaluate``)."""
import sys

from ddistill.cli import main
from ddistill.distributed import exit_process

if __name__ == "__main__":
    exit_process(main(["evaluate", *sys.argv[1:]]))  # as the ddistill command ends (a torchrun rank: os._exit)
