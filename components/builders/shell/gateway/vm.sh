# shellcheck shell=bash
# gateway/vm.sh: the `gateway` stage, on the mail VM at home. WireGuard to the VPS (this end dials, with a
# keepalive through the home NAT). `Table = off`: wg-quick routes nothing by itself; a rule sends what leaves
# from the tunnel address (Postfix's outbound mail, which binds to it, and every reply to a connection the
# VPS forwarded) through the tunnel, so everything else of the VM keeps its home route. Rendered after
# lib/strict.sh, lib/prelude.sh, lib/secrets.sh and lib/wireguard.sh.
# From the header: STAGE, INTERFACE, TUNNEL_ADDRESSES (array), ENDPOINT, VPS_IPV4, VM_IPV4, VM_IPV6,
# ROUTING_TABLE, KEEPALIVE; from stdin: WIREGUARD_PRIVATE_KEY, WIREGUARD_PEER_KEY.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

# shellcheck disable=SC2153  # VM_IPV4 and VM_IPV6 are both the header's
join() { local IFS=,; echo "$*"; }
echo "== $STAGE: the tunnel to the gateway at $ENDPOINT"
# the rule and route of each tunnel address, as wg-quick hooks (a rule left by an unclean stop is replaced)
hooks() {  # $1 = -4|-6, $2 = the tunnel address
  echo "PostUp = ip $1 rule del from $2 lookup $ROUTING_TABLE priority $ROUTING_TABLE 2>/dev/null || true"
  echo "PostUp = ip $1 rule add from $2 lookup $ROUTING_TABLE priority $ROUTING_TABLE"
  echo "PostUp = ip $1 route replace default dev %i table $ROUTING_TABLE"
  echo "PostDown = ip $1 rule del from $2 lookup $ROUTING_TABLE priority $ROUTING_TABLE 2>/dev/null || true"
}
{
  echo "# ceres-mail: written by the $STAGE stage on every pulumi up; change the stack, not this file"
  echo "[Interface]"
  echo "Address = $(join "${TUNNEL_ADDRESSES[@]}")"
  echo "PrivateKey = $WIREGUARD_PRIVATE_KEY"
  echo "Table = off"
  hooks -4 "$VM_IPV4"
  if [ -n "$VM_IPV6" ]; then hooks -6 "$VM_IPV6"; fi
  echo
  echo "[Peer]"
  echo "# the gateway VPS: everything may come from it (the clients it forwards keep their addresses)"
  echo "PublicKey = $WIREGUARD_PEER_KEY"
  echo "Endpoint = $ENDPOINT"
  echo "AllowedIPs = 0.0.0.0/0, ::/0"
  echo "PersistentKeepalive = $KEEPALIVE"
} | put_file "/etc/wireguard/$INTERFACE.conf" 0600 root:root
apply_tunnel

# the VPS answers through the tunnel: the handshake is done once it does (the first keepalive starts it)
for _ in $(seq 1 30); do
  if ping -c 1 -W 1 -I "$VM_IPV4" "$VPS_IPV4" >/dev/null 2>&1; then
    rm -f "$PENDING"
    echo "gateway: tunnel up, $VM_IPV4 <-> $VPS_IPV4; outbound mail leaves from the gateway's address"
    exit 0
  fi
  sleep 1
done
echo "the gateway at $ENDPOINT does not answer through the tunnel: is its stage installed, udp open?" >&2
wg show "$INTERFACE" latest-handshakes >&2 || true
exit 1
