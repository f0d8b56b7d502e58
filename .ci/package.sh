#!/usr/bin/env bash
# The Debian package, built and checked as an admin would meet it:
#   1. `cargo deb` (release build, man pages from `sluice man`, stripped),
#   2. its contents (`dpkg-deb -c`, conffiles, size, no debug info),
#   3. lintian: no errors,
#   4. installed twice (apt), as sluice: check-config of the shipped
#      configuration and a short serve, systemd-analyze verify and
#      security (<= 2.5) on the installed unit,
#   5. an upgrade keeps a changed configuration and the spool; remove
#      keeps the spool and the conffiles; purge removes the configuration,
#      logs and state but never the spool.
# It leaves the machine as it found it (package purged, spool, user and
# test files removed), also when a step fails. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[package $(date +%H:%M:%S)] $*"; }
fail() {
  echo "package: FAIL: $*" >&2
  exit 1
}
export DEBIAN_FRONTEND=noninteractive
# apt waits for a dpkg lock held by another install instead of failing.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends "$@"; }

if dpkg-query -W -f='${Status}' sluice 2>/dev/null | grep -q "installed"; then
  fail "a sluice package is already installed here; this script installs and purges its own"
fi

# --- tools ---------------------------------------------------------------------
# lintian; dpkg-dev for dpkg-shlibdeps (the package's library Depends); man-db
# and groff for lintian's man page checks; logrotate to check our file.
missing=()
for p in lintian dpkg-dev man-db logrotate; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  apt_get update
  apt_get install "${missing[@]}" >/dev/null
fi
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

# --- 1. build --------------------------------------------------------------------
log "cargo build --release"
cargo build --release --locked
rm -rf target/man
target/release/sluice man --out target/man >/dev/null
log "cargo deb"
rm -rf target/debian
cargo deb --no-build --strip >/dev/null
DEB=$(ls target/debian/sluice_*.deb)
VERSION=$(dpkg-deb -f "$DEB" Version)
log "built $DEB ($(du -h "$DEB" | cut -f1))"

# --- 2. contents -------------------------------------------------------------------
LIST=$(dpkg-deb -c "$DEB" | awk '{print $6}')
MAN8=$(find target/man -name '*.8' | wc -l)
for f in ./usr/sbin/sluice ./etc/sluice/sluice.toml ./etc/sluice/recipients ./etc/logrotate.d/sluice \
  ./usr/lib/systemd/system/sluice.service ./usr/lib/sysusers.d/sluice.conf ./usr/lib/tmpfiles.d/sluice.conf \
  ./usr/share/sluice/systemd/firewall.conf ./usr/share/doc/sluice/copyright \
  ./usr/share/doc/sluice/changelog.Debian.gz ./usr/share/doc/sluice/sluice.example.toml \
  ./usr/share/doc/sluice/README.md ./usr/share/sluice/rules/00_gtube.rules ./usr/share/sluice/rules/README.md \
  ./usr/share/sluice/grafana/sluice.json ./usr/share/sluice/prometheus/sluice-alerts.yml \
  ./usr/share/sluice/nftables/sluice.nft ./usr/share/man/man8/sluice.8.gz \
  ./usr/share/man/man8/sluice-serve.8.gz ./usr/share/man/man8/sluice-check-config.8.gz \
  ./usr/share/man/man5/sluice.toml.5.gz; do
  grep -qxF "$f" <<<"$LIST" || fail "$f is not in the package"
done
[ "$(grep -c '^./usr/share/man/man8/.*\.8\.gz$' <<<"$LIST")" -eq "$MAN8" ] || fail "not every man page is packaged"
[ "$(grep -c '^./usr/share/sluice/rules/.*\.rules$' <<<"$LIST")" -eq "$(ls rules/*.rules | wc -l)" ] ||
  fail "not every rule file is packaged"
CTRL=$(mktemp -d)
dpkg-deb -e "$DEB" "$CTRL"
for f in /etc/sluice/sluice.toml /etc/sluice/recipients /etc/logrotate.d/sluice; do
  grep -qxF "$f" "$CTRL/conffiles" || fail "$f is not a conffile"
