# shellcheck shell=bash
# native/debconf.sh: with ldapMode local, before native/packages.sh: the debconf answers of the packages the
# stage installs, given before anything is installed or repaired (a `dpkg --configure -a` of a package an
# interrupted run left half-installed asks them too). Today one: slapd makes no directory of its own, since
# the ldap stage makes the stack's. Rendered after the header and lib/strict.sh.
# From the header: DEBCONF (array: debconf-set-selections lines).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----
printf '%s\n' "${DEBCONF[@]}" | debconf-set-selections
