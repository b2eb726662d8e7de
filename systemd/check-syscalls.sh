#!/bin/sh
# check-syscalls.sh — does gemmad live within the seccomp rules of its units?
#
#   check-syscalls.sh SYSTEM_SERVICE USER_SERVICE GEMMAD GEMMACTL MODEL [sanitized]
#
# Runs the built gemmad under strace, on a private session bus and a temporary socket, with
# the tiny model, and puts it through what a service does: load the model, acquire the bus
# name, answer D-Bus property reads, accept socket clients, generate text with the worker
# threads, refuse an image, reload the configuration at SIGHUP, stop at SIGTERM. Then every system call in the trace must be
# allowed by the units' SystemCallFilter= lines (expanded by `systemd-analyze
# syscall-filter`, in the order systemd applies them), every socket must be AF_UNIX
# (RestrictAddressFamilies=AF_UNIX) and no mapping may be writable and executable at once
# (MemoryDenyWriteExecute=yes). The units make a filtered call fail with EPERM; this test
# treats it as the bug it would be.
#
# Exit 77 (skipped) without strace, dbus-run-session or systemd-analyze, where ptrace is not
# permitted, or for a sanitizer build (the sanitizer runtime makes calls of its own, and
# LeakSanitizer's ptrace cannot work under strace); production builds are not sanitized.
set -u

system_service=$1 user_service=$2 gemmad=$3 gemmactl=$4 model=$5
sanitized=${6:-}

skip () {
  echo "SKIP: $*"
  exit 77
}

[ -z "$sanitized" ] || skip "sanitizer build"
for tool in strace dbus-run-session systemd-analyze gdbus; do
  command -v "$tool" >/dev/null 2>&1 || skip "$tool not found"
done
strace -f -qq -o /dev/null true 2>/dev/null || skip "strace cannot trace here (ptrace not permitted)"

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/config" "$tmp/runtime"
chmod 700 "$tmp/runtime"

# ---- the allowed set, per unit --------------------------------------------------------------

# expand NAME: the system calls of a @group (recursively), or NAME itself.
expand () {
  case "$1" in
    @*)
      systemd-analyze syscall-filter "$1" 2>/dev/null | sed -n '2,$p' | sed 's/^ *//' |
        grep -v -e '^#' -e '^$' | while read -r item; do expand "$item"; done
      ;;
    *) echo "$1" ;;
  esac
}

# allowed_set UNIT OUT: systemd's semantics — the first SystemCallFilter= line decides
# between an allow list (plain) and a deny list (~); later lines add to or take from it.
allowed_set () {
  : >"$2"
  mode=
  lines=$(grep '^SystemCallFilter=' "$1" | sed 's/^SystemCallFilter=//')
  if [ -z "$lines" ]; then
    echo "FAIL: $1 has no SystemCallFilter= line"
    exit 1
  fi
  echo "$lines" | while read -r line; do
    case "$line" in
      '~'*) deny=1; line=${line#\~} ;;
      *) deny= ;;
    esac
    if [ -z "$mode" ]; then
      if [ -n "$deny" ]; then
        echo "FAIL: $1: the first SystemCallFilter= is a deny list; this check expects an allow list"
        exit 1
      fi
      mode=allow
      # systemd adds @default to every allow list.
      expand @default >>"$2"
    fi
    for item in $line; do
      expand "$item"
    done | sort -u >"$tmp/items"
    if [ -n "$deny" ]; then
      sort -u "$2" | comm -23 - "$tmp/items" >"$tmp/next"
    else
      sort -u "$2" "$tmp/items" >"$tmp/next"
    fi
    mv "$tmp/next" "$2"
  done || exit 1
  if [ "$(wc -l <"$2")" -lt 100 ]; then
    echo "FAIL: expanding the SystemCallFilter= of $1 gave only $(wc -l <"$2") calls"
    exit 1
  fi
}

allowed_set "$system_service" "$tmp/allowed-system"
allowed_set "$user_service" "$tmp/allowed-user"

# ---- run gemmad ----------------------------------------------------------------------------------

cat >"$tmp/run.sh" <<EOF
#!/bin/sh
# Inside dbus-run-session: gemmad under strace in the background, then the clients.
XDG_CONFIG_HOME="$tmp/config" XDG_RUNTIME_DIR="$tmp/runtime" \\
  strace -f -qq -o "$tmp/trace" "$gemmad" --session --socket "$tmp/gemmad.sock" \\
    --model "$model" --threads 2 --context-size 256 2>"$tmp/gemmad.err" &
strace_pid=\$!
gemmad_pid=
# Whatever goes wrong below, gemmad does not outlive the test.
trap '[ -z "\$gemmad_pid" ] || kill "\$gemmad_pid" 2>/dev/null; kill "\$strace_pid" 2>/dev/null' EXIT
i=0
until grep -q '^gemmad: ready' "$tmp/gemmad.err" 2>/dev/null; do
  i=\$((i + 1))
  if [ \$i -gt 600 ] || ! kill -0 "\$strace_pid" 2>/dev/null; then
    gemmad_pid=\$(head -n 1 "$tmp/trace" 2>/dev/null | cut -d' ' -f1)
    echo "FAIL: gemmad did not become ready:"; cat "$tmp/gemmad.err"; exit 1
  fi
  sleep 0.1
