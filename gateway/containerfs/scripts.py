"""The shell programs containerfs runs in a container: the helper and the one-shot. Pure data.

A long-lived ``sh`` exec per session (running as the session's login, so the container's own
permissions apply) reads one request per line and ``eval``s it; each request is a call of one of
the ``q_*`` functions below with single-quoted arguments (quoted by
:mod:`gateway.containerfs.shell`).
Every response is the function's output followed by a trailer ``\\0<nonce> <status>\\n``, where the
nonce is fresh for every request: file names (which may hold newlines and any byte but NUL and
``/``) and file content (which may hold anything) can therefore travel unescaped. Requests never
pipeline, so a command that reads request data from stdin (``q_put``) can never swallow the next
request.

Works with dash, bash and busybox ash, with GNU coreutils/findutils and busybox applets; a tool
that is not linked in a busybox image is reached through ``busybox TOOL`` (except ``tar``, whose
absence is what switches file content to ``dd``). Everything runs with ``LC_ALL=C``.
"""

from __future__ import annotations

from typing import Final

# The stat(1) format shared by every query: raw mode (hex), uid, gid, size, atime, mtime, links.
STAT_FORMAT: Final = "%f %u %g %s %X %Y %h"

TOOLS: Final = (
    "stat",
    "find",
    "dd",
    "mv",
    "ln",
    "mkdir",
    "rmdir",
    "rm",
    "chmod",
    "chown",
    "touch",
    "readlink",
    "truncate",
    "cat",
)

# Tools are taken from these system directories only, never from the image's PATH (a directory
# the login can write would let an upload run as a command).
SAFE_PATH: Final = "/usr/sbin:/usr/bin:/sbin:/bin"

