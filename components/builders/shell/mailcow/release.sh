# shellcheck shell=bash
# mailcow/release.sh: the mailcow stack's `release` stage: mailcow-dockerized at the pinned release tag;
# moving the tag runs mailcow's update procedure. Rendered after the header, lib/strict.sh and
# lib/prelude.sh (put_file, PENDING).
# From the header: STAGE, MAILCOW_DIR, MAILCOW_REPOSITORY, MAILCOW_RELEASE, MAILCOW_COMMIT (the commit the
# tag must still name: a moved tag is refused).
# shellcheck disable=SC2164  # `cd` runs under lib/strict.sh's `set -e`
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

echo "== $STAGE: mailcow-dockerized $MAILCOW_RELEASE"
write_app_info() {
  # what generate_config.sh writes: the version the UI and /api/v1/get/status/version report
  put_file "$MAILCOW_DIR/data/web/inc/app_info.inc.php" 0644 root:root <<PHP
<?php
  \$MAILCOW_GIT_VERSION="$MAILCOW_RELEASE";
  \$MAILCOW_LAST_GIT_VERSION="";
  \$MAILCOW_GIT_OWNER="mailcow";
  \$MAILCOW_GIT_REPO="mailcow-dockerized";
  \$MAILCOW_GIT_URL="$MAILCOW_REPOSITORY";
  \$MAILCOW_GIT_COMMIT="$(git -C "$MAILCOW_DIR" rev-parse HEAD)";
  \$MAILCOW_GIT_COMMIT_DATE="";
  \$MAILCOW_BRANCH="master";
  \$MAILCOW_UPDATEDAT=0;
?>
PHP
}
# tag_is_pinned DIR: the release tag in DIR's clone still names the pinned commit
tag_is_pinned() {
  local named
  named=$(git -C "$1" rev-parse --quiet --verify "refs/tags/$MAILCOW_RELEASE^{commit}" || true)
  if [ "$named" != "$MAILCOW_COMMIT" ]; then
    echo "mailcow-dockerized's tag $MAILCOW_RELEASE names ${named:-nothing}, not the pinned commit $MAILCOW_COMMIT:" \
      "the tag was moved or is not this release; check it at $MAILCOW_REPOSITORY before pinning its new commit" >&2
    return 1
  fi
}
if [ ! -d "$MAILCOW_DIR/.git" ]; then
  rm -rf "$MAILCOW_DIR.partial"
  git clone --quiet --branch "$MAILCOW_RELEASE" "$MAILCOW_REPOSITORY" "$MAILCOW_DIR.partial"
  tag_is_pinned "$MAILCOW_DIR.partial" || { rm -rf "$MAILCOW_DIR.partial"; exit 1; }
  mv "$MAILCOW_DIR.partial" "$MAILCOW_DIR"
  write_app_info
  rm -f "$PENDING"
  echo "mailcow-dockerized $MAILCOW_RELEASE checked out in $MAILCOW_DIR"
  exit 0
fi
cd "$MAILCOW_DIR"
current=$(git describe --tags --exact-match HEAD 2>/dev/null || git rev-parse --short HEAD)
if [ "$(git rev-parse HEAD)" = "$MAILCOW_COMMIT" ]; then
  write_app_info
  rm -f "$PENDING"
  echo "mailcow-dockerized $MAILCOW_RELEASE already in place"
  exit 0
fi
git fetch --quiet --force --tags origin  # a moved tag shows as moved (and is refused below)
if ! git rev-parse --quiet --verify "refs/tags/$MAILCOW_RELEASE^{commit}" >/dev/null; then
  echo "mailcow-dockerized has no release tag '$MAILCOW_RELEASE' (mailcowVersion); see $MAILCOW_REPOSITORY/releases" >&2
  exit 1
fi
tag_is_pinned .
if ! git merge-base --is-ancestor HEAD "refs/tags/$MAILCOW_RELEASE"; then
  echo "refusing to move mailcow from $current to $MAILCOW_RELEASE: mailcow's update procedure only goes forward" >&2
  exit 1
fi
echo "updating mailcow from $current to $MAILCOW_RELEASE"
git checkout --quiet --force "$MAILCOW_COMMIT"
write_app_info
if [ -f mailcow.conf ]; then
  # mailcow's own update procedure without its questions (--force) and without its `git merge` of the
  # branch head (--dev): the pinned tag is checked out above. It pulls the new images, migrates
  # mailcow.conf, and restarts the stack.
  ./update.sh --force --dev --skip-ping-check
fi
rm -f "$PENDING"
echo "mailcow-dockerized now at $MAILCOW_RELEASE"
