#!/bin/sh
# Regenerate the fixtures (x86_64 Linux, gcc). The tests only need the .so and .stack
# files; the sources document what they contain.
#   libchain.so, chain.stack: no frame pointers, CFI only.
#   libfpchain.so, fpchain.stack: frame pointers with CFI, below a function without CFI
#   that keeps its own data in rbp.
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gcc -O1 -fomit-frame-pointer -fasynchronous-unwind-tables -fPIC -shared -nostdlib \
    -Wl,--build-id -o libchain.so chain.c
gcc -O1 -o "$tmp/record" record.c -L. -lchain -Wl,-rpath,"$PWD"
"$tmp/record" > chain.stack
gcc -O1 -fno-omit-frame-pointer -fasynchronous-unwind-tables -fPIC -c fpchain.c -o "$tmp/fpchain.o"
gcc -O1 -fomit-frame-pointer -fno-asynchronous-unwind-tables -fno-unwind-tables -fPIC \
    -c nocfi.c -o "$tmp/nocfi.o"
gcc -shared -nostdlib -Wl,--build-id -o libfpchain.so "$tmp/fpchain.o" "$tmp/nocfi.o"
gcc -O1 -DLIB='"libfpchain.so"' -DENTRY=fp_a -o "$tmp/record_fp" record.c -L. -lfpchain \
    -Wl,-rpath,"$PWD"
"$tmp/record_fp" > fpchain.stack
