# Start a throwaway PostgreSQL on loopback for the test suite and export EQC_ENRICH_TEST_PG_URL.
# Installs Debian's server package when it is missing. Sourced by .ci/run.
start_postgres() {
  local bindir
  bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  local data port
  # a free port, not a fixed one: another server (or another CI run) on this machine must not collide
  port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
  data=$(mktemp -d /tmp/eqc-enrich-pg.XXXXXX)
  chown postgres "$data"
  su postgres -s /bin/sh -c "$bindir/initdb -D $data -A trust -U postgres >/dev/null"
  su postgres -s /bin/sh -c "$bindir/pg_ctl -D $data -l $data/log -o '-k /tmp -h 127.0.0.1 -p $port' -w start >/dev/null"
  export EQC_ENRICH_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
  trap "su postgres -s /bin/sh -c '$bindir/pg_ctl -D $data -m immediate stop' >/dev/null 2>&1 || true" EXIT
}
