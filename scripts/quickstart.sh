#!/usr/bin/env bash
# README quick start: distill scikit-learn's digits (bundled, no download) to 10 images per class with
# distribution matching, evaluate with fresh ConvNets, write runs/quickstart_digits/{synset.pt,grid.png,...}.
# Extra arguments are config overrides, e.g. `bash scripts/quickstart.sh synthesizer.ipc=1`.
source "$(dirname "$0")/env.sh"
exec ddistill distill scripts/configs/quickstart_digits.yaml --resume "$@"
