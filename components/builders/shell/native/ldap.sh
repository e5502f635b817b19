# shellcheck shell=bash
# native/ldap.sh: the native stack's `ldap` stage (ldapMode local): slapd, the directory of CERES users'
# passwords, which Keycloak federates (binding as BIND_DN, changing passwords with the Password Modify
# extended operation) and Dovecot and Postfix read (native/mail_ldap.sh). Rendered after the header,
# lib/strict.sh, lib/prelude.sh (put_file, changed, PENDING) and lib/secrets.sh (LDAP_ADMIN_PASSWORD: the
# root DN ADMIN_DN's; LDAP_BIND_PASSWORD: the service account BIND_DN's).
# What it makes: slapd listening on the ldapi socket and on LDAPS only (no plain port), TLS 1.2+ with the mail
# host's certificate; cn=config built at first (slapadd) and from then on compared attribute by attribute
# with the live configuration over ldapi (as root, SASL EXTERNAL) and changed only where it differs;
# passwords hashed by slapd (PASSWORD_HASH, also what clients send: olcPasswordHash, and the ppolicy overlay
# hashes one written in clear); the ACLs below; the suffix, the containers and the service account.
# From the header: STAGE, MAIL_HOST, BASE_DN, ADMIN_DN, BIND_DN, USERS_DN, CONTAINERS (array: LDIF entries,
# the base first), BIND_ENTRY (LDIF, without its password), LDAPI, LDAPS_PORT, TLS_MODE, CERT_DIR,
# TLS_STAGE_SHA256 (the tls stage's script: a new one re-runs this stage too), TLS_PRIORITY (GnuTLS),
# PASSWORD_HASH, PASSWORD_MODULE, SECRETS (array).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== slapd: the directory $BASE_DN on ldaps://$MAIL_HOST:$LDAPS_PORT"
SLAPD_D=/etc/ldap/slapd.d
MDB="olcDatabase={1}mdb,cn=config"
# root on this host, through the socket: manages cn=config and the data (nothing that root could not do anyway)
ROOT="gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"
# the passwords go to slapd's tools in files, never on a command line; the files go when the stage ends
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The service: our own unit, not the package's init script, whose listeners are set in a conffile (an edited
# conffile keeps unattended-upgrades from upgrading slapd). ldapi for this host, ldaps for Keycloak.
stage_changed=$changed
changed=0
put_file /etc/systemd/system/slapd.service 0644 root:root <<UNIT
# ceres-mail: slapd on its local socket and on LDAPS only, no plain LDAP port (rendered by the stack)
[Unit]
Description=OpenLDAP: the ceres-mail directory (ldapi, ldaps)
After=network.target

[Service]
Type=forking
PIDFile=/run/slapd/slapd.pid
ExecStartPre=/usr/bin/install -d -m 0755 -o openldap -g openldap /run/slapd
ExecStart=/usr/sbin/slapd -h "${LDAPI//%/%%} ldaps://:$LDAPS_PORT/" -u openldap -g openldap -F $SLAPD_D
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
if [ "$changed" = 1 ]; then systemctl daemon-reload; fi
changed=$((stage_changed || changed))

echo "== TLS: slapd's copy of the certificate (tls stage ${TLS_STAGE_SHA256:0:12})"
# slapd runs as openldap, which must not read /etc/letsencrypt: it gets a copy, its key readable by its group
put_file /etc/ldap/tls/fullchain.pem 0644 root:openldap <"$CERT_DIR/fullchain.pem"
put_file /etc/ldap/tls/privkey.pem 0640 root:openldap <"$CERT_DIR/privkey.pem"

if [ ! -e "$SLAPD_D/cn=config.ldif" ]; then
  echo "creating slapd's configuration for $BASE_DN"
  # built aside and moved into place: an interrupted run leaves no half configuration behind
  rm -rf "$SLAPD_D.new"
  install -d -m 0750 "$SLAPD_D.new"
  slapadd -n0 -F "$SLAPD_D.new" <<LDIF
dn: cn=config
objectClass: olcGlobal
cn: config
olcArgsFile: /run/slapd/slapd.args
olcPidFile: /run/slapd/slapd.pid

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: {0}back_mdb
olcModuleLoad: {1}$PASSWORD_MODULE
olcModuleLoad: {2}ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcAccess: {0}to * by dn.exact=$ROOT manage by * none

