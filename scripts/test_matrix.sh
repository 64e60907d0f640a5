#!/usr/bin/env bash
# The unit, protocol, server, adapter and HTTP-transport tests on the other supported
# Pythons (3.12, 3.13; where session tasks start eagerly),
# each in its own virtualenv (.venv-3.12, .venv-3.13), both at once; `make test` runs it
# after the whole suite on 3.11. A version that is not installed is skipped, and said so.
set -uo pipefail
cd "$(dirname "$0")/.."
TESTS=(tests/protocol tests/transports/test_framing.py tests/transports/test_http.py
       tests/test_hub.py tests/test_session.py tests/test_subscription.py tests/test_server.py
       tests/test_hostile.py tests/test_limits.py tests/pubsub tests/test_history.py
       tests/test_http_transports.py tests/test_fanout.py)

find_python() {  # a pyenv build of that version, else pythonX.Y on the PATH, if it runs
  local candidate
  for candidate in $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/python 2>/dev/null |
                     sort -V | tail -1) "$(command -v "python$1" 2>/dev/null)"; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
}

run_one() {
  local version=$1 python=$2 venv=.venv-$1
  if [ ! -f "$venv/.stamp" ] || [ pyproject.toml -nt "$venv/.stamp" ] || [ "$0" -nt "$venv/.stamp" ]; then
    "$python" -m venv "$venv" &&
      "$venv/bin/pip" install -q --disable-pip-version-check -e '.[client,redis,postgres,nats]' \
        pytest pytest-asyncio pytest-timeout hypothesis httpx >"$venv/install.log" 2>&1 &&
      touch "$venv/.stamp" || { echo "Python $version: install failed"; cat "$venv/install.log"; return 1; }
  fi
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "${TESTS[@]}" >"$venv/test.log" 2>&1
}

pids=() versions=()
for version in ${PYTHONS:-3.12 3.13}; do
  python=$(find_python "$version")
  if [ -z "$python" ]; then
    echo "Python $version: not installed, skipped"
    continue
  fi
  run_one "$version" "$python" & pids+=($!) versions+=("$version")
done
status=0
for i in "${!pids[@]}"; do
  version=${versions[$i]}
  if wait "${pids[$i]}"; then
    echo "Python $version: $(tail -1 ".venv-$version/test.log")"
  else
    status=1
    echo "Python $version: FAILED"; tail -40 ".venv-$version/test.log" 2>/dev/null
  fi
done
exit $status
