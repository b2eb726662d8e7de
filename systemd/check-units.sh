#!/bin/sh
# check-units.sh — offline checks of gemmad's systemd files, run by `meson test --suite systemd`.
#
#   check-units.sh verify   LIBEXECDIR GEMMAD SYSTEM_SERVICE SYSTEM_SOCKET USER_SERVICE USER_SOCKET SYSUSERS TMPFILES
#   check-units.sh security LIBEXECDIR GEMMAD SYSTEM_SERVICE SYSTEM_THRESHOLD USER_SERVICE USER_THRESHOLD
#
# The unit files are the generated ones (ExecStart=LIBEXECDIR/gemmad); they are copied to a
# temporary directory under the names they are installed as, with ExecStart pointing at the
# built GEMMAD, because systemd-analyze insists that the command exists.
#
# verify:   `systemd-analyze verify` (system and --user) must print nothing: it exits 0 even
#           for an unknown key or a value it ignores, so any output is a failure. The
#           sysusers.d entry is applied to an empty root, and (as root only: it chowns) the
#           tmpfiles.d entry after it, so a user name the two disagree on shows up.
# security: `systemd-analyze security --offline=yes --threshold=N`; N is the overall exposure
#           in tenths (5 = 0.5). The thresholds are the scores the units have now, so a
#           weakened sandbox fails. A newer systemd that rates more settings may raise a
#           score: then look at the new ✗ lines and raise the number on purpose.
#
# Exit 77 (skipped) when systemd-analyze is missing or too old for --offline/--threshold (< 250).
set -u

mode=$1
shift

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "SKIP: systemd-analyze not found"
  exit 77
fi

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/system" "$tmp/user" "$tmp/runtime" "$tmp/root/etc"
chmod 700 "$tmp/runtime"
# The user manager that `systemd-analyze --user` simulates needs a runtime directory.
XDG_RUNTIME_DIR="$tmp/runtime"
export XDG_RUNTIME_DIR

# stage SOURCE NAME LIBEXECDIR GEMMAD: copy SOURCE to NAME, ExecStart pointed at GEMMAD.
stage () {
  if [ ! -f "$1" ]; then
    echo "FAIL: $1: no such file"
    exit 1
  fi
  sed "s|^ExecStart=$3/gemmad\\([ ]\\)|ExecStart=$4\\1|" "$1" >"$2" || exit 1
  case "$2" in
    *.service)
      if ! grep -q "^ExecStart=$4 " "$2"; then
        echo "FAIL: $1: no 'ExecStart=$3/gemmad …' line"
        exit 1
      fi
      ;;
  esac
}

