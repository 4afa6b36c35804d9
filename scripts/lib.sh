# Shared by scripts/serve and scripts/test (sourced, from the repository root).

# pip with its output kept back: shown only when pip fails (then in full, to stderr)
quiet_pip() {
  local log
  log=$(mktemp)
  if ! .venv/bin/python -m pip "$@" >"$log" 2>&1; then
    echo "pip $* failed:" >&2
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
