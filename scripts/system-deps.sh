#!/usr/bin/env bash
# Install the real servers the tests start on loopback: PostgreSQL, OpenLDAP (slapd),
# and Chromium for the browser tests. Debian packages; needs root (CI runs as root).
set -euo pipefail
need=()
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null 2>&1 || need+=(ldap-utils)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "wavekit tests need: ${need[*]} (Debian packages). Run as root or: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "Installing ${need[*]} ..."
export DEBIAN_FRONTEND=noninteractive
# slapd asks questions unless told not to; the tests configure their own slapd anyway.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The packages start system daemons we do not use; the tests run their own on free ports.
service slapd stop >/dev/null 2>&1 || true
service postgresql stop >/dev/null 2>&1 || true
