#!/usr/bin/env bash
# Build the sample tenant apps that are compiled (their outputs are not checked in): the airline batch app in
# Java (tenant_apps/airline/app-java/ingest-file.jar, runtime "jvm", with Maven) and as a static Go executable
# (tenant_apps/airline/app-static/ingest-file, runtime "static"). Each is built again only when a source file
# is newer than what was built. Run by `make setup`; the tests (tests/test_runtimes.py) run it too.
set -euo pipefail
cd "$(dirname "$0")/.."

newer_than() {  # newer_than OUTPUT FILE...: the output is missing, or a file is newer
  local out=$1; shift
  [ ! -e "$out" ] && return 0
  [ -n "$(find "$@" -newer "$out" -type f -print -quit)" ]
}

java_app=tenant_apps/airline/app-java
if newer_than "$java_app/ingest-file.jar" "$java_app/pom.xml" "$java_app/src"; then
  echo "sample apps: building $java_app/ingest-file.jar (Maven)"
  (cd "$java_app" && mvn -B -q -Dstyle.color=never package)
fi

static_app=tenant_apps/airline/app-static
go=$(command -v go || echo /usr/local/go/bin/go)
if newer_than "$static_app/ingest-file" "$static_app/main.go" "$static_app/go.mod" "$static_app/go.sum"; then
  echo "sample apps: building $static_app/ingest-file (Go, statically linked)"
  (cd "$static_app" && CGO_ENABLED=0 GOFLAGS=-mod=readonly "$go" build -trimpath -ldflags=-s -o ingest-file .)
fi
