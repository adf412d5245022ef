#!/bin/sh
# Install Slurm (slurm-wlm) and munge for the integration tests, if they are not there yet.
# Idempotent and quiet; needs root (or sudo). The tests start the daemons themselves
# (tests/slurm/cluster.py); nothing is started or enabled here.
set -eu

need=""
for bin in slurmctld slurmd sbatch munged; do
    if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$bin" ]; then
        need=1
    fi
done
[ -z "$need" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "install-slurm: installed $(dpkg-query -W -f='slurm-wlm ${Version}, ' slurm-wlm)$(dpkg-query -W -f='munge ${Version}' munge)"
