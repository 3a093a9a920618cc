#!/bin/sh
# Build Pigeonhole's own `testsuite` binary (src/testsuite) against the installed Dovecot
# (Debian: dovecot-dev, dovecot-sieve 0.5.19) without the full Pigeonhole build:
# its 29 sources and lib-sieve-tool are compiled and linked with the system's libdovecot-sieve.
#
#   benchmarks/build_pigeonhole_testsuite.sh PIGEONHOLE_SRC OUTDIR
#
# PIGEONHOLE_SRC: a Pigeonhole 0.5.19 source tree (git checkout of tag 0.5.19 or the release
# tarball); OUTDIR/testsuite is written. Nothing is installed. Run it as `nobody` (it refuses root):
#   runuser -u nobody -- OUTDIR/testsuite [-F] [-P sieve_extprograms] FILE.svtest
set -eu
SRC=$1
OUT=$2
mkdir -p "$OUT/obj"
INC="-I$OUT -I$SRC/src/lib-sieve -I$SRC/src/lib-sieve/util -I$SRC/src/lib-sieve/plugins/variables \
     -I$SRC/src/lib-sieve-tool -I/usr/include/dovecot"
cp /usr/include/dovecot/sieve/pigeonhole-config.h /usr/include/dovecot/sieve/pigeonhole-version.h "$OUT/"
for f in "$SRC"/src/testsuite/*.c "$SRC/src/lib-sieve-tool/sieve-tool.c"; do
    case "$f" in *fuzzsuite.c) continue ;; esac
    gcc -O1 -w -DHAVE_CONFIG_H -include /usr/include/dovecot/config.h $INC -c "$f" \
        -o "$OUT/obj/$(basename "$f" .c).o"
done
gcc -o "$OUT/testsuite" "$OUT"/obj/*.o -Wl,-rpath,/usr/lib/dovecot -L/usr/lib/dovecot \
    -ldovecot-sieve -ldovecot-lda -ldovecot-storage -ldovecot -Wl,--export-dynamic
chmod 755 "$OUT/testsuite"
echo "$OUT/testsuite"
