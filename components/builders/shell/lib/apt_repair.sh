# shellcheck shell=bash
# lib/apt_repair.sh: repairs what an interrupted earlier run (or a crash) left in dpkg. Included where a
# stage template says `# ---- include lib/apt_repair.sh ----` (native/packages.sh, mailcow/docker.sh).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

# An interrupted earlier run (or crash) leaves dpkg mid-way: configure what was unpacked, reinstall what was
# left half-installed, and let apt fix dependencies. All no-ops on a healthy system.
dpkg --configure -a || true
broken=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' | awk '$1 !~ /^(ii|un|rc|pn)/ { print $2 }')
if [ -n "$broken" ]; then
  echo "repairing packages an interrupted run left behind: $broken"
  apt-get -q update
  # shellcheck disable=SC2086  # one word per package
  apt-get -q install -y --reinstall --no-install-recommends $broken
  dpkg --configure -a
fi
if ! apt-get -q check >/dev/null 2>&1; then
  apt-get -q update
  apt-get -q install -y -f --no-install-recommends
fi
