#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-only
#
# fetch.sh DEST -- download Debian's hyperv-daemons for bookworm (6.1: kvp, vss,
# char-device fcopy) and trixie (6.12: kvp, vss) and unpack them with
# `dpkg-deb -x` into DEST/bookworm and DEST/trixie.  These unmodified C daemons
# are the reference the Python daemons are compared against.
#
# Idempotent: a release whose binaries and version stamp are already present is
# not fetched again.  Bookworm comes from the apt sources configured on this
# machine (`apt-get download`); trixie (and bookworm too, if this host is not
# bookworm or its lists lack the package) comes from a private source list in
# DEST/.apt-<release>, pointing at the same archive as the configured bookworm
# source, so the system's apt state is never touched.
#
# Needs root only when something has to be downloaded (apt-get update).
set -euo pipefail

PKG=hyperv-daemons

die() { echo "fetch.sh: error: $*" >&2; exit 1; }
log() { echo "fetch.sh: $*" >&2; }

[ $# -eq 1 ] || die "usage: $0 DEST"
mkdir -p -- "$1" || die "cannot create $1"
DEST=$(cd -- "$1" && pwd -P)

for tool in apt-get dpkg-deb awk; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found (this needs a Debian system)"
done

required_bins() {
    case "$1" in
        bookworm) echo hv_kvp_daemon hv_vss_daemon hv_fcopy_daemon ;;
        trixie) echo hv_kvp_daemon hv_vss_daemon ;;
        *) die "unknown release $1" ;;
    esac
}

# A release counts as done when every binary and the version stamp exist; the
# stamp is written last, so an interrupted extraction is redone.
is_done() {
    local rel=$1 b
    [ -s "$DEST/$rel/.version" ] || return 1
    for b in $(required_bins "$rel"); do
        [ -x "$DEST/$rel/usr/sbin/$b" ] || return 1
    done
}

