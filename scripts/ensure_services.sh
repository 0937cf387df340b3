#!/usr/bin/env bash
# Make sure the PostgreSQL and RabbitMQ servers the integration tests use are answering.
# Starts whichever is down and waits (bounded) until it answers.
set -euo pipefail

PG_HOST=${CJLEDGER_TEST_PG_HOST:-127.0.0.1}
PG_PORT=${CJLEDGER_TEST_PG_PORT:-5432}
RABBIT_PORT=${CJLEDGER_TEST_RABBIT_PORT:-5672}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pg_ready() {
  if command -v pg_isready >/dev/null 2>&1; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
  else
    port_open "$PG_HOST" "$PG_PORT"
  fi
}

wait_for() { # name, seconds, check...
  local name=$1 seconds=$2; shift 2
  for ((i = 0; i < seconds; i++)); do
    if "$@"; then echo "services: $name is up"; return 0; fi
    sleep 1
  done
  echo "services: $name did not answer within ${seconds}s" >&2
  return 1
}

if ! pg_ready; then
  echo "services: starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
wait_for PostgreSQL 60 pg_ready

if ! port_open 127.0.0.1 "$RABBIT_PORT"; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached || true
fi
wait_for RabbitMQ 90 port_open 127.0.0.1 "$RABBIT_PORT"
