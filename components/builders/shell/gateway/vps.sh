# shellcheck shell=bash
# gateway/vps.sh: the `gateway-vps` stage, on the VPS that holds the mail host's public address. WireGuard
# listens on LISTEN_PORT for the mail VM (which dials in); nftables, in a table of the stack's own, lets in
# only that port and SSH from the admin networks, forwards the mail ports to the VM through the tunnel
# without touching the client's address (DNAT only), and gives what the VM sends out the public address
# (SNAT). Rendered after lib/strict.sh, lib/prelude.sh, lib/secrets.sh and lib/wireguard.sh.
# From the header: STAGE, INTERFACE, LISTEN_PORT, TUNNEL_ADDRESSES (array), PEER_ALLOWED (array),
# PUBLIC_IPV4, PUBLIC_IPV6, FORWARDED_PORTS (array), SSH_SOURCES_V4 (array), SSH_SOURCES_V6 (array),
# NFT_TABLE, NFT_RULESET (the table, rendered by gateway.render_nftables); from stdin: WIREGUARD_PRIVATE_KEY, WIREGUARD_PEER_KEY.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

# shellcheck disable=SC2153  # PUBLIC_IPV4 and PUBLIC_IPV6 are both the header's
join() { local IFS=,; echo "$*"; }

echo "== $STAGE: forwarding ${FORWARDED_PORTS[*]} on $PUBLIC_IPV4${PUBLIC_IPV6:+ and $PUBLIC_IPV6} to the mail VM"
# the published addresses must be this VPS's own: a cloud's 1:1 NAT (a private address on the interface) would
# never see them, and the forwarding below would match nothing
interface_of() { ip -o addr show to "$1" | awk '{ print $2; exit }'; }
ipv4_interface=$(interface_of "$PUBLIC_IPV4")
ipv6_interface=$([ -z "$PUBLIC_IPV6" ] || interface_of "$PUBLIC_IPV6")
if [ -z "$ipv4_interface" ] || { [ -n "$PUBLIC_IPV6" ] && [ -z "$ipv6_interface" ]; }; then
  echo "$PUBLIC_IPV4${PUBLIC_IPV6:+ or $PUBLIC_IPV6} (gatewayPublicIpv4/gatewayPublicIpv6) is not an address of this" \
    "VPS's interfaces; a VPS behind a 1:1 NAT is not supported" >&2
  exit 1
fi
echo "public addresses on $ipv4_interface${ipv6_interface:+ and $ipv6_interface}"
# the kernel forwards between the public side and the tunnel (now, and from the next boot on); IPv6
# forwarding would stop the interface from taking router advertisements, so it is told to take them still
{
  echo "# ceres-mail: the gateway forwards the mail ports to the mail VM through WireGuard"
  echo "net.ipv4.ip_forward = 1"
  if [ -n "$PUBLIC_IPV6" ]; then
    echo "net.ipv6.conf.all.forwarding = 1"
    echo "net.ipv6.conf.$ipv6_interface.accept_ra = 2"
  fi
} | put_file /etc/sysctl.d/60-ceres-gateway.conf 0644 root:root
sysctl -q -p /etc/sysctl.d/60-ceres-gateway.conf

# nftables: the stack's own table (gateway.render_nftables), loaded at boot before the network is up
printf '%s' "$NFT_RULESET" | put_file /etc/ceres-mail/gateway.nft 0644 root:root
nft --check -f /etc/ceres-mail/gateway.nft
printf '%s\n' \
  "# ceres-mail: the gateway's nftables table, loaded before the network comes up at boot" \
  "[Unit]" \
  "Description=ceres-mail gateway firewall ($NFT_TABLE)" \
  "DefaultDependencies=no" \
  "After=nftables.service" \
  "Before=network-pre.target" \
  "Wants=network-pre.target" \
  "[Service]" \
  "Type=oneshot" \
  "RemainAfterExit=yes" \
  "ExecStart=/usr/sbin/nft -f /etc/ceres-mail/gateway.nft" \
  "ExecStop=/usr/sbin/nft delete table inet $NFT_TABLE" \
  "[Install]" \
  "WantedBy=multi-user.target" \
  | put_file /etc/systemd/system/ceres-mail-gateway-firewall.service 0644 root:root
# shellcheck disable=SC2154  # changed: set by lib/prelude.sh
if [ "$changed" = 1 ]; then systemctl daemon-reload; fi
systemctl enable --quiet ceres-mail-gateway-firewall.service
# loaded now whenever it differs from what runs (a reload of the same file changes nothing)
if [ "$changed" = 1 ] || ! nft list table inet "$NFT_TABLE" >/dev/null 2>&1; then
  nft -f /etc/ceres-mail/gateway.nft
  systemctl start ceres-mail-gateway-firewall.service
fi

rm -f "$PENDING"

# WireGuard: the VM dials in (no endpoint here); only its tunnel addresses may come out of the tunnel. Its
# changes are counted apart (a marker of their own), so a new firewall (adminCidrs, say) never drops the tunnel.
PENDING=$STATE_DIR/$STAGE-tunnel.pending
changed=0
if [ -e "$PENDING" ]; then changed=1; fi
{
  echo "# ceres-mail: written by the $STAGE stage on every pulumi up; change the stack, not this file"
  echo "[Interface]"
  echo "Address = $(join "${TUNNEL_ADDRESSES[@]}")"
  echo "ListenPort = $LISTEN_PORT"
  echo "PrivateKey = $WIREGUARD_PRIVATE_KEY"
  echo
  echo "[Peer]"
  echo "# the mail VM"
  echo "PublicKey = $WIREGUARD_PEER_KEY"
  echo "AllowedIPs = $(join "${PEER_ALLOWED[@]}")"
} | put_file "/etc/wireguard/$INTERFACE.conf" 0600 root:root
apply_tunnel
rm -f "$PENDING"
echo "gateway: WireGuard on udp/$LISTEN_PORT, SSH from ${SSH_SOURCES_V4[*]} ${SSH_SOURCES_V6[*]}, nothing else open"
