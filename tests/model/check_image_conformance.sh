#!/bin/sh
# check_image_conformance.sh: `mmmamba preprocess` against Pillow (the reference's
# preprocessing), via tests/model/image_conformance.py. The expectation is
# Pillow 9 (Debian 12's 9.4, what CI installs): later Pillow releases resize
# extreme aspect ratios and out-of-range palette indices differently (seen
# with 12.3: 3 of 76 images differ), so another major version is a skip
# unless MM_ANY_PILLOW=1 asks for the comparison anyway.
# Skips (77; a failure in CI, tests/skip.sh) when the Python ($PYTHON, default /usr/bin/python3) cannot
# import Pillow and numpy.
PY=${PYTHON:-/usr/bin/python3}
srcdir=${top_srcdir:-.}
. "$srcdir/tests/skip.sh"
if ! [ -x "$PY" ] || ! "$PY" -c 'import PIL, numpy' 2>/dev/null; then
    mm_skip "$PY cannot import PIL and numpy"
fi
ver=$("$PY" -c 'import PIL; print(PIL.__version__)')
case "$ver" in
9.*) ;;
*)
    if [ "${MM_ANY_PILLOW:-0}" != 1 ]; then
        mm_skip "conformance is defined against Pillow 9 (Debian 12); $PY has Pillow $ver (MM_ANY_PILLOW=1 compares anyway)"
    fi ;;
esac
builddir=${top_builddir:-.}
exec "$PY" "$srcdir/tests/model/image_conformance.py" --mmmamba "$builddir/mmmamba"
