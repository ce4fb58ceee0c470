#!/bin/sh
# Memory-R1 launcher for the unpacked Linux tarball: runs the bundled app (no Python needed).
# Works with no PATH at all (env -i): only shell built-ins are used before the exec.
# Arguments are passed on: no argument opens the desktop app; `memory-r1 --help` lists commands.
case "$0" in
  */*) here=${0%/*} ;;
  *) here=. ;;
esac
# a Python set-up of the user's must not leak into the frozen interpreter
unset PYTHONHOME PYTHONPATH PYTHONSTARTUP PYTHONUSERBASE
# Qt needs a UTF-8 locale; a bare environment (env -i, some launchers) has none
if [ -z "${LC_ALL:-}${LC_CTYPE:-}${LANG:-}" ]; then
  LANG=C.UTF-8
  export LANG
fi
exec "$here/bundle/memory-r1" "$@"
