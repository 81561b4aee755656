#!/usr/bin/env bash
# Make Debian's Chromium available to the browser tests and the screenshots (`make browser`).
#
#   bash scripts/browser.sh [CACHE_DIR]     (default CACHE_DIR: .cache/chromium)
#
# - root with apt (CI, the project's machines): `apt-get install chromium` (after
#   `apt-get update` when the package lists are empty or stale); a no-op when it is installed.
# - no root, but apt (a developer's Debian or Ubuntu): `apt-get download` chromium and the
#   dependencies that are not installed, unpacked with `dpkg-deb -x` into CACHE_DIR/root, and a
#   wrapper CACHE_DIR/chromium that sets LD_LIBRARY_PATH.
# - elsewhere: set ICEPIPE_CHROMIUM to a Chromium or Chrome executable (version >= 140).
#
# The path of the browser is printed on the last line. Playwright never downloads a browser
# here: the tests launch this one (`chromium.launch(executable_path=...)`).
set -euo pipefail

CACHE=${1:-.cache/chromium}
WRAPPER="$CACHE/chromium"

say() { echo "browser: $*" >&2; }

works() { # a browser that starts and says its version
    "$1" --headless --no-sandbox --version >/dev/null 2>&1
}

if [[ -n "${ICEPIPE_CHROMIUM:-}" ]]; then
    works "$ICEPIPE_CHROMIUM" || { say "ICEPIPE_CHROMIUM=$ICEPIPE_CHROMIUM does not run"; exit 1; }
    echo "$ICEPIPE_CHROMIUM"
    exit 0
fi

if command -v chromium >/dev/null && works "$(command -v chromium)"; then
    command -v chromium
    exit 0
fi

if [[ -x "$WRAPPER" ]] && works "$WRAPPER"; then
    echo "$(cd "$(dirname "$WRAPPER")" && pwd)/chromium"
    exit 0
fi

if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    say "no Chromium and no apt here: install Chromium (version >= 140) and set"
    say "ICEPIPE_CHROMIUM=/path/to/chromium (or ICEPIPE_NO_BROWSER=1 to skip the browser tests)"
    exit 1
fi

lists_empty() {
    ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null
}

if [[ $(id -u) == 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    if lists_empty; then
        say "apt-get update (the package lists are empty)"
        apt-get update -qq
    fi
    # A stale list names .deb files the mirror no longer has: update once and try again.
    if ! apt-get install -y -qq --no-install-recommends chromium >&2; then
        say "apt-get install failed: apt-get update, then again"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends chromium >&2
    fi
    works /usr/bin/chromium || { say "/usr/bin/chromium installed but does not run"; exit 1; }
    echo /usr/bin/chromium
    exit 0
fi

# No root: unpack the packages into the cache.
if lists_empty; then
    say "no apt package lists and no root: run 'sudo apt-get update' (or 'sudo apt-get install"
    say "chromium'), or set ICEPIPE_CHROMIUM=/path/to/chromium"
    exit 1
fi
mkdir -p "$CACHE/debs" "$CACHE/root"
CACHE=$(cd "$CACHE" && pwd)
WRAPPER="$CACHE/chromium"
# What apt would install (its own resolution of alternatives and virtual packages), simulated:
# no root needed.
mapfile -t missing < <(
    apt-get install -s -qq --no-install-recommends chromium 2>/dev/null | awk '/^Inst /{print $2}'
)
if ((${#missing[@]} == 0)); then
    say "apt-get install -s chromium installs nothing: is chromium in the package lists?"
    exit 1
fi
say "downloading ${#missing[@]} packages into $CACHE/debs"
(cd "$CACHE/debs" && apt-get download -qq "${missing[@]}" >&2)
for deb in "$CACHE"/debs/*.deb; do
    dpkg-deb -x "$deb" "$CACHE/root"
done
# Every folder of the unpacked packages holding a shared library (whatever the architecture).
libs=$(find "$CACHE/root" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:)
cat >"$WRAPPER" <<EOF
#!/bin/sh
# Debian's Chromium unpacked by scripts/browser.sh (no root): its own libraries first.
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export FONTCONFIG_PATH="\${FONTCONFIG_PATH:-/etc/fonts}"
exec "$CACHE/root/usr/lib/chromium/chromium" "\$@"
EOF
chmod +x "$WRAPPER"
works "$WRAPPER" || { say "$WRAPPER does not run: $("$WRAPPER" --headless --version 2>&1 | tail -3)"; exit 1; }
echo "$WRAPPER"