done
rm -rf "$CTRL"
EXTRACT=$(mktemp -d)
dpkg-deb -x "$DEB" "$EXTRACT"
SIZE=$(stat -c %s "$EXTRACT/usr/sbin/sluice")
[ "$SIZE" -lt $((40 * 1024 * 1024)) ] || fail "/usr/sbin/sluice is $SIZE bytes"
if readelf -S "$EXTRACT/usr/sbin/sluice" | grep -qE '\.debug_(info|line)'; then fail "/usr/sbin/sluice has debug info"; fi
rm -rf "$EXTRACT"
log "contents OK: $(wc -l <<<"$LIST") entries, $MAN8 pages in man8, /usr/sbin/sluice $((SIZE / 1024 / 1024)) MiB stripped"
log "depends: $(dpkg-deb -f "$DEB" Depends); recommends: $(dpkg-deb -f "$DEB" Recommends); suggests: $(dpkg-deb -f "$DEB" Suggests)"

# --- 3. lintian --------------------------------------------------------------------
log "lintian"
lintian --fail-on error --tag-display-limit 0 "$DEB" | tee target/debian/lintian.txt ||
  fail "lintian found errors"
log "lintian: $(grep -c '^E:' target/debian/lintian.txt || true) errors, $(grep -c '^W:' target/debian/lintian.txt || true) warnings"

# --- 4. install -------------------------------------------------------------------------
USER_BEFORE=$(id -u sluice 2>/dev/null || true)
SPOOL_BEFORE=$([ -e /var/spool/sluice ] && echo yes || true)
TMP=$(mktemp -d)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  apt_get purge sluice >/dev/null 2>&1 || true
  [ -z "$SPOOL_BEFORE" ] && rm -rf /var/spool/sluice
  [ -z "$USER_BEFORE" ] && userdel sluice 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

log "apt install $DEB (twice)"
apt_get install "./$DEB" >/dev/null
apt_get install --reinstall "./$DEB" >/dev/null
dpkg-query -W -f='${Status} ${Version}\n' sluice | grep -qx "install ok installed $VERSION" || fail "not installed"
id sluice >/dev/null || fail "no user sluice"
for d in /var/spool/sluice /var/lib/sluice /var/log/sluice; do
  [ "$(stat -c '%U:%G %a' "$d")" = "sluice:sluice 750" ] || fail "$d: $(stat -c '%U:%G %a' "$d")"
done
UNIT=/usr/lib/systemd/system/sluice.service

log "check-config of the shipped configuration (as root and as sluice)"
/usr/sbin/sluice check-config /etc/sluice/sluice.toml
runuser -u sluice -- /usr/sbin/sluice check-config /etc/sluice/sluice.toml >/dev/null

log "systemd-analyze verify $UNIT"
systemd-analyze verify "$UNIT"
log "systemd-analyze security --offline=true $UNIT"
SCORE_LINE=$(systemd-analyze security --offline=true "$UNIT" 2>&1 | grep 'Overall exposure level')
echo "$SCORE_LINE"
SCORE=$(sed -E 's/.*: ([0-9.]+) .*/\1/' <<<"$SCORE_LINE")
awk -v s="$SCORE" 'BEGIN { exit !(s <= 2.5) }' || fail "exposure $SCORE > 2.5"
# With the firewall drop-in (CAP_NET_ADMIN, netlink) linked in, as documented.
mkdir -p "$TMP/root/etc/systemd/system/sluice.service.d" "$TMP/root/usr/lib/systemd/system"
cp "$UNIT" "$TMP/root/usr/lib/systemd/system/"
cp /usr/share/sluice/systemd/firewall.conf "$TMP/root/etc/systemd/system/sluice.service.d/"
SCORE_FW=$(systemd-analyze security --offline=true --root="$TMP/root" sluice.service 2>&1 |
  grep 'Overall exposure level' | sed -E 's/.*: ([0-9.]+) .*/\1/')
awk -v s="$SCORE_FW" 'BEGIN { exit !(s <= 2.5) }' || fail "exposure with the firewall drop-in $SCORE_FW > 2.5"
log "logrotate -d /etc/logrotate.d/sluice"
logrotate -d /etc/logrotate.d/sluice >/dev/null 2>"$TMP/logrotate.err" || { cat "$TMP/logrotate.err"; fail "logrotate"; }
if grep -qi "error" "$TMP/logrotate.err"; then cat "$TMP/logrotate.err"; fail "logrotate"; fi

