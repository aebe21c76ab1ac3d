# Shared by scripts/run, scripts/test and the benchmarks: system packages and the virtual environment.
# Sourced, not run. Works as root (apt-get) or as a plain user (sudo -n if allowed, else what is there).

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PYQMAIL_VENV:-$top/.venv}
APT_PACKAGES="python3 python3-venv ucspi-tcp postfix tinycdb daemontools swaks mutt dnsmasq-base openssl xinetd fetchmail getmail6 runit"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"; else return 1; fi
}

ensure_packages() {
  local missing=""
  for p in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  echo "installing Debian packages:$missing" >&2
  # Postfix is installed for its test programs (qmqp-source, smtp-sink...); it is not configured or started.
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections 2>/dev/null
  if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null 2>&1 ||
         { as_root apt-get update -qq >/dev/null 2>&1 &&
           as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }; }; then
    echo "warning: could not install:$missing (not root, no sudo); tests that need them are skipped" >&2
  fi
}

ensure_venv() {
  # Debian's python3: a venv on pyenv's interpreter is not executable by qmail's users (/root is 0700)
  local py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3)
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV" || return 1
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "$top[test]" 2>&1 | grep -v "^WARNING: Location" >&2
  # a plain install, reinstalled each time, so the tests run exactly what a user installs; setuptools'
  # build/ keeps every module it ever copied, so a moved or deleted module would install again without this
  rm -rf "$top/build"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$top" 2>&1 | grep -v "^WARNING: Location" >&2
  [ -x "$VENV/bin/qmail-queue" ]
}
