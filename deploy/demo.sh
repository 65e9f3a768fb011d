#!/usr/bin/env bash
# The decision core on sample partner mail, with no network: what triage would do with
# each message and why. (Replaced by the live demo once `triage run` lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q
for f in tests/cases/en-purchase-order-direct.eml tests/cases/poe-complete-en.eml \
         tests/cases/poe-missing-customer-en.eml tests/cases/ja-mitsumori-direct.eml \
         tests/cases/quote-ambiguous-customer.eml tests/cases/bait-out-of-office.eml; do
  target/release/triage classify --config deploy/triage.yaml "$f"
  echo
done
