#!/usr/bin/env bash
# Set up everything the course needs on a fresh clone; cheap to re-run.
#   scripts/setup_env.sh python   the .venv from requirements.txt (reinstalled only when it changes)
#   scripts/setup_env.sh book     + MathJax from the npm registry, for offline maths in the book
#   scripts/setup_env.sh browser  + headless Chromium (Debian package), for the book screenshots
set -euo pipefail
cd "$(dirname "$0")/.."
want=${1:-python}
VENV=.venv
PYTHON=${PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }

setup_python() {
  local stamp="$VENV/.requirements.sha256"
  local sum
  sum=$(sha256sum requirements.txt | cut -d' ' -f1)
  if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
    log ".venv is up to date with requirements.txt"
    return
  fi
  [[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  log "installing requirements.txt into $VENV (about 2 minutes the first time)"
  # pip's local-index warnings on some machines are noise; real errors still stop the script.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check; exit 1; }
  "$VENV/bin/python" -c "import torch, transformers, diffusers, sentence_transformers, nbval, jupyter_book" \
    || { log "the install is incomplete: see the pip output above"; exit 1; }
  echo "$sum" > "$stamp"
  log "done: $(du -sh "$VENV" | cut -f1) in $VENV"
}

setup_book() {
  if [[ -f node_modules/mathjax/es5/tex-chtml.js ]]; then
    log "MathJax is installed"
  else
    command -v npm >/dev/null || { log "npm is missing: install Node.js (e.g. apt-get install nodejs npm)"; exit 1; }
    log "installing MathJax from the npm registry"
    npm install --no-audit --no-fund --silent
  fi
  # The book serves MathJax itself: copy what the CHTML output needs into a static folder.
  local dst=.cache/book-static/mathjax
  if [[ ! -f $dst/tex-chtml.js ]]; then
    local src=node_modules/mathjax/es5
    mkdir -p "$dst/output"
    cp -r "$src/tex-chtml.js" "$src/input" "$src/a11y" "$src/ui" "$dst"/
    cp -r "$src/output/chtml" "$dst/output/"
  fi
}

setup_browser() {
  if command -v chromium >/dev/null; then
    log "Chromium is installed"
    return
  fi
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing Chromium (Debian package) for the book screenshots"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    log "Chromium is missing and cannot be installed here (needs root + apt-get);"
    log "install the 'chromium' package yourself, or the screenshot test will be skipped."
  fi
}

case $want in
  python) setup_python ;;
  book) setup_python; setup_book ;;
  browser|all) setup_python; setup_book; setup_browser ;;
  *) echo "usage: $0 python|book|browser|all" >&2; exit 2 ;;
esac
