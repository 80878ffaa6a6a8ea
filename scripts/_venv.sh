# Sourced by scripts/*: make .venv (Python 3.11+) with tchu_rpc and its test extras, once per pyproject change.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
stamp="$venv/.tchu-installed"
if [ ! -x "$venv/bin/python" ]; then
  py=""
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      py=$candidate; break
    fi
  done
  [ -n "$py" ] || { echo "tchu_rpc needs Python 3.11 or newer on PATH" >&2; exit 1; }
  "$py" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "Installing tchu_rpc and its test dependencies into .venv ..." >&2
  log="$venv/install.log"
  if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[test]"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "pip install failed; the whole log is $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
