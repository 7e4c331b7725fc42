#!/usr/bin/env bash
# `make demo`: initialise ./vigil-data (SQLite), start the server and a guest sensor watching
# this machine, print the portal URL and login, run until Ctrl-C, then stop both by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
VIGIL=.venv/bin/vigil
export VIGIL_HOME="${VIGIL_HOME:-$PWD/vigil-data}"
PORT="${VIGIL_PORT:-8740}"
EMAIL="${VIGIL_ADMIN_EMAIL:-admin@example.org}"
PWFILE="$VIGIL_HOME/admin-password.txt"

step() { printf '\033[1m>> %s\033[0m\n' "$*"; }

mkdir -p "$VIGIL_HOME" && chmod 700 "$VIGIL_HOME"
if [ ! -s "$PWFILE" ]; then
  step "creating the admin password in $PWFILE (mode 0600)"
  (umask 077; .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))' > "$PWFILE")
fi
step "initialising $VIGIL_HOME (SQLite)"
$VIGIL init --admin-email "$EMAIL" --admin-password-file "$PWFILE"

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is in use: stop what runs there or set VIGIL_PORT" >&2
  exit 1
fi

# Children run in their own sessions, so Ctrl-C reaches this script only and the cleanup
# stops them in order: the sensor first (it says goodbye to the server), then the server.
pids=()
cleanup() {
  trap - INT TERM EXIT
  step "stopping"
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup INT TERM EXIT

step "starting vigil server on 127.0.0.1:$PORT"
setsid $VIGIL server --host 127.0.0.1 --port "$PORT" &
pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/api/v1/health" >/dev/null 2>&1 && break
  sleep 0.2
done

STATE="$VIGIL_HOME/guest-sensor"
ARGS=(--server "http://127.0.0.1:$PORT" --state-dir "$STATE")
if ! ls "$STATE"/credentials* >/dev/null 2>&1; then
  ARGS+=(--enroll-token "$($VIGIL token enroll --tenant default)")
fi
step "starting the guest sensor watching this machine"
setsid $VIGIL sensor guest "${ARGS[@]}" &
pids+=($!)

cat <<MSG

  Vigil is running.
  Portal:    http://127.0.0.1:$PORT/
  Login:     $EMAIL
  Password:  $(cat "$PWFILE")   (kept in $PWFILE)
  API docs:  http://127.0.0.1:$PORT/docs

  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}" || true
