# shellcheck shell=bash
# mailcow/docker.sh: the mailcow stack's `docker` stage: base packages, then Docker Engine and the compose
# plugin from Docker's apt repository, versions pinned and held. Rendered after the header, lib/strict.sh
# and lib/prelude.sh (put_file, PENDING).
# From the header: STAGE, PACKAGES (array), DOCKER_APT_URL, DOCKER_APT_KEY_FINGERPRINT, DOCKER_VERSION,
# COMPOSE_VERSION, and for lib/data_disk.sh: DATA_MOUNT, DATA_DEVICE, DATA_LABEL.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE: base packages"
# ---- include lib/apt_repair.sh ----
preseed() { :; }
# ---- include lib/apt_install_missing.sh ----

echo "== $STAGE: Docker Engine $DOCKER_VERSION, compose plugin $COMPOSE_VERSION"
installed_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }
# mailcow's postfix-mailcow publishes port 25: a host MTA would hold it
for mta in exim4 postfix; do
  if systemctl is-enabled --quiet "$mta" 2>/dev/null; then
    echo "disabling the host's $mta: mailcow receives on port 25"
    systemctl disable --now "$mta"
  fi
done
# Docker keeps its data (mailcow's mail volume among it) on the mail data disk; set only before Docker's
# first install, since moving data-root later would hide what is already stored
# ---- include lib/data_disk.sh ----
if [ ! -e /etc/docker/daemon.json ] && ! command -v dockerd >/dev/null; then
  printf '{\n  "data-root": "%s/docker"\n}\n' "$DATA_MOUNT" | put_file /etc/docker/daemon.json 0644 root:root
fi
if [ "$(installed_version docker-ce)" != "$DOCKER_VERSION" ] || [ "$(installed_version docker-ce-cli)" != "$DOCKER_VERSION" ] \
   || [ "$(installed_version docker-compose-plugin)" != "$COMPOSE_VERSION" ]; then
  key=$(mktemp)
  curl -fsSL --retry 3 "$DOCKER_APT_URL/gpg" -o "$key"
  fingerprint=$(gpg --show-keys --with-colons "$key" | awk -F: '$1 == "fpr" { print $10; exit }')
  if [ "$fingerprint" != "$DOCKER_APT_KEY_FINGERPRINT" ]; then
    echo "Docker's apt key has fingerprint '$fingerprint', expected $DOCKER_APT_KEY_FINGERPRINT: refusing it" >&2
    exit 1
  fi
  put_file /etc/apt/keyrings/docker.asc 0644 root:root <"$key"
  rm -f "$key"
  # shellcheck disable=SC1091  # the VM's own os-release
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] $DOCKER_APT_URL $codename stable" \
    | put_file /etc/apt/sources.list.d/docker.list 0644 root:root
  apt-get -q update
  for pin in "docker-ce=$DOCKER_VERSION" "docker-ce-cli=$DOCKER_VERSION" "docker-compose-plugin=$COMPOSE_VERSION"; do
    if ! apt-cache madison "${pin%%=*}" | awk '{ print $3 }' | grep -qxF "${pin#*=}"; then
      echo "${pin%%=*} ${pin#*=} is not in Docker's repository for $codename; it offers:" >&2
      apt-cache madison "${pin%%=*}" | head -5 >&2
      exit 1
    fi
  done
  apt-get -q install -y --no-install-recommends --allow-change-held-packages --allow-downgrades \
    "docker-ce=$DOCKER_VERSION" "docker-ce-cli=$DOCKER_VERSION" "docker-compose-plugin=$COMPOSE_VERSION" containerd.io
  apt-mark hold docker-ce docker-ce-cli docker-compose-plugin >/dev/null
else
  echo "Docker Engine and compose plugin at the pinned versions"
fi
systemctl enable --quiet --now docker
docker compose version >/dev/null
rm -f "$PENDING"