HELPER_SCRIPT: Final = r"""
N='
'
F='%f %u %g %s %X %Y %h'
PATH=SAFE_PATH_VALUE
export PATH
unset CDPATH ENV BASH_ENV
for _c in TOOLS_LIST; do
  command -v "$_c" >/dev/null 2>&1 || {
    command -v busybox >/dev/null 2>&1 && eval "$_c() { busybox $_c \"\$@\"; }"
  }
done
_t() { printf '\0%s %s\n' "$T" "$1"; }
_x() { "$@" 2>&1 </dev/null; _t $?; }
_why() {
  if _w=$(stat -L -c %F -- "$1" 2>&1 </dev/null); then
    case $_w in directory) echo 'Permission denied' ;; *) echo 'Not a directory' ;; esac
  else
    printf '%s\n' "$_w"
  fi
}
# Enter directory $1 physically; with $2 = 1 it must still be exactly $1 (nothing on the way
# was swapped for a link since it was resolved). Every action then names entries relative to it.
_at() {
  cd -P -- "$1" 2>/dev/null </dev/null || { _why "$1"; return 1; }
  [ "$2" != 1 ] || [ "$PWD" = "$1" ] || { echo 'Permission denied'; return 1; }
}
# fd 3 was opened on name $1: its identity (dev:ino) into _i; with $2 = 1 the name must still be
# that object and not a link.
_vid() {
  if [ "$2" = 1 ]; then
    [ ! -L "$1" ] || { echo 'Too many levels of symbolic links'; return 1; }
    _i=$(stat -L -c '%d:%i' -- /proc/self/fd/3 "$1" 2>/dev/null </dev/null) ||
      { echo 'Input/output error'; return 1; }
    [ "${_i%%"$N"*}" = "${_i#*"$N"}" ] || { echo 'Permission denied'; return 1; }
    _i=${_i%%"$N"*}
  else
    _i=$(stat -L -c '%d:%i' -- /proc/self/fd/3 2>/dev/null </dev/null) ||
      { echo 'Input/output error'; return 1; }
  fi
}
# fd 3 is the object a handle opened (identity $1), else the handle fails closed.
_same() {
  _j=$(stat -L -c '%d:%i' -- /proc/self/fd/3 2>/dev/null </dev/null)
  [ "$_j" = "$1" ] || { echo 'Stale file handle'; return 1; }
}
_mv() {
  if [ "$MVT" = 1 ]; then
    mv -f -T -- "$1" "$2" 2>&1 </dev/null
  else
    if [ -d "$2" ]; then echo 'File exists'; return 1; fi
    mv -f -- "$1" "$2" 2>&1 </dev/null
  fi
}
_res() {
  _p=$1 _i=0
  while :; do
    while :; do case $_p in / | '') break ;; */) _p=${_p%/} ;; *) break ;; esac; done
    if [ -z "$_p" ] || [ "$_p" = / ]; then R=/; return 0; fi
    _d=${_p%/*} _b=${_p##*/}
    [ -n "$_d" ] || _d=/
    case $_b in . | ..) _d=$_p _b= ;; esac
    cd -P "$_d" 2>/dev/null || { _why "$_d"; return 1; }
    if [ -z "$_b" ]; then R=$PWD; return 0; fi
    if [ "$2" = 1 ] && [ -L "$_b" ]; then
      _i=$((_i + 1))
      [ $_i -le 40 ] || { echo 'Too many levels of symbolic links'; return 1; }
      _l=$(readlink -- "$_b" </dev/null; echo x) || { echo 'Input/output error'; return 1; }
      _l=${_l%"$N"x}
      case $_l in /*) _p=$_l ;; *) _p=$PWD/$_l ;; esac
      continue
    fi
    case $PWD in /) R=/$_b ;; *) R=$PWD/$_b ;; esac
    return 0
  done
}
q_init() {
  umask
  for _c in TOOLS_LIST tar busybox; do
    command -v "$_c" >/dev/null 2>&1 && printf '%s ' "$_c"
  done
  echo
  _u=$(stat -c %u /proc/$$ 2>/dev/null </dev/null) || _u=-
  printf '%s ' "$_u"
  # tools at a place the login could write (refused by the gateway unless the login is root)
  for _c in TOOLS_LIST tar busybox; do
    _w=$(command -v "$_c" 2>/dev/null) || continue
    case $_w in
      /*) { [ -w "$_w" ] || [ -w "${_w%/*}" ]; } && printf '%s ' "$_w" ;;
    esac
  done
  echo
  printf '%s' "$HOME"
  _t 0
}
q_real() { if _res "$1" "$2"; then printf '%s' "$R"; _t 0; else _t 1; fi; }
# dir name verify follow
q_st() {
  _at "$1" "$3" || { _t 1; return; }
  if [ "$4" = 1 ]; then _x stat -L -c "$F" -- "$2"; else _x stat -c "$F" -- "$2"; fi
}
q_list() {
  _at "$1" "$2" || { _t 1; return; }
  if [ ! -r . ]; then echo 'Permission denied'; _t 1; return; fi
  stat -c "$F %n" -- . .. 2>/dev/null </dev/null
  if command -v find >/dev/null 2>&1; then
    find . -mindepth 1 -maxdepth 1 -exec stat -c "$F %n" -- {} + 2>/dev/null </dev/null
  else
    stat -c "$F %n" -- ./* ./.[!.]* ./..?* 2>/dev/null </dev/null
  fi
  _t 0
}
# dir name inline verify: identity line, then the content (up to $3 bytes)
q_open_r() {
  _at "$1" "$4" || { _t 1; return; }
  if [ ! -e "$2" ]; then _why "$2"; _t 1; return; fi
  if [ -d "$2" ]; then echo 'Is a directory'; _t 1; return; fi
  if [ -p "$2" ] || [ -S "$2" ]; then echo 'Not a regular file'; _t 1; return; fi
  [ -r "$2" ] || { echo 'Permission denied'; _t 1; return; }
  _or "$2" "$3" "$4" 2>&1 3<"$2" || _t 1
}
_or() {
  _vid "$1" "$3" || { _t 1; return; }
  printf '%s\n' "$_i"
  if [ "$2" -gt 0 ]; then
    dd if=/proc/self/fd/3 bs=65536 iflag=count_bytes count="$2" 2>/dev/null </dev/null ||
      { _t 2; return; }
  fi
  _t 0
}
# path id offset size (a handle open for reading and writing)
q_read() { _rd "$@" 2>&1 3<"$1" || _t 1; }
_rd() {
  _same "$2" || { _t 1; return; }
  dd if=/proc/self/fd/3 bs=65536 iflag=skip_bytes,count_bytes skip="$3" count="$4" \
    2>/dev/null </dev/null
  _t $?
}
# path id
q_fstat() { _fs "$2" 2>&1 3<"$1" || _t 1; }
_fs() { _same "$1" || { _t 1; return; }; _x stat -L -c "$F" -- /proc/self/fd/3; }
# dir name tmpname flags verify
q_open_w() {
  _at "$1" "$5" || { _t 1; return; }
  if [ -e "$2" ] || [ -L "$2" ]; then
    case $4 in *e*) echo 'File exists'; _t 1; return ;; esac
    if [ -L "$2" ]; then
      [ "$5" != 1 ] || { echo 'Too many levels of symbolic links'; _t 1; return; }
      [ -e "$2" ] || { { true >>"$2"; } 2>&1 || { _t 1; return; }; }
    fi
    if [ -d "$2" ]; then echo 'Is a directory'; _t 1; return; fi
    [ -w "$2" ] || { echo 'Permission denied'; _t 1; return; }
    _ow "$2" "$4" "$5" 2>&1 3<"$2" || _t 1
  else
    case $4 in *c*) ;; *) echo 'No such file or directory'; _t 1; return ;; esac
    set -C
    { true >"$3"; } 2>&1
    _r=$?
    set +C
    [ $_r -eq 0 ] || { _t $_r; return; }
    _i=$(stat -c '%d:%i' -- "$3" 2>&1 </dev/null) ||
      { printf '%s\n' "$_i"; rm -f -- "$3" </dev/null; _t 1; return; }
    printf 'N %s\n' "$_i"
    _t 0
  fi
}
_ow() {
  _vid "$1" "$3" || { _t 1; return; }
  case $2 in *t*) : >/proc/self/fd/3 || { _t 1; return; } ;; esac
  _s=$(stat -L -c "$F" -- /proc/self/fd/3 2>&1 </dev/null) || { printf '%s\n' "$_s"; _t 1; return; }
  printf 'E %s %s\n' "$_i" "$_s"
  _t 0
}
# Request data: exactly $n bytes follow the request line. One dd always reads all of them from
# stdin (and nothing more); the writer gets them through a pipe and whatever it does not take is
# drained, so file content can never be read as a request.
# path id offset append nbytes
q_put() {
  dd bs=65536 iflag=count_bytes,fullblock count="$5" status=none 2>/dev/null |
    _put "$1" "$2" "$3" "$4"
  _t $?
}
_put() {
  _w "$2" "$3" "$4" 2>&1 3<"$1"
  _r=$?
  [ $_r -eq 0 ] || dd of=/dev/null bs=65536 status=none 2>/dev/null
  return $_r
}
_w() {
  _same "$1" || return 1
  if [ "$3" = 1 ]; then
    dd of=/proc/self/fd/3 bs=65536 oflag=append conv=notrunc status=none
  else
    dd of=/proc/self/fd/3 bs=65536 oflag=seek_bytes seek="$2" conv=notrunc status=none
  fi
}
# dir tmpname finalname id nbytes offset mode atime mtime excl verify: the last data (from
# stdin), attributes, then the rename, all on the object the handle created
q_finish() {
  _d=$1 _tb=$2 _fb=$3 _id=$4
  if [ "$5" -gt 0 ]; then
    dd bs=65536 iflag=count_bytes,fullblock count="$5" status=none 2>/dev/null |
      _put "$_d/$_tb" "$_id" "$6" 0 || { _discard; _t 1; return; }
  fi
  if [ -n "$7$8$9" ]; then
    _fa "$_id" "$7" "$8" "$9" 2>&1 3<"$_d/$_tb" || { _discard; _t 1; return; }
  fi
  _at "$_d" "${11}" || { _discard; _t 1; return; }
  [ "$(stat -c '%d:%i' -- "$_tb" 2>/dev/null </dev/null)" = "$_id" ] ||
    { echo 'Stale file handle'; _discard; _t 1; return; }
  if [ -d "$_fb" ] && [ ! -L "$_fb" ]; then echo 'Is a directory'; _discard; _t 1; return; fi
  if [ "${10}" = 1 ]; then
    if ln -n -- "$_tb" "$_fb" 2>/dev/null </dev/null; then rm -f -- "$_tb" </dev/null; _t 0; return; fi
    if [ -e "$_fb" ] || [ -L "$_fb" ]; then echo 'File exists'; _discard; _t 1; return; fi
  fi
  _mv "$_tb" "$_fb"
  _r=$?
  [ $_r -eq 0 ] || _discard
  _t $_r
}
_discard() { rm -f -- "$_d/$_tb" </dev/null; }
_fa() { _same "$1" || return 1; _attrs /proc/self/fd/3 1 "" "" "" "$2" "$3" "$4"; }
q_discard() { rm -f -- "$@" </dev/null 2>&1; _t 0; }
# dir name verify
q_rm() {
  _at "$1" "$3" || { _t 1; return; }
  if [ -d "$2" ] && [ ! -L "$2" ]; then echo 'Is a directory'; _t 1; return; fi
  _x rm -- "$2"
}
q_rmdir() { _at "$1" "$3" || { _t 1; return; }; _x rmdir -- "$2"; }
# dir name mode verify
q_mkdir() { _at "$1" "$4" || { _t 1; return; }; _x mkdir -m "$3" -- "$2"; }
# srcdir srcname dstdir dstname excl verify: from inside the source directory, into the
# destination directory held open on fd 4 (never a path that could be swapped meanwhile)
q_mv() {
  _at "$1" "$6" || { _t 1; return; }
  [ -e "$2" ] || [ -L "$2" ] || { echo 'No such file or directory'; _t 1; return; }
  _mvto "$2" "$3" "$4" "$5" "$6" 2>&1 4<"$3" || _t 1
}
_mvto() {
  _dir4 "$2" "$5" || { _t 1; return; }
  if [ "$4" = 1 ] && { [ -e "/proc/self/fd/4/$3" ] || [ -L "/proc/self/fd/4/$3" ]; }; then
    echo 'File exists'; _t 1; return
  fi
  _mv "$1" "/proc/self/fd/4/$3"
  _t $?
}
_dir4() {
  [ "$2" = 1 ] || return 0
  [ "$(readlink /proc/self/fd/4 2>/dev/null </dev/null)" = "$1" ] || { echo 'Permission denied'; return 1; }
}
# target dir name verify: the link itself is created; an existing name is never followed
q_symlink() {
  _at "$2" "$4" || { _t 1; return; }
  if [ -e "$3" ] || [ -L "$3" ]; then echo 'File exists'; _t 1; return; fi
  _x ln -s -n -- "$1" "$3"
}
# srcdir srcname dstdir dstname verify: a hard link, made inside the destination directory
q_link() {
  _at "$3" "$5" || { _t 1; return; }
  if [ -e "$4" ] || [ -L "$4" ]; then echo 'File exists'; _t 1; return; fi
  _ln "$1" "$2" "$4" "$5" 2>&1 4<"$1" || _t 1
}
_ln() { _dir4 "$1" "$4" || { _t 1; return; }; _x ln -n -- "/proc/self/fd/4/$2" "$3"; }
# dir name verify
q_readlink() {
  _at "$1" "$3" || { _t 1; return; }
  if [ ! -L "$2" ]; then
    if [ -e "$2" ]; then echo 'Invalid argument'; else _why "$2"; fi
    _t 1; return
  fi
  _x readlink -- "$2"
}
_attrs() {
  _h=
  [ "$2" = 1 ] || _h=-h
  if [ -n "$3" ]; then
    if command -v truncate >/dev/null 2>&1; then
      truncate -s "$3" -- "$1" 2>&1 </dev/null || return 1
    else
      dd if=/dev/null of="$1" bs=1 seek="$3" count=0 status=none 2>&1 </dev/null || return 1
    fi
  fi
  if [ -n "$4$5" ]; then
    if [ -n "$4" ]; then _o=$4${5:+:$5}; else _o=:$5; fi
    chown $_h -- "$_o" "$1" 2>&1 </dev/null || return 1
  fi
  if [ -n "$6" ] && { [ -z "$_h" ] || [ ! -L "$1" ]; }; then
    chmod "$6" -- "$1" 2>&1 </dev/null || return 1
  fi
  if [ -n "$8" ]; then
    if [ "$7" = "$8" ]; then
      touch -c $_h -d "@$8" -- "$1" 2>&1 </dev/null || return 1
    else
      touch -c $_h -m -d "@$8" -- "$1" 2>&1 </dev/null || return 1
      [ -z "$7" ] || touch -c $_h -a -d "@$7" -- "$1" 2>&1 </dev/null || return 1
    fi
  elif [ -n "$7" ]; then
    touch -c $_h -a -d "@$7" -- "$1" 2>&1 </dev/null || return 1
  fi
  return 0
}
# dir name verify follow size uid gid mode atime mtime. A link itself (lsetstat) gets owner and
# times only; anything else is changed through a descriptor on the object, never a name.
q_setstat() {
  _at "$1" "$3" || { _t 1; return; }
  if [ -L "$2" ] && { [ "$4" != 1 ] || [ "$3" = 1 ]; }; then
    if [ "$4" = 1 ]; then echo 'Too many levels of symbolic links'; _t 1; return; fi
    [ -z "$5" ] || { echo 'Invalid argument'; _t 1; return; }
    if _attrs "$2" 0 "" "$6" "$7" "" "$9" "${10}"; then _t 0; else _t 1; fi
    return
  fi
  _sa "$2" "$3" "$5" "$6" "$7" "$8" "$9" "${10}" 2>&1 3<"$2" || _t 1
}
_sa() {
  _vid "$1" "$2" || { _t 1; return; }
  if _attrs /proc/self/fd/3 1 "$3" "$4" "$5" "$6" "$7" "$8"; then _t 0; else _t 1; fi
}
# path id size uid gid mode atime mtime: setstat on an open handle
q_fsetstat() { _fsa "$@" 2>&1 3<"$1" || _t 1; }
_fsa() {
  _same "$2" || { _t 1; return; }
  if _attrs /proc/self/fd/3 1 "$3" "$4" "$5" "$6" "$7" "$8"; then _t 0; else _t 1; fi
}
q_statvfs() { _at "$1" "$3" || { _t 1; return; }; _x stat -f -c '%s %S %b %f %a %c %d %i %l' -- "$2"; }
q_kill() {
  _c=
  [ -r "/proc/$1/comm" ] && read -r _c <"/proc/$1/comm"
  case $_c in dd | tar | busybox) kill "$1" 2>/dev/null ;; esac
  _t 0
}
q_cat() { dd if="$1" bs=65536 iflag=count_bytes count="$2" 2>/dev/null </dev/null; _t $?; }
MVT=1
case $(mv -T -- /nonexistent-sshgw-a /nonexistent-sshgw-b 2>&1 </dev/null) in
  *nvalid* | *nrecognized* | *llegal* | *sage*) MVT=0 ;;
esac
cd /
# Every request line starts with this session's key (the first line, never in argv): a line
# without it means the stream is out of step, and the helper ends rather than run it.
IFS= read -r K || exit 1
[ ${#K} -ge 32 ] || exit 1
while IFS= read -r _l; do
  case $_l in
    "$K "*) eval "${_l#"$K "}" ;;
    *) exit 97 ;;
  esac
  cd /
done
""".replace("TOOLS_LIST", " ".join(TOOLS)).replace("SAFE_PATH_VALUE", SAFE_PATH)

# A one-shot exec (a dedicated data stream): it announces its PID on stderr, then runs the command
# given as the first stdin line (which ``exec``s the data tool, keeping the PID, so the process
# can be stopped from the helper: Docker has no API to signal an exec). Names travel on stdin,
# never in argv: argv goes through JSON, which cannot carry non-UTF-8 bytes. The script itself
# comes from argv, so whatever follows the first line on stdin is data, never commands.
ONESHOT_SCRIPT: Final = r"""
N='
'
PATH=SAFE_PATH_VALUE
export PATH
DD=dd
command -v dd >/dev/null 2>&1 || DD='busybox dd'
printf '%s\n' "$$" >&2
IFS= read -r _l && eval "$_l"
""".replace("SAFE_PATH_VALUE", SAFE_PATH)
