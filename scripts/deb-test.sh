#!/usr/bin/env bash
# Builds the Debian package (scripts/build-deb.sh), installs it on this machine with `dpkg -i`,
# runs the installed `klaxon`, checks what it installed, then removes and purges it. Fails
# loudly at the first step that does not hold. dpkg runs as root (through sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

fail() {
    echo "scripts/deb-test.sh: FAILED: $*" >&2
    exit 1
}
check() { printf '  ok  %s\n' "$*"; }

# installed, config-files (removed, configuration kept), not-installed, or nothing.
package_state() { dpkg-query -W -f '${db:Status-Status}' klaxon 2>/dev/null || true; }
case "$(package_state)" in
'' | not-installed) ;;
*) fail "klaxon is $(package_state) here already; not touching it or its configuration" ;;
esac

# --fast: the package is unpacked once and thrown away.
deb=$(scripts/build-deb.sh --fast | tail -n 1)
version=$(dpkg-deb -f "$deb" Version)
echo "scripts/deb-test.sh: installing $deb ($version)"

# On failure, leave the machine as it was found.
purge() {
    case "$(package_state)" in
    '' | not-installed) ;;
    *) $sudo dpkg -P klaxon >/dev/null || true ;;
    esac
}
trap purge EXIT

# The package enables and starts nothing, but should its scripts try, the service stays down.
$sudo scripts/without-service-start.sh dpkg -i "$deb" || fail "dpkg -i $deb"
check "dpkg -i"

installed_version=$(/usr/bin/klaxon --version) || fail "/usr/bin/klaxon --version"
[ "$installed_version" = "klaxon ${version%-*}" ] ||
    fail "/usr/bin/klaxon --version says '$installed_version', the package is $version"
check "/usr/bin/klaxon --version: $installed_version"

# From an empty directory, with the database the unit sets, as the service would start.
unit=$(dpkg -L klaxon | grep -E '/systemd/system/klaxon\.service$') ||
    fail "no klaxon.service among the package's files"
database_url=$(sed -n 's/^Environment=KLAXON_DATABASE_URL=//p' "$unit")
[ "$database_url" = "sqlite:///var/lib/klaxon/klaxon.db" ] ||
    fail "$unit sets KLAXON_DATABASE_URL to '$database_url'"
empty=$(mktemp -d)
summary=$(cd "$empty" && $sudo env -i PATH="$PATH" KLAXON_DATABASE_URL="$database_url" \
    /usr/bin/klaxon config check --config /etc/klaxon/klaxon.toml) ||
    fail "klaxon config check --config /etc/klaxon/klaxon.toml"
rmdir "$empty"
grep -q "^database    $database_url$" <<<"$summary" || fail "config check said: $summary"
check "klaxon config check --config /etc/klaxon/klaxon.toml"

for setting in DynamicUser=yes StateDirectory=klaxon ProtectSystem=strict ProtectHome=yes \
    PrivateTmp=yes NoNewPrivileges=yes 'CapabilityBoundingSet=' Restart=on-failure \
    'LoadCredential=klaxon.toml:/etc/klaxon/klaxon.toml' 'EnvironmentFile=-/etc/klaxon/klaxon.env'; do
    grep -qx "$setting" "$unit" || fail "$unit lacks $setting"
done
check "$unit, hardened"

conffiles=$(dpkg-query -W -f '${Conffiles}' klaxon)
for file in /etc/klaxon/klaxon.toml /etc/klaxon/klaxon.env; do
    grep -q " $file " <<<"$conffiles" || fail "$file is not a conffile"
    [ "$($sudo stat -c %a "$file")" = 600 ] || fail "$file is not 0600"
done
check "/etc/klaxon/klaxon.toml and klaxon.env: conffiles, 0600"

zcat /usr/share/man/man1/klaxon.1.gz | grep -q '^\.TH klaxon 1' || fail "no man page"
grep -q '_klaxon' /usr/share/bash-completion/completions/klaxon || fail "no bash completions"
[ -s /usr/share/zsh/vendor-completions/_klaxon ] || fail "no zsh completions"
[ -s /usr/share/fish/vendor_completions.d/klaxon.fish ] || fail "no fish completions"
check "man page, bash, zsh and fish completions"

$sudo dpkg -r klaxon || fail "dpkg -r klaxon"
[ ! -e /usr/bin/klaxon ] || fail "/usr/bin/klaxon is still there after dpkg -r"
[ -e /etc/klaxon/klaxon.toml ] || fail "dpkg -r removed the configuration; only purge should"
check "dpkg -r: the binary is gone, the configuration kept"
$sudo dpkg -P klaxon || fail "dpkg -P klaxon"
[ ! -e /etc/klaxon/klaxon.toml ] || fail "/etc/klaxon/klaxon.toml is still there after dpkg -P"
check "dpkg -P: the configuration is gone"
echo "scripts/deb-test.sh: passed"
