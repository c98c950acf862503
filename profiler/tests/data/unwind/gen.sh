#!/bin/sh
# Regenerate libchain.so and chain.stack (x86_64 Linux, gcc). The test only needs
# the two outputs; the sources document what they contain.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O1 -fomit-frame-pointer -fasynchronous-unwind-tables -fPIC -shared -nostdlib \
    -Wl,--build-id -o libchain.so chain.c
gcc -O1 -o "$tmp/record" record.c -L. -lchain -Wl,-rpath,"$PWD"
"$tmp/record" > chain.stack
