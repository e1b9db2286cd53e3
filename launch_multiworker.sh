#!/usr/bin/env bash
# Starts one distill.py worker per machine of a hosts file, over ssh, each with
# the TF_CONFIG that MultiWorkerMirroredStrategy reads; then prints how to
# watch and stop them. (What the original's multinode_train.sh did for
# Horovod.)
#
# Usage:
#   launch_multiworker.sh HOSTS_FILE python3 distill.py \
#       --distribution_strategy=multi_worker_mirrored --do_train ... 
#
# HOSTS_FILE: one `host` or `host:port` a line (port 2222 when absent); blank
# lines and `#` comments are skipped. The first host is worker 0, the chief:
# it alone writes checkpoints, summaries and eval_results.txt, so --output_dir
# must be one directory every host sees (NFS, GCS, ...), as must the inputs.
# --train_batch_size is the global batch, split across all workers.
#
# Environment:
#   REMOTE_DIR  directory to cd into on every host (default: this script's)
#   LOG_DIR     where each worker's log and pid file go (default:
#               $REMOTE_DIR/multiworker_logs), on each host
#   SSH         the ssh command (default: ssh -o BatchMode=yes)
#   DRY_RUN=1   print what would run on each host instead of running it
set -euo pipefail

if [[ $# -lt 2 ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
hosts_file=$1
shift
if [[ ! -r $hosts_file ]]; then
  echo "error: hosts file '$hosts_file' not found or not readable" >&2
  exit 1
fi
REMOTE_DIR=${REMOTE_DIR:-$(cd "$(dirname "$0")" && pwd)}
LOG_DIR=${LOG_DIR:-$REMOTE_DIR/multiworker_logs}
SSH=${SSH:-ssh -o BatchMode=yes}

hosts=()
workers=()
while read -r line; do
  line=${line%%#*}
  line=${line//[[:space:]]/}
  [[ -z $line ]] && continue
  host=${line%%:*}
  port=2222
  [[ $line == *:* ]] && port=${line##*:}
  if ! [[ $port =~ ^[0-9]+$ ]]; then
    echo "error: $hosts_file: bad port in '$line' (want host or host:port)" >&2
    exit 1
  fi
  hosts+=("$host")
  workers+=("\"$host:$port\"")
done < "$hosts_file"
if [[ ${#hosts[@]} -eq 0 ]]; then
  echo "error: $hosts_file names no host" >&2
  exit 1
fi
cluster=$(IFS=,; echo "{\"worker\": [${workers[*]}]}")
command=$(printf '%q ' "$@")

for i in "${!hosts[@]}"; do
  tf_config="{\"cluster\": $cluster, \"task\": {\"type\": \"worker\", \"index\": $i}}"
  log="$LOG_DIR/worker-$i.log"
  pid="$LOG_DIR/worker-$i.pid"
  # JSON holds no single quote, so single quotes protect it on the far side.
  remote="cd $(printf '%q' "$REMOTE_DIR") && mkdir -p $(printf '%q' "$LOG_DIR") &&"
  remote+=" { TF_CONFIG='$tf_config' nohup $command> $(printf '%q' "$log") 2>&1"
  remote+=" < /dev/null & echo \$! > $(printf '%q' "$pid"); }"
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    echo "on ${hosts[$i]}: $remote"
  else
    $SSH "${hosts[$i]}" "$remote"
    echo "started worker $i on ${hosts[$i]}"
  fi
done

echo
echo "${#hosts[@]} workers, cluster $cluster"
echo "watch the chief:   $SSH ${hosts[0]} tail -f $LOG_DIR/worker-0.log"
echo "watch worker i:    $SSH <host i> tail -f $LOG_DIR/worker-<i>.log"
echo "stop them all:"
for i in "${!hosts[@]}"; do
  echo "  $SSH ${hosts[$i]} 'kill \$(cat $LOG_DIR/worker-$i.pid)'"
done
echo "A kill (SIGTERM) to any worker stops all of them after the same step; the chief"
echo "saves that step, and the same command launched again resumes there."