# Print "URI<TAB>SUITE<TAB>SIGNED_BY" for every enabled binary ("deb") source
# configured for apt, in both the one-line (*.list) and deb822 (*.sources)
# formats.  Files apt itself ignores (other extensions) are skipped.
configured_sources() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '
            { sub(/#.*/, "") }
            $1 != "deb" { next }
            {
                signed = ""; i = 2
                if ($2 ~ /^\[/) {
                    # options block "[ a=b c=d ]", possibly spread over fields
                    opts = ""
                    for (; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } }
                    if (match(opts, /signed-by=[^] ]+/))
                        signed = substr(opts, RSTART + 10, RLENGTH - 10)
                }
                print $i "\t" $(i + 1) "\t" signed
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            function flush(   n, u, s, nu, ns, a, b) {
                if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
                    nu = split(uris, a, " "); ns = split(suites, b, " ")
                    for (u = 1; u <= nu; u++)
                        for (s = 1; s <= ns; s++)
                            print a[u] "\t" b[s] "\t" signed
                }
                types = uris = suites = signed = enabled = ""; key = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[ \t]/ { if (key != "signed-by") { val = $0; gsub(/^[ \t]+|[ \t]+$/, "", val); append(val) } ; next }
            function append(v) {
                if (key == "types") types = types " " v
                else if (key == "uris") uris = uris " " v
                else if (key == "suites") suites = suites " " v
                else if (key == "enabled") enabled = v
            }
            {
                key = tolower(substr($0, 1, index($0, ":") - 1))
                val = substr($0, index($0, ":") + 1); gsub(/^[ \t]+|[ \t]+$/, "", val)
                # Signed-By may be a path or an inline key block; only a path is reusable.
                if (key == "signed-by") { if (val ~ /^\//) signed = val }
                else append(val)
            }
            END { flush() }' "$f"
    done
}

# The archive address of the configured bookworm source (Debian main archive,
# not -security/-updates, which only carry a subset of packages).
find_archive() {
    local line
    line=$(configured_sources | awk -F '\t' '$2 == "bookworm" && $1 !~ /^cdrom:/ { print; exit }')
    [ -n "$line" ] || die "no 'deb ... bookworm' source found in /etc/apt/sources.list or /etc/apt/sources.list.d/; cannot tell which Debian archive to use"
    printf '%s\n' "$line"
}

# extract REL DEB: unpack into DEST/REL and stamp it with the package version.
extract() {
    local rel=$1 deb=$2 ver b
    ver=$(dpkg-deb -f "$deb" Version) || die "$deb is not a valid .deb"
    rm -rf -- "$DEST/$rel"
    mkdir -p -- "$DEST/$rel" "$DEST/debs/$rel"
    dpkg-deb -x "$deb" "$DEST/$rel" || die "dpkg-deb -x $deb failed"
    for b in $(required_bins "$rel"); do
        [ -x "$DEST/$rel/usr/sbin/$b" ] || die "$PKG $ver for $rel has no usr/sbin/$b"
    done
    if [ "$(dirname -- "$deb")" != "$DEST/debs/$rel" ]; then
        rm -f -- "$DEST/debs/$rel"/*.deb
        cp -f -- "$deb" "$DEST/debs/$rel/"
    fi
    printf '%s\n' "$ver" >"$DEST/$rel/.version"
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "downloading $PKG needs root (apt-get update/download); run as root or pre-populate $DEST"
}

# A scratch directory apt's unprivileged download user can write into, so apt
# does not warn about an unsandboxed download.
scratch_dir() {
    local d
    d=$(mktemp -d "$DEST/.dl.XXXXXX")
    if getent passwd _apt >/dev/null 2>&1; then chown _apt "$d" 2>/dev/null || true; fi
    printf '%s\n' "$d"
}

# fetch_private REL: download REL's package through a private apt configuration.
fetch_private() {
    local rel=$1 uri suite signed apt_dir opt dl deb
    IFS=$'\t' read -r uri suite signed <<<"$(find_archive)"
    if [ -z "$signed" ] && [ -f /usr/share/keyrings/debian-archive-keyring.gpg ]; then
        signed=/usr/share/keyrings/debian-archive-keyring.gpg
    fi
    apt_dir="$DEST/.apt-$rel"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    if [ -n "$signed" ]; then
        echo "deb [signed-by=$signed] $uri $rel main" >"$apt_dir/sources.list"
    else
        echo "deb $uri $rel main" >"$apt_dir/sources.list"
    fi
    opt=(-o "Dir::Etc::SourceList=$apt_dir/sources.list"
         -o Dir::Etc::SourceParts=/dev/null
         -o "Dir::State::Lists=$apt_dir/lists"
         -o "Dir::Cache=$apt_dir/cache"
         -o Acquire::Languages=none)
    log "$rel: apt-get update (private lists, $uri $rel main)"
    apt-get -q "${opt[@]}" update >&2 || die "apt-get update for $rel ($uri) failed"
    dl=$(scratch_dir)
    (cd "$dl" && apt-get -q "${opt[@]}" download "$PKG" >&2) \
        || { rm -rf -- "$dl"; die "apt-get download $PKG for $rel failed"; }
    deb=$(ls "$dl"/"$PKG"_*.deb 2>/dev/null | head -n1)
    [ -n "$deb" ] || { rm -rf -- "$dl"; die "apt-get download left no $PKG .deb for $rel"; }
    extract "$rel" "$deb"
    rm -rf -- "$dl"
}

# Bookworm: the configured sources, when this host is bookworm and apt knows
# the package; otherwise the private route.
fetch_bookworm() {
    local codename="" dl deb
    if [ -r /etc/os-release ]; then
        codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    fi
    if [ "$codename" = bookworm ] && apt-cache show "$PKG" >/dev/null 2>&1; then
        log "bookworm: apt-get download $PKG (configured sources)"
        dl=$(scratch_dir)
        if (cd "$dl" && apt-get -q download "$PKG" >&2); then
            deb=$(ls "$dl"/"$PKG"_*.deb 2>/dev/null | head -n1)
            if [ -n "$deb" ]; then
                extract bookworm "$deb"
                rm -rf -- "$dl"
                return
            fi
        fi
        rm -rf -- "$dl"
        log "bookworm: download via configured sources failed; trying a private source list"
    fi
    fetch_private bookworm
}

for rel in bookworm trixie; do
    if is_done "$rel"; then
        log "$rel: already present in $DEST/$rel"
        continue
    fi
    # The .deb kept from an earlier run is enough to redo the extraction.
    cached=$(ls "$DEST/debs/$rel/${PKG}"_*.deb 2>/dev/null | head -n1 || true)
    if [ -n "$cached" ] && dpkg-deb -f "$cached" Version >/dev/null 2>&1; then
        log "$rel: re-extracting $cached"
        extract "$rel" "$cached"
        is_done "$rel" && continue
    fi
    need_root
    if [ "$rel" = bookworm ]; then fetch_bookworm; else fetch_private trixie; fi
done

for rel in bookworm trixie; do
    is_done "$rel" || die "$rel: reference daemons missing after fetch"
    printf '%s %s %s\n' "$rel" "$PKG" "$(cat "$DEST/$rel/.version")"
done
