# shellcheck shell=bash
# lib/apt_install_missing.sh: installs what the header's PACKAGES lists and is missing, calling the stage's
# own `preseed` function first when there is anything to install. Included where a stage template says
# `# ---- include lib/apt_install_missing.sh ----` (native/packages.sh, mailcow/docker.sh, common/backup.sh).
# From the header: PACKAGES (array).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  preseed
  apt-get -q update
  apt-get -q install -y --no-install-recommends "${missing[@]}"
else
  echo "all packages present"
fi