# quiet_run WHAT COMMAND…: COMMAND must succeed and print nothing.
quiet_run () {
  what=$1
  shift
  out=$("$@" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || [ -n "$out" ]; then
    echo "FAIL: $what (exit $rc):"
    echo "$out"
    exit 1
  fi
  echo "ok: $what"
}

# systemd wants an absolute ExecStart; meson passes GEMMAD relative to the build directory.
case "$2" in
  /*) ;;
  *)
    libexecdir_arg=$1
    gemmad_arg=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
    shift 2
    set -- "$libexecdir_arg" "$gemmad_arg" "$@"
    ;;
esac

case "$mode" in
verify)
  libexecdir=$1 gemmad=$2
  stage "$3" "$tmp/system/gemmad.service" "$libexecdir" "$gemmad"
  stage "$4" "$tmp/system/gemmad.socket" "$libexecdir" "$gemmad"
  stage "$5" "$tmp/user/gemmad.service" "$libexecdir" "$gemmad"
  stage "$6" "$tmp/user/gemmad.socket" "$libexecdir" "$gemmad"
  # Absolute: with --root=, systemd-sysusers and systemd-tmpfiles would look for a relative
  # path inside the root.
  sysusers=$(cd "$(dirname "$7")" && pwd)/$(basename "$7")
  tmpfiles=$(cd "$(dirname "$8")" && pwd)/$(basename "$8")

  quiet_run "systemd-analyze verify (system units)" \
    systemd-analyze verify --man=no "$tmp/system/gemmad.service" "$tmp/system/gemmad.socket"
  quiet_run "systemd-analyze --user verify (user units)" \
    systemd-analyze --user verify --man=no "$tmp/user/gemmad.service" "$tmp/user/gemmad.socket"

  if command -v systemd-sysusers >/dev/null 2>&1; then
    systemd-sysusers --root="$tmp/root" "$sysusers" >/dev/null 2>"$tmp/sysusers.err"
    rc=$?
    line=$(grep '^gemmad:' "$tmp/root/etc/passwd" 2>/dev/null)
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
      echo "FAIL: systemd-sysusers $sysusers (exit $rc) did not create the gemmad user:"
      cat "$tmp/sysusers.err"
      exit 1
    fi
    case "$line" in
      *:/var/lib/gemmad:*) ;;
      *) echo "FAIL: gemmad's home is not /var/lib/gemmad: $line"; exit 1 ;;
    esac
    uid=$(echo "$line" | cut -d: -f3)
    if [ "$uid" -ge 1000 ]; then
      echo "FAIL: gemmad is not a system user (uid $uid)"
      exit 1
    fi
    echo "ok: sysusers.d creates system user gemmad (uid $uid in an empty root)"

    if [ "$(id -u)" = 0 ] && command -v systemd-tmpfiles >/dev/null 2>&1; then
      quiet_run "systemd-tmpfiles --create (in the same root)" \
        systemd-tmpfiles --root="$tmp/root" --create "$tmpfiles"
      owner=$(stat -c %u "$tmp/root/var/lib/gemmad/models")
      if [ "$owner" != "$uid" ]; then
        echo "FAIL: /var/lib/gemmad/models belongs to uid $owner, not to gemmad ($uid)"
        exit 1
      fi
      echo "ok: tmpfiles.d makes /var/lib/gemmad/models for gemmad"
    else
      echo "note: tmpfiles.d not applied (needs root to chown, and systemd-tmpfiles)"
    fi
  else
    echo "note: systemd-sysusers not found: sysusers.d/tmpfiles.d entries not checked"
  fi
  ;;

security)
  libexecdir=$1 gemmad=$2
  stage "$3" "$tmp/system/gemmad.service" "$libexecdir" "$gemmad"
  system_threshold=$4
  stage "$5" "$tmp/user/gemmad.service" "$libexecdir" "$gemmad"
  user_threshold=$6

  if ! systemd-analyze security --help 2>&1 | grep -q -- '--threshold'; then
    echo "SKIP: this systemd-analyze has no security --offline/--threshold (systemd < 250)"
    exit 77
  fi
  status=0
  # The last line of the report is "→ Overall exposure level for gemmad.service: 0.5 SAFE 😀".
  systemd-analyze security --offline=yes --threshold="$system_threshold" \
    "$tmp/system/gemmad.service" >"$tmp/system.txt" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "FAIL: system gemmad.service is above exposure $system_threshold/10 (exit $rc):"
    grep -E '✗|Overall|rror' "$tmp/system.txt"
    status=1
  else
    echo "ok: system unit: $(grep Overall "$tmp/system.txt")"
  fi
  systemd-analyze --user security --offline=yes --threshold="$user_threshold" \
    "$tmp/user/gemmad.service" >"$tmp/user.txt" 2>&1
  rc=$?
  if [ $rc -ne 0 ]; then
    echo "FAIL: user gemmad.service is above exposure $user_threshold/10 (exit $rc):"
    grep -E '✗|Overall|rror' "$tmp/user.txt"
    status=1
  else
    echo "ok: user unit: $(grep Overall "$tmp/user.txt")"
  fi
  exit $status
  ;;

*)
  echo "usage: check-units.sh verify|security …" >&2
  exit 2
  ;;
esac
