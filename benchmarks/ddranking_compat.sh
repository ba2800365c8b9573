#!/usr/bin/env bash
# ddistill and DD-Ranking (pip `ddranking`, v0.2.0) in one virtualenv (issue #14 item 6).
#
# ddranking 0.2.0 declares numpy<2.0.0 and scipy<1.16.0, while requirements.txt pins numpy 2.x / scipy 1.17. ddistill
# itself (setup.cfg) accepts numpy>=1.25 / scipy>=1.10, so installing ddranking and ddistill together lets pip
# settle on numpy 1.26 / scipy 1.15. This script does that from a fresh clone and runs the whole test suite there:
#
#   1. python3 -m venv VENV
#   2. pip install torch==2.14.1 torchvision==0.29.1       (the same pins as requirements.txt)
#   3. pip install ddranking -e REPO[test,graph]            (one resolve: numpy<2 / scipy<1.16)
#   4. print the versions pip chose, `pip check`, import ddranking's metric classes
#   5. nice -n 19 VENV/bin/python -m pytest -q tests        (from the repository root)
#
# Usage: bash benchmarks/ddranking_compat.sh [VENV]
#   VENV            where to create the virtualenv (default: a new temporary folder, deleted at exit unless KEEP=1);
#                   an existing one is reused (pip then only adds what is missing).
#   DDR_EXTRAS      ddistill extras to install (default "test,graph"; "test" alone skips the graph tests)
#   SKIP_TESTS=1    install and print versions only
#   PYTEST_ARGS     passed to pytest instead of "-q tests"
# The last line printed is a JSON object with the versions and the pytest summary; the exit status is pytest's.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${DDR_EXTRAS:-test,graph}"

if [ $# -ge 1 ] && [ -n "$1" ]; then
  venv="$1"
else
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/ddranking-compat.XXXXXX")"
  venv="$tmp/venv"
  if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$tmp"' EXIT; fi
fi
py="$venv/bin/python"
quiet_pip() {  # drop pip-config notices about absent local package folders (as scripts/env.sh does)
  "$py" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  return "${PIPESTATUS[0]}"
}

echo "[ddranking-compat] virtualenv: $venv" >&2
[ -x "$py" ] || python3 -m venv "$venv"
echo "[ddranking-compat] pip install torch==2.14.1 torchvision==0.29.1" >&2
quiet_pip torch==2.14.1 torchvision==0.29.1
echo "[ddranking-compat] pip install ddranking -e $repo[$extras]" >&2
quiet_pip ddranking -e "$repo[$extras]"

echo "[ddranking-compat] pip check" >&2
"$py" -m pip check --disable-pip-version-check >&2
"$py" - >&2 <<'EOF'
from ddranking.metrics import AugmentationRobustScore, LabelRobustScoreHard, LabelRobustScoreSoft  # noqa: F401
import ddistill.utils.robust_scores  # noqa: F401
print("[ddranking-compat] ddranking metrics and ddistill import in one interpreter")
EOF

summary="(tests skipped)"
rc=0
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  log="$(mktemp "${TMPDIR:-/tmp}/ddranking-compat-pytest.XXXXXX")"
  set +e
  # shellcheck disable=SC2086
  (cd "$repo" && nice -n 19 "$py" -m pytest ${PYTEST_ARGS:--q tests}) 2>&1 | tee "$log"
  rc="${PIPESTATUS[0]}"
  set -e
  summary="$(grep -E "^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s" "$log" | tail -1 | sed -E 's/^=+ //; s/ =+$//' || true)"
  rm -f "$log"
fi

SUMMARY="$summary" RC="$rc" EXTRAS="$extras" "$py" - <<'EOF'
import json, os, platform
from importlib.metadata import version, PackageNotFoundError

def v(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return None

names = ["ddranking", "ddistill", "numpy", "scipy", "torch", "torchvision", "kornia", "timm", "pandas", "pillow",
         "pyyaml", "tqdm", "scikit-learn", "pytest", "torch-geometric", "ogb", "rdkit", "mlxtend"]
out = {"python": platform.python_version(), "extras": os.environ["EXTRAS"],
       "versions": {n: v(n) for n in names}, "pytest_summary": os.environ["SUMMARY"], "pytest_rc": int(os.environ["RC"])}
print(json.dumps(out))
EOF
exit "$rc"
