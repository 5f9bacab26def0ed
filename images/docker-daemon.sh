#!/usr/bin/env bash
# A Docker daemon for `make test-containers`: images/docker-daemon.sh start|stop
#   start  use the running daemon if one answers; else, as root with apt-get, install Debian's docker.io
#          (and debootstrap, for make base-image) and start dockerd in the background. Exit 3 if neither
#          is possible (no root, no apt-get): the container tests then skip and say why.
#   stop   stop the dockerd that `start` started (never one that was already running).
set -euo pipefail
cd "$(dirname "$0")/.."
PIDFILE="${DOCKERD_PIDFILE:-$PWD/.radpipe/dockerd.pid}"
LOG="${DOCKERD_LOG:-$PWD/.radpipe/dockerd.log}"

case "${1:-}" in
  start)
    if docker info >/dev/null 2>&1; then echo "docker: using the running daemon"; exit 0; fi
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      echo "docker: no daemon answers, and this is not root with apt-get to install and start one" >&2
      exit 3
    fi
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
      echo "docker: installing Debian's docker.io and debootstrap"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
    fi
    mkdir -p "$(dirname "$PIDFILE")"
    dockerd >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && { echo "docker: started dockerd (pid $(cat "$PIDFILE"))"; exit 0; }; sleep 1; done
    echo "docker: dockerd did not answer within 60 s; its log ($LOG):" >&2
    tail -n 20 "$LOG" >&2
    exit 3
    ;;
  stop)
    [ -f "$PIDFILE" ] || exit 0
    pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    rm -f "$PIDFILE"
    echo "docker: stopped dockerd (pid $pid)"
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
