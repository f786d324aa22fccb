#!/usr/bin/env bash
# Builds the image and checks that it serves: /classify answers as uid 1000, with a read-only root
# (and a tmpfs on /tmp), and as an arbitrary uid; the code is not writable by the app; exports name
# the commit; the health check turns healthy; `docker stop` (SIGTERM) ends it with exit code 0.
# Prints build time, image size, and each run's results; exits 1 when a check fails, 77 without Docker.
#
#   scripts/docker-smoke.sh                          # the Dockerfile's defaults (PyTorch's CPU index)
#   TORCH_WHEELS=/opt/wheels scripts/docker-smoke.sh # offline: torch's wheel from a local folder
#
# Settings (environment): DOCKER (docker), IMAGE (diffllama-lens:smoke), PORT (7860; the host port),
# NETWORK=host (run the build and the containers on the host's network, e.g. where Docker has no
# bridge; the app then listens on PORT itself), TORCH_WHEELS (a folder holding the torch wheel, served
# as the PyTorch index on 127.0.0.1, port INDEX_PORT or a free one; implies NETWORK=host),
# BUILD_ARGS (more `docker build` arguments, e.g. "--build-arg PIP_INDEX_URL=https://mirror/simple"),
# STOP_TIMEOUT (30, the seconds docker stop waits before SIGKILL).
set -uo pipefail
cd "$(dirname "$0")/.."

DOCKER=${DOCKER:-docker}
IMAGE=${IMAGE:-diffllama-lens:smoke}
PORT=${PORT:-7860}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
NETWORK=${NETWORK:-}
[ -n "${TORCH_WHEELS:-}" ] && NETWORK=host
FAILED=0

if ! "$DOCKER" info >/dev/null 2>&1; then
    echo "docker-smoke: no Docker daemon reachable through '$DOCKER'; nothing checked"
    exit 77
fi

say() { printf '%s\n' "$*"; }
check() {  # check DESCRIPTION COMMAND...: runs the command, prints ok / FAILED
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then say "  ok      $what"; else say "  FAILED  $what"; FAILED=1; fi
}

serve_torch_index() {  # a PEP 503 index of TORCH_WHEELS' torch wheels on a free local port; sets TORCH_INDEX_URL
    INDEX_DIR=$(mktemp -d)
    mkdir -p "$INDEX_DIR/simple/torch"
    ln -s "$(cd "$TORCH_WHEELS" && pwd)"/torch-*.whl "$INDEX_DIR/simple/torch/"
    local port=${INDEX_PORT:-}  # the same port for every build keeps the torch layer cached (its URL is a build argument)
    [ -n "$port" ] || port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    python3 -m http.server "$port" --bind 127.0.0.1 --directory "$INDEX_DIR" >/dev/null 2>&1 &
    INDEX_PID=$!
    TORCH_INDEX_URL="http://127.0.0.1:$port/simple"
    trap 'kill $INDEX_PID 2>/dev/null; rm -rf "$INDEX_DIR"' EXIT
}

build() {
    local commit args=()
    commit=$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
    [ -n "${TORCH_WHEELS:-}" ] && serve_torch_index && args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
    [ "$NETWORK" = host ] && args+=(--network host)
    say "build: $IMAGE (commit $commit)"
    local start=$SECONDS
    # shellcheck disable=SC2086  # BUILD_ARGS is a list of arguments
    if ! "$DOCKER" build -q "${args[@]}" ${BUILD_ARGS:-} --build-arg "GIT_COMMIT=$commit" -t "$IMAGE" . >/dev/null; then
        say "  FAILED  docker build"; exit 1
    fi
    say "  built in $((SECONDS - start)) s; image size $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.2f GB", $1 / 1e9}')"
    COMMIT=$commit
}

start() {  # start ARGS...: the image, detached, with `docker run` ARGS; sets CID
    local network=(-p "127.0.0.1:$PORT:7860")
    [ "$NETWORK" = host ] && network=(--network host -e "GRADIO_SERVER_PORT=$PORT")
    CID=$("$DOCKER" run -d "${network[@]}" "$@" "$IMAGE")
}

serving() {  # waits (at most 300 s) until the page answers; fails at once if the container ends
    local _
    for _ in $(seq 300); do
        curl -fs -o /dev/null "http://127.0.0.1:$PORT/" && return 0
        [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$CID")" = true ] || return 1
        sleep 1
    done
    return 1
}

classify() {  # /classify through gradio's REST API, the bundled A and B; the answer has labels
    local id
    id=$(curl -fs -X POST "http://127.0.0.1:$PORT/gradio_api/call/classify" -H 'Content-Type: application/json' \
         -d '{"data": ["It was not bad at all.", "diffllama-cls", "llama-cls"]}' |
         python3 -c 'import json, sys; print(json.load(sys.stdin)["event_id"])') || return 1
    curl -fsN --max-time 120 "http://127.0.0.1:$PORT/gradio_api/call/classify/$id" |
        grep -A1 '^event: complete' | grep -q '"label"'
}

healthy() {  # the image's HEALTHCHECK reports healthy (at most 120 s)
    local _
    for _ in $(seq 120); do
        [ "$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$CID")" = healthy ] && return 0
        sleep 1
    done
    return 1
}

refused() { ! "$@"; }

run_case() {  # run_case NAME UID ARGS...: start, check, stop
    local name=$1 uid=$2; shift 2
    say "run: $name (docker run $*)"
    start "$@" || { say "  FAILED  docker run"; FAILED=1; return; }
    local begin=$SECONDS
    check "serves its page" serving
    say "          serving $((SECONDS - begin)) s after docker run"
    check "/classify answers with labels" classify
    check "runs as uid $uid" test "$("$DOCKER" exec "$CID" id -u)" = "$uid"
    check "cannot write its code or weights" refused "$DOCKER" exec "$CID" sh -c \
        'touch /home/user/app/probe || touch /home/user/app/diffllama/probe || touch /home/user/app/assets/models/probe'
    if [ "$name" = "uid 1000" ]; then
        check "exports name the commit ($COMMIT)" test "$("$DOCKER" exec "$CID" python -c \
            'from diffllama.provenance import app_commit; print(app_commit())')" = "$COMMIT"
        check "HEALTHCHECK turns healthy" healthy
    fi
    local t0 t1 code
    t0=$(date +%s.%N)
    "$DOCKER" stop -t "$STOP_TIMEOUT" "$CID" >/dev/null
    t1=$(date +%s.%N)
    code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CID")
    say "          SIGTERM: exit code $code after $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s$(awk "BEGIN {
        if ($t1 - $t0 > 10) print \" (past Docker's default 10 s: run it with --stop-timeout $STOP_TIMEOUT)\"}")"
    check "exits 0 on SIGTERM" test "$code" = 0
    [ "$FAILED" = 0 ] || "$DOCKER" logs --tail 30 "$CID" 2>&1 | sed 's/^/          | /'
    "$DOCKER" rm "$CID" >/dev/null
}

build
run_case "uid 1000" 1000
run_case "read-only root" 1000 --read-only --tmpfs /tmp
run_case "arbitrary uid" 4242 --user 4242:4242
[ "$FAILED" = 0 ] && say "docker-smoke: all checks passed" || say "docker-smoke: some checks FAILED"
exit "$FAILED"
