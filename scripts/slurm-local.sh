#!/usr/bin/env bash
# A real single-node SLURM on this machine, for the SLURM tests and for trying --executor slurm:
# installs Debian's slurmctld, slurmd and munge (when missing and when run as root with apt),
# writes a localhost configuration and starts the daemons (no systemd needed).
#
#   sudo bash scripts/slurm-local.sh          # install if needed, configure, start
#   bash scripts/slurm-local.sh --check       # exit 0 when the scheduler answers, else 1
#   sudo bash scripts/slurm-local.sh --stop   # stop the daemons
#
# One partition, "debug", with this machine's CPUs and memory; no accounting database (sacct is
# not needed: the harness follows jobs through squeue and its own records).
set -euo pipefail

conf_dir=/etc/slurm
state=/var/spool/slurmctld
spool=/var/spool/slurmd
logs=/var/log/slurm

answers() { command -v sinfo >/dev/null 2>&1 && timeout 10 sinfo -h -o %T 2>/dev/null | grep -q -E "idle|mix|alloc"; }

case "${1:-}" in
  --check) answers && exit 0 || exit 1 ;;
  --stop)
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    exit 0 ;;
esac

if answers; then
  echo "slurm-local: the scheduler is already up"; sinfo; exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "slurm-local: run as root (it installs packages and starts daemons)" >&2; exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  command -v apt-get >/dev/null || { echo "slurm-local: needs apt-get (Debian/Ubuntu)" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: a key and the daemon
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null 2>&1 || true; fi
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
if ! pgrep -x munged >/dev/null; then
  if id munge >/dev/null 2>&1; then
    su -s /bin/sh munge -c "/usr/sbin/munged" || /usr/sbin/munged --force
  else
    /usr/sbin/munged --force
  fi
fi

# configuration: this host, its CPUs and memory (minus 1 GiB), one default partition
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 - 1024}' /proc/meminfo)
mkdir -p "$conf_dir" "$state" "$spool" "$logs"
cat > "$conf_dir/slurm.conf" <<CONF
# written by unlearning-bench scripts/slurm-local.sh
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state
SlurmdSpoolDir=$spool
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$logs/slurmctld.log
SlurmdLogFile=$logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
JobRequeue=1
MaxArraySize=10001
KillWait=10
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 1 30); do
  if answers; then echo "slurm-local: up"; sinfo; exit 0; fi
  scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm-local: the daemons did not come up; see $logs/slurmctld.log and $logs/slurmd.log" >&2
tail -5 "$logs/slurmctld.log" "$logs/slurmd.log" >&2 || true
exit 1
