#!/usr/bin/env bash
# End-to-end check of the terminal UI as a person would use it: builds the binary, opens
# `calibscope data` in a detached 100×30 tmux session, presses keys, reads the screen with
# `tmux capture-pane`, and checks what it shows. Exits non-zero on the first failed check.
# Captures are kept in $OUT (default: a temp dir) for reading.
#
#   scripts/tui_e2e.sh            # from the repo root
set -euo pipefail

cd "$(dirname "$0")/.."
command -v tmux >/dev/null || { echo "tmux is not installed" >&2; exit 2; }
cargo build --quiet
BIN="$PWD/target/debug/calibscope"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
SESSION="calibscope-e2e-$$"
fail=0

cleanup() { tmux kill-session -t "$SESSION" 2>/dev/null || true; }
trap cleanup EXIT

capture() { tmux capture-pane -p -t "$SESSION" >"$OUT/$1.txt"; }
press() { tmux send-keys -t "$SESSION" "$@"; sleep "${PAUSE:-0.4}"; }
expect() { # expect <capture> <text>...
    local name="$1" file="$OUT/$1.txt"; shift
    for text in "$@"; do
        if ! grep -qF -- "$text" "$file"; then
            echo "FAIL: '$text' not on screen in $name (see $file)" >&2
            fail=1
        fi
    done
}
reject() { # reject <capture> <text>
    if grep -qF -- "$2" "$OUT/$1.txt"; then
        echo "FAIL: '$2' unexpectedly on screen in $1" >&2
        fail=1
    fi
}

# A shell in the session, so we can check it is usable again after quitting.
tmux new-session -d -s "$SESSION" -x 100 -y 30 "bash --norc --noprofile"
tmux set-option -t "$SESSION" status off >/dev/null
sleep 0.3
press "PS1='e2e\$ '; clear" Enter
press "$BIN data; echo EXIT=\$?" Enter
# The first frame comes at once, with layers filling in while the analysis runs.
sleep 0.3
capture 00_first_frame
expect 00_first_frame "calibscope" "layers 16" "01_conv1_relu"
# Wait for the analysis (a debug build takes a few seconds on the samples).
for _ in $(seq 1 120); do
    capture 01_start
    grep -qF "analysing" "$OUT/01_start.txt" || break
    sleep 0.5
done
expect 01_start "calibscope" "01_conv1_relu" "heavy_tail" "09_s" "minmax" "entropy" "mse" "p99.9" "? help"
reject 01_start "analysing"

press j; press j
capture 02_down
expect 02_down "03_attn_scores_heavy_tail" "fp16_square_overflow" "★mse"
press k
capture 03_up
expect 03_up "02_block_gelu"
press j
press l
capture 04_log
expect 04_log "log · full"
press z
capture 05_zoom
expect 05_zoom "log · zoom"
press Tab; press j; press j
capture 06_methods
expect 06_methods "methods"
press s
sleep 1
capture 07_affine
expect 07_affine "uint8 affine"
press + ; sleep 1
capture 08_bits
expect 08_bits "uint9 affine"
press o
capture 09_overview
expect 09_overview "overview" "most sensitive" "03_attn_scores_heavy_tail"
press Enter
capture 10_open
expect 10_open "casts"
press x
capture 10_fp8
expect 10_fp8 "methods · fp8_e4m3" "mse_fp8" "fp8_e4m3 · log · zoom"
press x
capture 10_int
expect 10_int "methods affine 9-bit"
press "?"
capture 11_help
expect 11_help "keys" "edit the percentiles" "Ctrl-C"
press Escape
press /
press f c 1
capture 12_filter
expect 12_filter "fc1_relu" "filter"
reject 12_filter "02_block_gelu"
press Escape Escape
press q
sleep 0.5
capture 13_quit
expect 13_quit "EXIT=0" "e2e\$"
reject 13_quit "methods symmetric"

# Ctrl-C quits too; a resize to a tiny window shows the message instead of crashing.
press "clear; $BIN data; echo EXIT=\$?" Enter
sleep 0.5
tmux resize-window -t "$SESSION" -x 50 -y 12 2>/dev/null || true
sleep 0.5
capture 14_tiny
expect 14_tiny "terminal too small"
tmux resize-window -t "$SESSION" -x 100 -y 30 2>/dev/null || true
sleep 0.5
capture 15_back
expect 15_back "minmax"
press C-c
sleep 0.5
capture 16_ctrl_c
expect 16_ctrl_c "EXIT=0"

if [ "$fail" -ne 0 ]; then
    echo "tui e2e: FAILED (captures in $OUT)" >&2
    exit 1
fi
echo "tui e2e: ok (captures in $OUT)"
