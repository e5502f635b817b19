# shellcheck shell=bash
# native/packages.sh: the native stack's `packages` stage: Debian's Postfix, Dovecot, rspamd, nginx,
# certbot. Rendered after the header and lib/strict.sh.
# From the header: STAGE, MAIL_HOST, PACKAGES (array).
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE"
# ---- include lib/apt_repair.sh ----
preseed() {
  echo "postfix postfix/main_mailer_type select Internet Site" | debconf-set-selections
  echo "postfix postfix/mailname string $MAIL_HOST" | debconf-set-selections
}
# ---- include lib/apt_install_missing.sh ----
