#!/usr/bin/env bash
# README test command (also what CI runs): the whole suite on the CPU.
source "$(dirname "$0")/env.sh"
exec python -m pytest -q "$@"
