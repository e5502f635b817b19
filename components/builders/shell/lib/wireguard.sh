# shellcheck shell=bash
# lib/wireguard.sh: both ends of the gateway. Picks the WireGuard implementation (the kernel's module where
# the kernel has one, else Debian's userspace wireguard-go, which wg-quick falls back to by itself), installs
# what is missing, and defines `apply_tunnel`: wg-quick@INTERFACE enabled for every boot, restarted only when
# its configuration changed. Rendered after lib/strict.sh, lib/prelude.sh and lib/secrets.sh.
# From the header: INTERFACE, EXTRA_PACKAGES (array: what the stage needs besides, e.g. the VPS's nftables).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

# a module the kernel can load counts as the kernel's (a VM's or VPS's kernel); modprobe may be missing
modprobe wireguard 2>/dev/null || true
# shellcheck disable=SC2034  # PACKAGES: read by lib/apt_install_missing.sh, included below
if [ -d /sys/module/wireguard ]; then
  wireguard_implementation="the kernel's WireGuard module"
  PACKAGES=(wireguard-tools "${EXTRA_PACKAGES[@]}")
else
  wireguard_implementation="wireguard-go (userspace: this kernel has no WireGuard module)"
  PACKAGES=(wireguard-tools wireguard-go "${EXTRA_PACKAGES[@]}")
fi
preseed() { :; }
# ---- include lib/apt_install_missing.sh ----
echo "wireguard: $wireguard_implementation"

# apply_tunnel: the tunnel up with its configuration (written before with put_file), at boot too
apply_tunnel() {
  systemctl enable --quiet "wg-quick@$INTERFACE"
  # shellcheck disable=SC2154  # changed: set by lib/prelude.sh
  if [ "$changed" = 1 ] || ! systemctl is-active --quiet "wg-quick@$INTERFACE"; then
    systemctl restart "wg-quick@$INTERFACE"
  fi
}
