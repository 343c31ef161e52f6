#!/bin/sh
# check_image_conformance.sh: `mmmamba preprocess` against Pillow (the reference's
# preprocessing), via tests/model/image_conformance.py. Skips (77) only when
# the Python ($PYTHON, default /usr/bin/python3) cannot import Pillow and numpy.
PY=${PYTHON:-/usr/bin/python3}
if ! [ -x "$PY" ] || ! "$PY" -c 'import PIL, numpy' 2>/dev/null; then
    echo "skip: $PY cannot import PIL and numpy"
    exit 77
fi
srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
exec "$PY" "$srcdir/tests/model/image_conformance.py" --mmmamba "$builddir/mmmamba"
