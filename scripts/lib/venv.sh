# Shared by scripts/demo, scripts/test and scripts/bench: make .venv and install the project.
# Usage: source scripts/lib/venv.sh; ensure_venv [EXTRAS]   (run from the repository root)

ensure_python() {
  PYTHON=""
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PYTHON=$(command -v "$candidate")
      break
    fi
  done
  if [ -z "$PYTHON" ]; then
    echo "Doorbell needs Python 3.11 or newer (Debian 12, Ubuntu 24.04 or Raspberry Pi OS Bookworm)." >&2
    exit 2
  fi
}

apt_install() {
  # Installs Debian packages when missing; only possible as root.
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "please install: sudo apt-get install ${missing[*]}" >&2
    return 1
  fi
  echo "installing ${missing[*]} with apt-get" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

quietly() {
  # Runs a command with its output kept in a temporary log, shown only if it fails.
  local log status=0
  log=$(mktemp "${TMPDIR:-/tmp}/doorbell-setup.XXXXXX")
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" -ne 0 ]; then
    cat "$log" >&2
  fi
  rm -f "$log"
  return "$status"
}

ensure_venv() {
  local extras="${1:-}"
  ensure_python
  if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      # Debian splits venv support out of the interpreter package.
      local version
      version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      apt_install "python${version}-venv" || exit 2
      "$PYTHON" -m venv .venv
    fi
    quietly .venv/bin/python -m pip install --disable-pip-version-check --upgrade pip ||
      echo "could not upgrade pip in .venv; going on with the one it has" >&2
  fi
  local target="."
  [ -n "$extras" ] && target=".[${extras}]"
  if ! quietly .venv/bin/python -m pip install --disable-pip-version-check -e "$target"; then
    echo "installing Doorbell into .venv failed (pip's output is above)" >&2
    exit 2
  fi
  if ! .venv/bin/python -c 'import doorbell' 2>/dev/null; then
    echo "installing Doorbell into .venv failed" >&2
    exit 2
  fi
}
