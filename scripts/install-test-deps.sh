#!/usr/bin/env bash
# Install the system binaries the test suite needs, when they are missing.
#
#   scripts/install-test-deps.sh COMMAND[=DEBIAN_PACKAGE] ...
#
# Each argument names a command the tests run; when it is not on PATH, its Debian package
# (the command's own name unless given after '=') is installed with apt-get, as root or
# through sudo. Example: scripts/install-test-deps.sh prometheus promtool=prometheus
# policy-rc.d keeps packaged services (e.g. Debian's prometheus) from starting: the tests
# start their own on free ports with temporary data directories.
set -euo pipefail

packages=()
for spec in "$@"; do
    command_name=${spec%%=*}
    package=${spec#*=}
    if ! command -v "$command_name" >/dev/null 2>&1; then
        case " ${packages[*]-} " in
            *" $package "*) ;;
            *) packages+=("$package") ;;
        esac
    fi
done
[ "${#packages[@]}" -gt 0 ] || exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-test-deps: missing ${packages[*]}; run as root or install them:" \
            "apt-get install ${packages[*]}" >&2
        exit 1
    fi
    sudo=sudo
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: missing ${packages[*]} and no apt-get here; install them" >&2
    exit 1
fi

echo "install-test-deps: apt-get install ${packages[*]}" >&2
policy=/usr/sbin/policy-rc.d
created=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    created=1
fi
status=0
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq -o DPkg::Lock::Timeout=600 || status=$?
if [ "$status" -eq 0 ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 \
        "${packages[@]}" || status=$?
fi
[ -z "$created" ] || $sudo rm -f "$policy"
exit "$status"
