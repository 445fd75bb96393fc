#!/usr/bin/env bash
# Fails when the trusted computing base grows: every crate in the normal dependency trees of
# goten-enclave and goten-field (the trusted crates, with goten-linalg, which the enclave's
# float products use) must be listed in docs/tcb-dependencies.txt, where DESIGN.md section 16
# gives the reason for each direct dependency. Adding a crate to the TCB means adding it to
# that list in the same change, where a reviewer sees it.
#
# It also checks that the `goten` binary's normal build does not enable the test-only feature
# danger-test-expose (which makes plaintext accessors public).
set -euo pipefail
cd "$(dirname "$0")/.."

list=docs/tcb-dependencies.txt
found=$(for c in goten-enclave goten-field goten-attest; do
    cargo tree -p "$c" -e normal --prefix none --format '{p}' --locked
done | sed 's/ v[0-9].*//' | grep -v '^goten-' | sort -u)
allowed=$(grep -v '^#' "$list" | sed '/^$/d' | sort -u)
extra=$(comm -23 <(echo "$found") <(echo "$allowed"))
if [ -n "$extra" ]; then
    echo "check-tcb: the trusted crates now depend on crates not listed in $list:" >&2
    echo "$extra" | sed 's/^/  /' >&2
    echo "add them there (and the reason for a new direct dependency to docs/DESIGN.md section 16), or remove the dependency" >&2
    exit 1
fi
echo "check-tcb: $(echo "$found" | wc -l) crates in the TCB, all listed in $list"

if cargo tree -p goten -e features,normal -i goten-enclave --locked | grep -q 'danger-test-expose'; then
    echo "check-tcb: the goten binary's build enables goten-enclave/danger-test-expose" >&2
    exit 1
fi
echo "check-tcb: the goten binary is built without danger-test-expose"
