#!/usr/bin/env bash
# The lower bounds of setup.cfg, all at once (issue #14 item 6): a fresh virtualenv with every floor pinned together
# (torch 2.6.0 / torchvision 0.21.0 and numpy 1.25.2, scipy 1.10.0, kornia 0.7.0, tqdm 4.62.0, pyyaml 6.0,
# pillow 9.2.0; scikit-learn 1.3.2 for the tests, the newest that accepts numpy 1.25), then ddistill in editable mode
# with EXTRAS, `pip check`, the versions pip ended with, and the whole test suite.
#
# Usage: bash benchmarks/floor_check.sh VENV [EXTRAS]
#   VENV     where to create the virtualenv (must not exist yet)
#   EXTRAS   ddistill extras (default "test"; "test,graph" adds the graph tests, but their packages may lift numpy
#            above its floor: the printed versions say)
# Run from a fresh clone with ../shared beside it. The exit status is pytest's.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:?usage: bash benchmarks/floor_check.sh VENV [EXTRAS]}"
extras="${2:-test}"
if [ -e "$venv" ]; then
  echo "floor_check: $venv exists; give a new folder (an old environment would not test the floors)" >&2
  exit 2
fi
quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check torch==2.6.0 torchvision==0.21.0 numpy==1.25.2 \
  scipy==1.10.0 kornia==0.7.0 tqdm==4.62.0 pyyaml==6.0 pillow==9.2.0 scikit-learn==1.3.2 2>&1 | quiet
"$venv/bin/pip" install -q --disable-pip-version-check -e "$repo[$extras]" 2>&1 | quiet
"$venv/bin/pip" check
"$venv/bin/pip" freeze | grep -iE "^(torch|torchvision|numpy|scipy|kornia|tqdm|pyyaml|pillow|scikit-learn|torch[-_]geometric|ogb|rdkit)=="
echo "commit $(git -C "$repo" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ)"
cd "$repo"
exec "$venv/bin/python" -m pytest -q -rs -p no:cacheprovider tests