dn: $MDB
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcDbDirectory: /var/lib/ldap
olcSuffix: $BASE_DN
olcAccess: {0}to * by dn.exact=$ROOT manage by * break
LDIF
  chown -R openldap:openldap "$SLAPD_D.new"
  rm -rf "$SLAPD_D"
  mv "$SLAPD_D.new" "$SLAPD_D"
  touch "$PENDING"
  changed=1
fi

systemctl enable --quiet slapd
if [ "$changed" = 1 ]; then
  systemctl restart slapd
elif ! systemctl is-active --quiet slapd; then
  systemctl start slapd
fi
for _ in $(seq 60); do
  if ldapwhoami -Y EXTERNAL -H "$LDAPI" -Q >/dev/null 2>&1; then break; fi
  sleep 0.5
done
ldapwhoami -Y EXTERNAL -H "$LDAPI" -Q >/dev/null || { echo "slapd does not answer on $LDAPI" >&2; exit 1; }

# as_root: an ldapmodify/ldapadd as root over the socket (SASL EXTERNAL); what it sends is never printed
as_root() { "$@" -Y EXTERNAL -H "$LDAPI" -Q >/dev/null; }
# read_entry DN [ATTRIBUTE...]: the entry as root sees it, one line per value
read_entry() { ldapsearch -LLL -o ldif-wrap=no -Y EXTERNAL -H "$LDAPI" -Q -s base -b "$@"; }
# values NAME < LDIF: the values of attribute NAME, one a line (base64 ones decoded)
values() {
  local name=${1,,} line
  while IFS= read -r line; do
    case "${line,,}" in
      "$name:: "*) printf '%s' "${line#*:: }" | base64 -d; echo ;;
      "$name: "*) printf '%s\n' "${line#*: }" ;;
    esac
  done
}
# converge DN < `name: value` lines: make each attribute named there hold exactly those values (in that order)
# in the live configuration, replacing only the attributes whose values differ
converge() {
  local dn=$1 wanted live name modify=""
  wanted=$(cat)
  live=$(read_entry "$dn")
  for name in $(printf '%s\n' "$wanted" | cut -d: -f1 | awk '!seen[$0]++'); do
    if [ "$(values "$name" <<<"$live")" != "$(values "$name" <<<"$wanted")" ]; then
      modify+="replace: $name"$'\n'"$(grep -i "^$name:" <<<"$wanted")"$'\n-\n'
      echo "updated $dn: $name"
    fi
  done
  if [ -n "$modify" ]; then printf 'dn: %s\n%s' "$dn" "$modify" | as_root ldapmodify; fi
}
# entry_dn LDIF: the DN of an LDIF entry (its first line)
entry_dn() {
  local first=${1%%$'\n'*}
  case "$first" in
    "dn:: "*) printf '%s' "${first#dn:: }" | base64 -d ;;
    *) printf '%s' "${first#dn: }" ;;
  esac
}
exists() { read_entry "$1" 1.1 >/dev/null 2>&1; }
# ensure_entry LDIF: add the entry unless its DN exists (what an existing entry holds is not ours to change)
ensure_entry() {
  local dn
  dn=$(entry_dn "$1")
  if ! exists "$dn"; then
    printf '%s\n' "$1" | as_root ldapadd
    echo "added $dn"
  fi
}

suffix=$(read_entry "$MDB" olcSuffix | values olcSuffix)
if [ "$suffix" != "$BASE_DN" ]; then
  echo "slapd's directory here is '$suffix', not '$BASE_DN': refusing to change the suffix of a directory" \
    "that may hold people. Move them (slapcat, edit, slapadd) or set ldapBaseDn back." >&2
  exit 1
fi

