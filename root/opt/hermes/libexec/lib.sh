# shellcheck shell=sh
# Shell helpers shared by the image's scripts (POSIX sh). Sourced, never run:
#   . /opt/hermes/libexec/lib.sh
# It defines functions only: sourcing it changes nothing in the caller's environment.

# is_truthy VALUE: VALUE is 1, true or yes, in any case (HERMES_DOCKER_EXEC_AS_ROOT,
# HERMES_DASHBOARD). Anything else, the empty string included, is false.
is_truthy() {
    case "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" in
        1 | true | yes) return 0 ;;
    esac
    return 1
}

# is_falsy VALUE: VALUE is 0, false or no, in any case (HERMES_FIX_OWNERSHIP,
# HERMES_FIX_MODES, which are on unless turned off).
is_falsy() {
    case "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]')" in
        0 | false | no) return 0 ;;
    esac
    return 1
}

# wanted_ids: the ids the hermes user and group should have, from HERMES_UID/HERMES_GID or
# their aliases PUID/PGID (the HERMES_ names win, so one .env can serve this image and
# images that read PUID for something else). Sets uid_value and gid_value (empty when
# neither name is set) and uid_var and gid_var, the name each value came from, so an
# error names the variable the user actually set. Does not validate.
# shellcheck disable=SC2034 # the four variables are this function's output
wanted_ids() {
    if [ -n "${HERMES_UID:-}" ]; then
        uid_var=HERMES_UID uid_value=$HERMES_UID
    else
        uid_var=PUID uid_value=${PUID:-}
    fi
    if [ -n "${HERMES_GID:-}" ]; then
        gid_var=HERMES_GID gid_value=$HERMES_GID
    else
        gid_var=PGID gid_value=${PGID:-}
    fi
}

# die MESSAGE...: "$prog: error: MESSAGE" on stderr, exit 1. The caller sets prog.
die() {
    echo "${prog:?}: error: $*" >&2
    exit 1
}

# as_hermes HOME COMMAND...: exec COMMAND as the hermes user (s6-setuidgid hermes) with
# HOME set to HOME and USER, LOGNAME to hermes, so nothing it writes belongs to root and
# nothing reads root's HOME. It execs: call it last, or in a subshell for the exit code.
# If s6-setuidgid cannot run, the exec fails and the shell exits; it never stays root.
as_hermes() {
    HOME=$1 USER=hermes LOGNAME=hermes
    export HOME USER LOGNAME
    shift
    exec s6-setuidgid hermes "$@"
}
