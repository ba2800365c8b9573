"""Entry point: ``python scripts/distill.py CONFIG [key=value ...] [--resume]`` (same as ``ddistill distill``)."""
import sys

from ddistill.cli import main
from ddistill.distributed import exit_process

if __name__ == "__main__":
    exit_process(main(["distill", *sys.argv[1:]]))  # as the ddistill command ends (a torchrun rank: os._exit)
