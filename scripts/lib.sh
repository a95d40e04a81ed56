# Shared by scripts/run and scripts/test: bring up what C3S needs on a fresh Debian machine.
# Every function starts only private processes and records their PIDs / data dirs, so the
# callers stop exactly what they started.

set -euo pipefail

C3S_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECANTUS_VERSION="0.7.0b3"

log() { printf '\033[1m[c3s]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root for: $*"; fi
}

apt_install() {
  log "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Sets PG_BIN to the newest installed PostgreSQL's bin directory, installing it when absent.
ensure_pg_binaries() {
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
    apt_install postgresql
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  fi
}

# PostgreSQL refuses to run as root: pick (or make) an unprivileged user to own the cluster.
pg_user() {
  if [ "$(id -u)" != 0 ]; then id -un; return; fi
  if id postgres >/dev/null 2>&1; then echo postgres; return; fi
  id c3spg >/dev/null 2>&1 || useradd --system --no-create-home c3spg
  echo c3spg
}

pg_run() { # pg_run USER CMD...
  local user="$1"; shift
  if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_port() { # wait_for_port PORT SECONDS WHAT
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "$3 did not listen on port $1 within $2 s"
    sleep 0.2
  done
}

# start_private_pg DIR PORT: a PostgreSQL cluster owned by this project, trust auth on
# 127.0.0.1 only. Reuses DIR when it already holds a cluster. Sets PG_URL (to database postgres).
start_private_pg() {
  local dir="$1" port="$2" user
  ensure_pg_binaries
  user="$(pg_user)"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown "$user" "$dir"
  chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    log "creating a private PostgreSQL cluster in $dir"
    pg_run "$user" "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
  fi
  if ! pg_run "$user" "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$port"
    pg_run "$user" "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=${C3S_PG_FSYNC:-on}" start >/dev/null \
      || { tail -n 20 "$dir/server.log" >&2; die "PostgreSQL did not start"; }
  fi
  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

stop_private_pg() { # stop_private_pg DIR
  [ -n "${PG_BIN:-}" ] && [ -f "$1/postmaster.pid" ] || return 0
  pg_run "$(pg_user)" "$PG_BIN/pg_ctl" -D "$1" -m fast -w stop >/dev/null 2>&1 || true
}

# A project-local Python venv with SecantusDB (the MongoDB-wire-compatible stand-in).
ensure_secantus() {
  SECANTUSD="$C3S_ROOT/.venv/bin/secantusd-py"
  if [ -x "$SECANTUSD" ]; then return; fi
  command -v python3 >/dev/null || apt_install python3
  if ! python3 -m venv "$C3S_ROOT/.venv" >/dev/null 2>&1; then
    rm -rf "$C3S_ROOT/.venv"
    apt_install python3-venv
    python3 -m venv "$C3S_ROOT/.venv"
  fi
  log "installing SecantusDB $SECANTUS_VERSION into .venv"
  "$C3S_ROOT/.venv/bin/pip" install -q "SecantusDB==$SECANTUS_VERSION"
}

# start_secantus STORAGE PORT LOG: sets SECANTUS_PID and MONGO_URL. STORAGE may be :memory:.
start_secantus() {
  ensure_secantus
  local storage="$1" port="$2" logfile="$3"
  [ "$storage" = ":memory:" ] || mkdir -p "$storage"
  "$SECANTUSD" --host 127.0.0.1 --port "$port" --storage-path "$storage" >"$logfile" 2>&1 &
  SECANTUS_PID=$!
  wait_for_port "$port" 60 "SecantusDB" || { tail -n 20 "$logfile" >&2; exit 1; }
  MONGO_URL="mongodb://127.0.0.1:$port/?directConnection=true"
}

ensure_cargo() {
  command -v cargo >/dev/null || die "cargo (Rust stable) is needed: https://rustup.rs"
}

# FFmpeg (ffmpeg and ffprobe): the server reads observers' clips with it.
ensure_ffmpeg() {
  command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || apt_install ffmpeg
}

# rustfmt and clippy, which the tests run (rustup's default profile has them).
ensure_lints() {
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    command -v rustup >/dev/null && rustup component add rustfmt clippy
    cargo fmt --version >/dev/null 2>&1 && cargo clippy --version >/dev/null 2>&1 \
      || die "rustfmt and clippy are needed: rustup component add rustfmt clippy"
  fi
}

# start_throwaway_stores: a private PostgreSQL cluster and a SecantusDB in a temporary
# directory, exported for tests and benches as C3S_TEST_DATABASE_URL / MONGODB_URL /
# C3S_SECANTUSD. Both are stopped, and the directory removed, when the calling script exits.
start_throwaway_stores() {
  STORES_DIR="$(mktemp -d /tmp/c3s-stores.XXXXXX)"
  chmod 755 "$STORES_DIR"
  trap stop_throwaway_stores EXIT
  trap 'exit 130' INT TERM
  C3S_PG_FSYNC="${C3S_PG_FSYNC:-off}" start_private_pg "$STORES_DIR/pg" "$(free_port)"
  export C3S_TEST_DATABASE_URL="$PG_URL"
  start_secantus ":memory:" "$(free_port)" "$STORES_DIR/secantus.log"
  export MONGODB_URL="$MONGO_URL"
  export C3S_SECANTUSD="$SECANTUSD"
}

stop_throwaway_stores() {
  local rc=$?
  [ -n "${SECANTUS_PID:-}" ] && kill "$SECANTUS_PID" 2>/dev/null && wait "$SECANTUS_PID" 2>/dev/null || true
  stop_private_pg "$STORES_DIR/pg"
  rm -rf "$STORES_DIR"
  exit $rc
}

# Node.js and the npm packages of package.json (playwright-core for the browser tests, ws and
# timesync for the clock-sync bench, with promise, which timesync requires under Node but does
# not declare), installed from package-lock.json when any is missing.
ensure_node_modules() {
  command -v node >/dev/null || apt_install nodejs npm
  local dep
  for dep in playwright-core ws timesync promise; do
    [ -d "node_modules/$dep" ] || { npm ci --no-audit --no-fund; return; }
  done
}

# The Python side of benches/qr.rs: zxing-cpp (with numpy) in the project's venv.
ensure_zxing() {
  ensure_secantus
  "$C3S_ROOT/.venv/bin/python" -c 'import zxingcpp, numpy' 2>/dev/null \
    || "$C3S_ROOT/.venv/bin/pip" install -q "zxing-cpp==3.1.1" numpy
}
