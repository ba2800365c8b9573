# Sourced by the README's commands: creates (once) and activates the virtualenv with the pinned
# requirements, then installs ddistill itself in editable mode. Re-running is cheap: the pinned
# requirements are reinstalled only when requirements.txt changes.
#   DDISTILL_VENV  where the virtualenv lives (default: .venv in the repository)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${DDISTILL_VENV:-$repo/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  echo "[ddistill] creating virtualenv $venv" >&2
  python3 -m venv "$venv"
fi
stamp="$venv/.ddistill-requirements.sha"
want="$(sha1sum "$repo/requirements.txt" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[ddistill] installing pinned requirements (torch==2.14.1, torchvision==0.29.1, ...)" >&2
  # (the grep drops this machine's pip-config notices about absent local package folders)
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$repo/requirements.txt" 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$repo" >/dev/null
export PATH="$venv/bin:$PATH"
cd "$repo"