# The daemon as the unit runs it (user sluice, the installed directories),
# on a free loopback port instead of 25 (no systemd needed).
log "serve as sluice on loopback"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -e "s|^listen = .*|listen = [\"127.0.0.1:$PORT\"]|" -e 's|^table = "recipients"|table = "/etc/sluice/recipients"|' \
  /etc/sluice/sluice.toml >"$TMP/sluice.toml"
printf '[metrics]\nlisten = "127.0.0.1:0"\n' >>"$TMP/sluice.toml"
chmod 755 "$TMP"
chmod 644 "$TMP/sluice.toml"
setpriv --reuid=sluice --regid=sluice --init-groups -- /usr/sbin/sluice serve -c "$TMP/sluice.toml" 2>"$TMP/serve.err" &
PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
exec 3<>"/dev/tcp/127.0.0.1/$PORT" || { cat "$TMP/serve.err"; fail "serve did not listen"; }
read -r -t 10 GREETING <&3 || true
printf 'QUIT\r\n' >&3
exec 3>&-
[[ "$GREETING" == 220* ]] || { cat "$TMP/serve.err"; fail "no greeting: $GREETING"; }
kill -TERM "$PID"
wait "$PID" || { cat "$TMP/serve.err"; fail "serve exited with an error"; }
PID=""
[ -n "$(find /var/spool/sluice -user sluice -type f -print -quit)" ] || fail "nothing written to the spool as sluice"
[ -f /var/log/sluice/events.log ] || fail "no event log in /var/log/sluice"

# The installed binary as the sluice user with only CAP_NET_BIND_SERVICE on
# port 25 in a network namespace, exporter nft: the loud failure; then with
# CAP_NET_ADMIN the ban reaches the kernel (tests/firewall.rs, pointed at
# the installed binary and user; the test binary is the one the suite built).
log "capabilities: the installed binary as sluice (firewall test)"
SLUICE_INSTALLED_BIN=/usr/sbin/sluice SLUICE_SERVICE_USER=sluice \
  cargo nextest run --no-fail-fast -E 'test(=firewall::without_cap_net_admin_the_nft_exporter_fails_loudly_and_with_it_bans_reach_the_kernel)'

# --- 5. upgrade, remove, purge ---------------------------------------------------------
log "upgrade keeps a changed configuration and the spool"
echo "# changed by the admin" >>/etc/sluice/sluice.toml
echo "mail" >/var/spool/sluice/package-test-marker
rm -rf target/debian/upgrade && mkdir -p target/debian/upgrade
cargo deb --no-build --strip --fast --deb-revision 2 -o target/debian/upgrade/ >/dev/null
apt_get install ./target/debian/upgrade/sluice_*.deb </dev/null >/dev/null
dpkg-query -W -f='${Version}' sluice | grep -q -- '-2$' || fail "not upgraded"
grep -qx "# changed by the admin" /etc/sluice/sluice.toml || fail "the upgrade replaced the changed configuration"
[ -f /var/spool/sluice/package-test-marker ] || fail "the upgrade lost the spool"

log "remove keeps the spool and the configuration"
apt_get remove sluice >/dev/null
[ ! -e /usr/sbin/sluice ] || fail "/usr/sbin/sluice left after remove"
[ -f /var/spool/sluice/package-test-marker ] || fail "remove deleted the spool"
[ -f /etc/sluice/sluice.toml ] || fail "remove deleted the configuration"

log "purge removes configuration, logs and state, keeps the spool"
apt_get purge sluice >"$TMP/purge.out" 2>&1 || { cat "$TMP/purge.out"; fail "purge"; }
grep -q "/var/spool/sluice kept" "$TMP/purge.out" || fail "purge did not say the spool is kept"
[ ! -e /etc/sluice ] || fail "/etc/sluice left after purge"
[ ! -e /var/log/sluice ] || fail "/var/log/sluice left after purge"
[ ! -e /var/lib/sluice ] || fail "/var/lib/sluice left after purge"
[ -f /var/spool/sluice/package-test-marker ] || fail "purge deleted the spool"
dpkg-query -W -f='${Status}' sluice 2>/dev/null | grep -q "installed" && fail "still installed"

log "package OK: $DEB; exposure $SCORE (with the firewall drop-in: ${SCORE_FW:-n/a}); lintian: $(grep -c '^E:' target/debian/lintian.txt || true) errors, $(grep -c '^W:' target/debian/lintian.txt || true) warnings"
