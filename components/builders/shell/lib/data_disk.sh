# shellcheck shell=bash
# lib/data_disk.sh: in the stage that first stores mail (native: mail; mailcow: docker, which puts Docker's
# data-root there). cloud-init mounts the data disk with `nofail`, so a VM whose disk is missing or
# unformatted still boots, with the mail directory on the system disk: mail would fill the root
# filesystem and be lost with the VM. Refuse to go on instead, naming the disk expected.
# From the header: DATA_MOUNT, DATA_DEVICE, DATA_LABEL.
# A template: shell_script.render_script renders what follows the `# ---- rendered below ----` line,
# after a header of quoted values; the lines above it are for readers and shellcheck only.
# ---- rendered below ----

# shellcheck disable=SC2154  # DATA_MOUNT, DATA_DEVICE and DATA_LABEL come from the rendered header
if ! mountpoint -q "$DATA_MOUNT" || [ "$(stat -c %d "$DATA_MOUNT")" = "$(stat -c %d /)" ]; then
  echo "the mail data disk is not mounted on $DATA_MOUNT: expected $DATA_DEVICE (filesystem LABEL=$DATA_LABEL)," \
    "found $DATA_MOUNT on the system disk. Refusing to store mail there: attach the data disk to the VM" \
    "(or check 'journalctl -b -u cloud-init' for its formatting), then run pulumi up again." >&2
  exit 1
fi
echo "mail data on $(findmnt -n -o SOURCE --target "$DATA_MOUNT") at $DATA_MOUNT"
