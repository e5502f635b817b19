# shellcheck shell=bash
# common/access.sh: the `access` stage of both mail stacks, the first after cloud-init. The admin user's
# authorized_keys as the stack declares them: every key of adminSshKeys, then the stack's deploy key (the
# install commands log in with it, so it is always kept). cloud-init plants keys at first boot only; this
# stage makes a changed adminSshKeys reach a running VM on the next `pulumi up`, and removes a key
# taken off the list. Rendered after the header, lib/strict.sh, lib/prelude.sh (put_file, PENDING) and
# lib/secrets.sh (DEPLOY_PUBLIC_KEY: not a secret, but it is known only once the stack made the key).
# From the header: STAGE, ADMIN_USER, ADMIN_KEYS (array), SECRETS (array).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE: SSH keys of $ADMIN_USER"
home=$(getent passwd "$ADMIN_USER" | cut -d: -f6)
if [ -z "$home" ]; then
  echo "the admin user $ADMIN_USER does not exist: cloud-init creates it at first boot (adminUser)" >&2
  exit 1
fi
group=$(id -gn "$ADMIN_USER")
install -d -m 0700 -o "$ADMIN_USER" -g "$group" "$home/.ssh"
# shellcheck disable=SC2154  # DEPLOY_PUBLIC_KEY is set by the secrets reader
{
  echo "# ceres-mail: adminSshKeys and the stack's deploy key, rewritten by every pulumi up; change the stack, not this file"
  printf '%s\n' "${ADMIN_KEYS[@]}" "$DEPLOY_PUBLIC_KEY"
} | put_file "$home/.ssh/authorized_keys" 0600 "$ADMIN_USER:$group"
# sshd reads the file at each login: nothing to reload
rm -f "$PENDING"
echo "$ADMIN_USER logs in with ${#ADMIN_KEYS[@]} admin key(s) and the deploy key"
