#!/usr/bin/env bash
# `make demo`: the paper's case study, live. Initialise ./vigil-data (SQLite), start the server,
# build (cached) and boot a lab VM under QEMU with the guest sensor inside, attack it over the
# network (`vigil lab attack full`), print the portal URL and login, run until Ctrl-C, then stop
# the VM and the server by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
VIGIL=.venv/bin/vigil
export VIGIL_HOME="${VIGIL_HOME:-$PWD/vigil-data}"
export VIGIL_LAB_RUN="${VIGIL_LAB_RUN:-$VIGIL_HOME/lab}"
PORT="${VIGIL_PORT:-8740}"
EMAIL="${VIGIL_ADMIN_EMAIL:-admin@example.org}"
PWFILE="$VIGIL_HOME/admin-password.txt"
TOKENFILE="$VIGIL_HOME/lab-api-token.txt"
TRUTH="$VIGIL_HOME/lab-ground-truth.jsonl"

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

# The server runs in its own session, so Ctrl-C reaches this script only; the cleanup powers the
# VM down first (its sensor says goodbye to the server), then stops the server.
server=""
lab_started=""
cleanup() {
  trap - INT TERM EXIT
  step "stopping"
  if [ -n "$lab_started" ]; then $VIGIL lab down || true; fi
  if [ -n "$server" ]; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
}
trap cleanup INT TERM EXIT

step "starting vigil server on 127.0.0.1:$PORT"
setsid $VIGIL server --host 127.0.0.1 --port "$PORT" &
server=$!
echo "$server" > "$VIGIL_HOME/server.pid"
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/api/v1/health" >/dev/null 2>&1 && break
  sleep 0.2
done
(umask 077; $VIGIL token api --user "$EMAIL" --name lab --days 1 > "$TOKENFILE")

step "building the lab's guest image (cached in ~/.cache/vigil/lab; about a minute the first time)"
$VIGIL lab build >/dev/null

step "booting the lab VM under QEMU, the guest sensor enrolling at boot"
lab_started=1
$VIGIL lab up --server "http://127.0.0.1:$PORT" --api-token-file "$TOKENFILE" --vms 1

step "attacking lab-vm1 over the network: the paper's case study (ground truth in $TRUTH)"
: > "$TRUTH"
$VIGIL lab attack full --vm lab-vm1 --log "$TRUTH"

step "what Vigil saw"
sleep 3
$VIGIL lab status

cat <<MSG

  Vigil is running, and has seen the attack on lab-vm1.
  Portal:    http://127.0.0.1:$PORT/   (Incidents: the attack as one incident, step by step)
  Login:     $EMAIL
  Password:  $(cat "$PWFILE")   (kept in $PWFILE)
  API docs:  http://127.0.0.1:$PORT/docs
  Again:     .venv/bin/vigil lab attack full --vm lab-vm1   (or one step: bruteforce, privesc...)

  Press Ctrl-C to stop the VM and the server.

MSG
wait "$server" || true
