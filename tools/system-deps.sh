#!/usr/bin/env bash
# System packages the test suite uses beyond Python: Debian's Chromium (report rendering
# tests) and SLURM + munge + MariaDB/slurmdbd (the single-node cluster of the SLURM test).
# Installs only what is missing, and only as root with apt-get; elsewhere it says what the
# tests that need these will skip.
set -euo pipefail
packages=(chromium slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: not root or no apt-get; missing ${missing[*]} (the browser and cluster tests will skip)" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