echo "== slapd's configuration"
# TLS 1.2 and 1.3 only, the strict suites; no anonymous bind
converge cn=config <<LDIF
olcTLSCertificateFile: /etc/ldap/tls/fullchain.pem
olcTLSCertificateKeyFile: /etc/ldap/tls/privkey.pem
olcTLSProtocolMin: 3.3
olcTLSCipherSuite: $TLS_PRIORITY
olcDisallows: bind_anon
LDIF
# Every operation but a bind needs an authenticated client: anonymous may authenticate and do nothing else.
# A password sent to slapd (Password Modify) is hashed with PASSWORD_HASH.
converge "olcDatabase={-1}frontend,cn=config" <<LDIF
olcRequires: authc
olcPasswordHash: $PASSWORD_HASH
olcAccess: {0}to dn.base="" by users read by * none
olcAccess: {1}to dn.base="cn=Subschema" by users read by * none
LDIF
# Who may do what, first match wins:
# {0} root on this host, over the socket: everything (then the rules below for everyone else).
# {1} a person's password: the person may bind with it and change it (not read it); the service account
#     may set it (Keycloak WRITABLE: Password Modify) but never read a hash (Dovecot checks a password by
#     binding as the person); anonymous may bind with it; no one else gets anything.
# {2} any other password (the service account's own): the same for its owner, nothing for anyone else.
# {3} the people: the service account reads and writes them (Keycloak maps and edits uid, cn, sn, mail and
#     makes new people); a person reads their own entry but changes none of it (not their mail address,
#     which is their mailbox); no one else sees anyone.
# {4} everything else (the base, the containers): its own entry for a bound account, nothing for others.
# The root DN (ADMIN_DN) is beyond the ACLs, as every root DN.
converge "$MDB" <<LDIF
olcRootDN: $ADMIN_DN
olcDbMaxSize: 1073741824
olcDbIndex: objectClass eq
olcDbIndex: mail eq
olcDbIndex: uid eq
olcDbIndex: entryUUID eq
olcAccess: {0}to * by dn.exact=$ROOT manage by * break
olcAccess: {1}to dn.subtree="$USERS_DN" attrs=userPassword by self =xw by dn.exact="$BIND_DN" =w by anonymous auth by * none
olcAccess: {2}to attrs=userPassword by self =xw by anonymous auth by * none
olcAccess: {3}to dn.subtree="$USERS_DN" by dn.exact="$BIND_DN" write by self read by * none
olcAccess: {4}to * by self read by * none
LDIF
# a password written in clear (a plain modify of userPassword, by Keycloak or by hand) is hashed too
ensure_entry "dn: olcOverlay={0}ppolicy,$MDB
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {0}ppolicy
olcPPolicyHashCleartext: TRUE"
converge "olcOverlay={0}ppolicy,$MDB" <<LDIF
olcPPolicyHashCleartext: TRUE
LDIF

echo "== the root DN and the service account"
umask 077  # the password files: root's alone
printf '%s' "$LDAP_ADMIN_PASSWORD" >"$scratch/admin"
printf '%s' "$LDAP_BIND_PASSWORD" >"$scratch/bind"
umask 022
# binds DN FILE: whether DN binds with the password in FILE (a simple bind, as any client): the stored hash
# is checked rather than replaced, since a new salt would change it on every run
binds() { ldapwhoami -x -H "$LDAPI" -D "$1" -y "$2" >/dev/null 2>&1; }
hash_of() { slappasswd -o module-load="$PASSWORD_MODULE" -h "$PASSWORD_HASH" -T "$1"; }
if ! binds "$ADMIN_DN" "$scratch/admin"; then
  printf 'dn: %s\nreplace: olcRootPW\nolcRootPW: %s\n' "$MDB" "$(hash_of "$scratch/admin")" | as_root ldapmodify
  echo "updated the password of $ADMIN_DN"
fi
for entry in "${CONTAINERS[@]}"; do ensure_entry "$entry"; done
if ! exists "$BIND_DN"; then
  ensure_entry "$BIND_ENTRY"$'\n'"userPassword: $(hash_of "$scratch/bind")"
elif ! binds "$BIND_DN" "$scratch/bind"; then
  printf 'dn: %s\nreplace: userPassword\nuserPassword: %s\n' "$BIND_DN" "$(hash_of "$scratch/bind")" | as_root ldapmodify
  echo "updated the password of $BIND_DN"
fi

if [ "$TLS_MODE" = acme ]; then
  # certbot's renewals (its timer) refresh slapd's copy; a renewal by the tls stage is followed by this stage
  put_file /etc/letsencrypt/renewal-hooks/deploy/ceres-mail-slapd 0755 root:root <<HOOK
#!/bin/sh
# ceres-mail: slapd serves its own copy of the certificate (its key readable by openldap): renew it with
# certbot's (rendered by the stack's ldap stage)
set -e
install -m 0644 -o root -g openldap $CERT_DIR/fullchain.pem /etc/ldap/tls/fullchain.pem
install -m 0640 -o root -g openldap $CERT_DIR/privkey.pem /etc/ldap/tls/privkey.pem
systemctl try-restart slapd
HOOK
fi
rm -f "$PENDING"
echo "ceres-mail: directory $BASE_DN ready (people under $USERS_DN)"
