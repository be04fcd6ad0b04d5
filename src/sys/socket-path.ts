// A Unix socket's path must fit sockaddr_un.sun_path (108 bytes with the final NUL). Node passes a longer one to the
// kernel cut short, so the socket would land at another path (and usually fail as EADDRINUSE on a directory).
const SUN_PATH_MAX = 107;

/** Returns `path`, or throws naming it when it (with `suffixBytes` still to be appended) cannot be a socket path. */
export function checkSocketPath(path: string, suffixBytes = 0): string {
  const bytes = Buffer.byteLength(path) + suffixBytes;
  if (bytes > SUN_PATH_MAX) throw new Error(`${path}: too long for a Unix socket path (${bytes} bytes, at most ${SUN_PATH_MAX})`);
  return path;
}
