# Shared by scripts/run, scripts/test and the benchmarks: system packages and the virtual environment.
# Sourced, not run. scripts/test and the benchmarks work as root (apt-get) or as a plain user (sudo -n if
# allowed, else what is there); scripts/run installs only RUN_PACKAGES, and only as root.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PYQMAIL_VENV:-$top/.venv}
# What running pyqmail needs (scripts/run): Python and its venv module; ucspi-tcp's tcpserver, which
# scripts/run's POP3 step uses (qmail-tcpserver stands in without it); daemontools' multilog for rc's log.
# A|B: either package will do (Debian's ucspi-tcp-ipv6 conflicts with ucspi-tcp and provides it).
RUN_PACKAGES="python3 python3-venv ucspi-tcp|ucspi-tcp-ipv6 daemontools"
# What the tests and benchmarks add: the peers they talk to (Postfix's qmqp-source/smtp-sink etc., swaks,
# mutt, fetchmail, getmail), tinycdb, dnsmasq for DNS, openssl, xinetd, runit. Never installed by scripts/run:
# on a live server Postfix would replace the MTA that is there.
TEST_PACKAGES="$RUN_PACKAGES postfix tinycdb swaks mutt dnsmasq-base openssl xinetd fetchmail getmail6 runit"
TEST_PACKAGES="$TEST_PACKAGES strace"  # tests/test_helpers_audit.py holds a program between two system calls
APT_PACKAGES=$TEST_PACKAGES

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"; else return 1; fi
}

installed() {  # installed PKG[|PKG...]: one of them is installed
  local p
  for p in ${1//|/ }; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" && return 0
  done
  return 1
}

missing_packages() {  # missing_packages LIST: the packages of LIST not installed (of A|B, A)
  local p missing=""
  command -v dpkg-query >/dev/null || return 0  # not Debian: nothing to say
  for p in $1; do installed "$p" || missing="$missing ${p%%|*}"; done
  echo $missing
}

ensure_run_packages() {  # scripts/run: install what running needs, only as root and only what is missing
  local missing
  missing=$(missing_packages "$RUN_PACKAGES")
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "note: not installed: $missing (not root: nothing is installed; what is there is used)" >&2
    return 0
  fi
  echo "installing Debian packages: $missing" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null 2>&1 ||
    { as_root apt-get update -qq >/dev/null 2>&1 &&
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } ||
    echo "warning: could not install: $missing" >&2
}

ensure_packages() {  # scripts/test and the benchmarks: the test set
  local missing
  missing=$(missing_packages "$TEST_PACKAGES")
  [ -z "$missing" ] && return 0
  missing=" $missing"
  echo "installing Debian packages:$missing" >&2
  # Postfix is installed for its test programs (qmqp-source, smtp-sink...); it is not configured or started.
  echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections 2>/dev/null
  if ! { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null 2>&1 ||
         { as_root apt-get update -qq >/dev/null 2>&1 &&
           as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; }; }; then
    echo "warning: could not install:$missing (not root, no sudo); tests that need them are skipped" >&2
  fi
}

ensure_venv() {  # ensure_venv [run]: with "run", the package alone (scripts/run), else with its test tools
  local what="$top[test]"
  [ "${1:-}" = run ] && what=$top
  # Debian's python3: a venv on pyenv's interpreter is not executable by qmail's users (/root is 0700)
  local py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3)
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV" || return 1
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check "$what" 2>&1 | grep -v "^WARNING: Location" >&2
  # a plain install, reinstalled each time, so the tests run exactly what a user installs; setuptools'
  # build/ keeps every module it ever copied, so a moved or deleted module would install again without this
  rm -rf "$top/build"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$top" 2>&1 | grep -v "^WARNING: Location" >&2
  [ -x "$VENV/bin/qmail-queue" ]
}

# Debian's ucspi-tcp-ipv6 (tcpserver with IPv6) for the IPv6 tests, unpacked into the venv, not installed:
# it conflicts with ucspi-tcp, and its tcpserver differs on IPv4 too (TCP6* variables, log lines with
# :::ffff:127.0.0.1), which the tests that compare qmail-tcpserver with ucspi-tcp's tcpserver would see.
# The tests look for VENV/ucspi-tcp-ipv6/usr/bin/tcpserver (tests/conftest.py ipv6_tcpserver).
ensure_tcpserver6() {
  local dir=$VENV/ucspi-tcp-ipv6 tmp
  [ -x "$dir/usr/bin/tcpserver" ] && return 0
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || return 0
  tmp=$(mktemp -d) && chmod 755 "$tmp" || return 0  # apt-get download runs as _apt when it can
  if ! (cd "$tmp" && apt-get download -qq ucspi-tcp-ipv6 >/dev/null 2>&1); then
    as_root apt-get update -qq >/dev/null 2>&1 && (cd "$tmp" && apt-get download -qq ucspi-tcp-ipv6 >/dev/null 2>&1)
  fi
  if ls "$tmp"/ucspi-tcp-ipv6_*.deb >/dev/null 2>&1 && rm -rf "$dir.tmp" &&
     dpkg-deb -x "$tmp"/ucspi-tcp-ipv6_*.deb "$dir.tmp" && [ -x "$dir.tmp/usr/bin/tcpserver" ]; then
    chmod 755 "$dir.tmp" && mv "$dir.tmp" "$dir"
  else
    echo "warning: could not fetch ucspi-tcp-ipv6 (apt-get download); the IPv6 tcpserver tests are skipped" >&2
  fi
  rm -rf "$tmp" "$dir.tmp"
}