done
gemmad_pid=\$(head -n 1 "$tmp/trace" | cut -d' ' -f1)
status=0
gdbus call --session --dest org.gemmad.Gemmad1 --object-path /org/gemmad/Gemmad1 \\
  --method org.freedesktop.DBus.Properties.GetAll org.gemmad.Gemmad1.Manager >"$tmp/getall" ||
  { echo "FAIL: D-Bus GetAll"; status=1; }
"$gemmactl" --socket "$tmp/gemmad.sock" info >"$tmp/info" 2>&1 ||
  { echo "FAIL: gemmactl info:"; cat "$tmp/info"; status=1; }
"$gemmactl" --socket "$tmp/gemmad.sock" -q generate -n 24 --seed 1 'Say hello.' >"$tmp/answer" 2>&1 ||
  { echo "FAIL: gemmactl generate:"; cat "$tmp/answer"; status=1; }
[ -s "$tmp/answer" ] || { echo "FAIL: gemmactl generate printed nothing"; status=1; }
# A PNG signature and header: gemmad recognises the format and refuses it (no mmproj).
printf '\211PNG\r\n\032\n\000\000\000\rIHDR\000\000\000\001\000\000\000\001\010\002\000\000\000\220wS\336' >"$tmp/one.png"
"$gemmactl" --socket "$tmp/gemmad.sock" -q generate --image "$tmp/one.png" 'What is this?' >"$tmp/image" 2>&1
rc=\$?
[ \$rc -eq 4 ] || { echo "FAIL: an image without mmproj: exit \$rc, expected 4:"; cat "$tmp/image"; status=1; }
# SIGHUP (ExecReload=) re-reads the configuration.
kill -HUP "\$gemmad_pid"
i=0
until grep -q -e 'configuration reloaded' -e 'reloading the configuration failed' "$tmp/gemmad.err"; do
  i=\$((i + 1))
  [ \$i -le 300 ] || { echo "FAIL: no reload after SIGHUP:"; tail -n 5 "$tmp/gemmad.err"; status=1; break; }
  sleep 0.1
done
kill -TERM "\$gemmad_pid"
wait "\$strace_pid"
rc=\$?
gemmad_pid=
[ \$rc -eq 0 ] || { echo "FAIL: gemmad exited with \$rc after SIGTERM:"; tail -n 20 "$tmp/gemmad.err"; status=1; }
exit \$status
EOF
chmod +x "$tmp/run.sh"
if ! dbus-run-session -- "$tmp/run.sh"; then
  exit 1
fi
echo "ok: gemmad loaded the model, answered on D-Bus and the socket and stopped cleanly under strace"

# ---- the trace ------------------------------------------------------------------------------------

# From gemmad's execve on (what the fork between strace and exec did is not gemmad's).
sed -n '/ execve(.*) = 0$/,$p' "$tmp/trace" >"$tmp/gemmad.trace"
[ -s "$tmp/gemmad.trace" ] || { echo "FAIL: no execve of gemmad in the trace"; exit 1; }
sed -n 's/^[0-9][0-9]* \{1,\}\([a-z0-9_]\{1,\}\)(.*/\1/p' "$tmp/gemmad.trace" | sort -u >"$tmp/used"
echo "gemmad made $(wc -l <"$tmp/used") different system calls: $(tr '\n' ' ' <"$tmp/used")"

status=0
for unit in system user; do
  comm -23 "$tmp/used" "$tmp/allowed-$unit" >"$tmp/denied-$unit"
  if [ -s "$tmp/denied-$unit" ]; then
    echo "FAIL: the $unit unit's SystemCallFilter= denies: $(tr '\n' ' ' <"$tmp/denied-$unit")"
    for call in $(cat "$tmp/denied-$unit"); do
      grep -m 3 " $call(" "$tmp/gemmad.trace"
    done
    status=1
  else
    echo "ok: every call is allowed by the $unit unit's SystemCallFilter="
  fi
done

if grep -E ' socket(pair)?\(' "$tmp/gemmad.trace" | grep -v -E ' socket(pair)?\(AF_UNIX,' >"$tmp/families"; then
  echo "FAIL: sockets of another family than AF_UNIX (RestrictAddressFamilies=AF_UNIX):"
  cat "$tmp/families"
  status=1
else
  echo "ok: only AF_UNIX sockets"
fi

if grep -E ' (mmap|mprotect|pkey_mprotect)\(' "$tmp/gemmad.trace" |
     grep 'PROT_WRITE' | grep 'PROT_EXEC' >"$tmp/wx"; then
  echo "FAIL: writable and executable memory (MemoryDenyWriteExecute=yes):"
  cat "$tmp/wx"
  status=1
else
  echo "ok: no writable+executable mapping"
fi
exit $status
