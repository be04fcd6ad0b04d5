/*
 * The process an OCI image configuration names (image-spec config.md: Entrypoint and Cmd, Env, WorkingDir, User),
 * for images whose disk carries only that configuration: buildah mkcw stores `json.Marshal` of the image as
 * /.krun_config.json inside the encrypted disk, where the host cannot read it, so the guest must.
 */
#ifndef TS_VMM_IMAGE_CONFIG_H
#define TS_VMM_IMAGE_CONFIG_H
#include <stddef.h>

/* The PATH a process gets whose environment names none (runc's and podman's), and where the agent's exec looks. */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/*
 * Reads the configuration at `path` and returns the agent's process description (NUL-terminated words: process
 * options, `--`, arguments; malloc'd, `*len` bytes). User and group names are looked up in `root`/etc/passwd and
 * `root`/etc/group, as runc does in the container's root. NULL with one line in `error` when the file is not such
 * a configuration or names nothing to run.
 */
char *image_config_process(const char *path, const char *root, size_t *len, char *error, size_t error_len);

#endif
