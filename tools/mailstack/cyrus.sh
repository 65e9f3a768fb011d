#!/usr/bin/env bash
# A real Cyrus IMAP 3.6 (Debian's package) on loopback, for the live tests that check the
# service on a second server. cyrus-imapd conflicts with dovecot-imapd, so its packages
# are unpacked with `dpkg -x` into a private root (target/cyrus-root) and run from there;
# nothing is installed system-wide. Debian's defaults for the namespace: personal folders
# under `INBOX.`, separator `.`. Any password is accepted (sasl_pwcheck_method alwaystrue:
# test only). Runs as the `mail` user.
#
# Usage:  cyrus.sh install            unpack the packages (idempotent)
#         cyrus.sh start STATE IMAP_PORT LMTP_PORT     start; prints nothing, exits 0 when ready
#         cyrus.sh stop STATE
# CYRUS_SUPPRESS="MOVE": capabilities Cyrus does not announce (suppress_capabilities).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD/target/cyrus-root
bin=$root/usr/lib/cyrus/bin
export LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu

install() {
  [[ -x $bin/master ]] && return 0
  local debs
  debs=$(mktemp -d)
  chmod 755 "$debs"
  # The two packages, and those of their libraries the system lacks.
  apt-cache show cyrus-common >/dev/null 2>&1 || apt-get update >/dev/null
  local pkgs=(cyrus-imapd cyrus-common) p
  for p in $(apt-cache depends cyrus-common cyrus-imapd | awk '/Depends: lib/ {print $2}' | sort -u); do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || pkgs+=("$p")
  done
  (cd "$debs" && { apt-get download "${pkgs[@]}" >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get download "${pkgs[@]}" >/dev/null; }; })
  mkdir -p "$root"
  for d in "$debs"/*.deb; do dpkg -x "$d" "$root"; done
  rm -rf "$debs"
  [[ -x $bin/master ]] || { echo "cyrus.sh: no master in $bin" >&2; exit 1; }
  if ldd "$bin/imapd" | grep -q "not found"; then
    echo "cyrus.sh: libraries missing for imapd:" >&2
    ldd "$bin/imapd" | grep "not found" >&2
    exit 1
  fi
}

start() {
  local state=$1 imap=$2 lmtp=$3
  install
  mkdir -p "$state"/{lib,spool,run}
  cat > "$state/imapd.conf" <<CONF
configdirectory: $state/lib
partition-default: $state/spool
cyrus_user: mail
cyrus_group: mail
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN LOGIN
allowplaintext: yes
autocreate_quota: 0
autocreate_post: 1
virtdomains: userid
defaultdomain: example.com
unixhierarchysep: no
altnamespace: no
lmtp_downcase_rcpt: yes
idlesocket: $state/run/idle
notifysocket: $state/run/notify
lmtpsocket: $state/run/lmtp
mboxname_lockpath: $state/run/lock
proc_path: $state/run/proc
syslog_prefix: cyrus-triage-test
${CYRUS_SUPPRESS:+suppress_capabilities: $CYRUS_SUPPRESS}
CONF
  cat > "$state/cyrus.conf" <<CONF
START {
  recover cmd="$bin/ctl_cyrusdb -C $state/imapd.conf -r"
}
SERVICES {
  imap cmd="$bin/imapd -C $state/imapd.conf" listen="127.0.0.1:$imap" prefork=0
  lmtp cmd="$bin/lmtpd -a -C $state/imapd.conf" listen="127.0.0.1:$lmtp" prefork=0
}
EVENTS {
}
DAEMON {
  idled cmd="$bin/idled -C $state/imapd.conf"
}
CONF
  chown -R mail:mail "$state"
  (cd "$bin" && setsid ./master -C "$state/imapd.conf" -M "$state/cyrus.conf" -p "$state/run/master.pid" -D \
      >"$state/master.log" 2>&1 </dev/null &)
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$imap") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "cyrus.sh: Cyrus did not listen on 127.0.0.1:$imap" >&2
  exit 1
}

stop() {
  local pid
  pid=$(cat "$1/run/master.pid" 2>/dev/null || true)
  [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  pkill -f "$1/imapd.conf" 2>/dev/null || true
}

case ${1:-} in
  install) install ;;
  start) start "$2" "$3" "$4" ;;
  stop) stop "$2" ;;
  *) echo "usage: cyrus.sh install | start STATE IMAP_PORT LMTP_PORT | stop STATE" >&2; exit 2 ;;
esac
