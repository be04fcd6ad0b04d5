/*
 * ts-vmm guest agent: runs the container process inside the guest and carries its I/O to the host.
 *
 * The init script execs this as PID 1 after mounting the root disk. It connects to the host over AF_VSOCK
 * (or a Unix socket, which lets the host test the same binary without a VM), makes the bundle's mounts and host
 * name (from its command line), announces itself with READY, receives the process description in PROCESS frames
 * and waits for START, then runs the process chrooted into the root disk with the bundle's cwd, user, groups,
 * umask, rlimits and environment. The process travels over the connection, not the command line: arguments and
 * environment may hold secrets, and their size is bounded only by what execve(2) takes. A setup failure is sent as ERROR before giving up. Stdout and stderr travel as separate frames; stdin, signals and terminal size come
 * back the other way. When the process exits every other guest process is killed, the root disk is unmounted
 * so its writes are on the disk, and only then is EXIT sent: the host may stop the VM the moment it reads it.
 *
 * A confidential image carries its setup and process inside the encrypted disk, in words files (`--setup-file`,
 * `--process-file`), or, made by buildah mkcw, as the OCI image's configuration (`--image-config`, read by
 * image-config.c); the host then cannot choose the process, and a PROCESS frame from it ends the run.
 *
 * With `--exec-listen PORT` (vsock; a path: a Unix socket) the agent also takes further processes into the running
 * container (`ts-vmm exec`): each connection there gets a forked session of its own speaking the same frames (READY,
 * PROCESS, START, ...), whose process runs in the same root, and ends with the container's process like every
 * other. An image that names its own process takes none. Run as
 * `agent --take-secret SLOT` it hands the launch secret to cryptsetup and wipes the slot.
 *
 * Frame: u32 little-endian payload length, u8 type, payload. Both sides reject payloads over MAX_PAYLOAD.
 * Must stay in step with src/oci/agent-protocol.ts.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "image-config.h"

enum {
  FRAME_READY = 1, FRAME_STDOUT = 2, FRAME_STDERR = 3, FRAME_EXIT = 4, FRAME_ERROR = 5, FRAME_STARTED = 6,
  FRAME_START = 16, FRAME_STDIN = 17, FRAME_STDIN_EOF = 18, FRAME_SIGNAL = 19, FRAME_WINSIZE = 20, FRAME_PROCESS = 21,
};
/* MAX_PROCESS bounds the process description (NUL-terminated words); MAX_MOUNTS is checked on the host too. */
enum { HEADER = 5, MAX_PAYLOAD = 65536, STDIN_BUFFER = 4 * MAX_PAYLOAD, MAX_MOUNTS = 64, MAX_PROCESS = 8 << 20 };

struct mount_spec { const char *type, *source, *target, *data; unsigned long flags; };

struct options {
  const char *vsock, *unix_path, *root, *cwd, *unmount, *hostname, *dev_dir, *process_file, *image_config, *exec_listen;
  struct mount_spec mounts[MAX_MOUNTS];
  int nmounts;
  uid_t uid;
  gid_t gid;
  gid_t groups[NGROUPS_MAX];
  int ngroups, terminal, no_new_privs, poweroff;
  long umask_value;
  struct { int resource; struct rlimit limit; } rlimits[RLIM_NLIMITS];
  int nrlimits;
  char **env; /* NULL-terminated, allocated for the description's words */
  int nenv;
  char **argv;
};

static int sock = -1;
/* In an exec session: its own pid, so that its process can tell whether the session is still there. */
static pid_t exec_session_pid = 0;

static void die(const char *what) {
  fprintf(stderr, "ts-vmm-agent: %s: %s\n", what, strerror(errno));
  sync();
  if (getpid() == 1) reboot(RB_POWER_OFF);
  exit(125);
}

static void send_frame(uint8_t type, const void *payload, uint32_t len);
static void await_host_close(void);

static void usage(const char *problem) {
  fprintf(stderr, "ts-vmm-agent: %s\n", problem);
  if (sock >= 0) {
    send_frame(FRAME_ERROR, problem, (uint32_t)strlen(problem));
    shutdown(sock, SHUT_WR);
    await_host_close(); /* so the ERROR frame is not lost at power-off */
  }
  sync();
  if (getpid() == 1) reboot(RB_POWER_OFF);
  exit(125);
}

static void write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("write to host");
    p += n;
    len -= (size_t)n;
  }
}

static void send_frame(uint8_t type, const void *payload, uint32_t len) {
  uint8_t header[HEADER] = { len & 0xff, (len >> 8) & 0xff, (len >> 16) & 0xff, len >> 24, type };
  write_all(sock, header, HEADER);
  if (len > 0) write_all(sock, payload, len);
}

static void send_error(const char *fmt, const char *subject, int err) {
  char text[1024];
  int n = snprintf(text, sizeof text, fmt, subject, strerror(err));
  send_frame(FRAME_ERROR, text, n < 0 ? 0 : (uint32_t)(n < (int)sizeof text ? n : (int)sizeof text - 1));
}

static unsigned long parse_number(const char *text, unsigned long max, const char *what) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 0);
  if (errno || end == text || *end || v > max) usage(what);
  return v;
}

static const struct { const char *name; int resource; } RLIMITS[] = {
  { "RLIMIT_AS", RLIMIT_AS }, { "RLIMIT_CORE", RLIMIT_CORE }, { "RLIMIT_CPU", RLIMIT_CPU },
  { "RLIMIT_DATA", RLIMIT_DATA }, { "RLIMIT_FSIZE", RLIMIT_FSIZE }, { "RLIMIT_LOCKS", RLIMIT_LOCKS },
  { "RLIMIT_MEMLOCK", RLIMIT_MEMLOCK }, { "RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE }, { "RLIMIT_NICE", RLIMIT_NICE },
  { "RLIMIT_NOFILE", RLIMIT_NOFILE }, { "RLIMIT_NPROC", RLIMIT_NPROC }, { "RLIMIT_RSS", RLIMIT_RSS },
  { "RLIMIT_RTPRIO", RLIMIT_RTPRIO }, { "RLIMIT_RTTIME", RLIMIT_RTTIME },
  { "RLIMIT_SIGPENDING", RLIMIT_SIGPENDING }, { "RLIMIT_STACK", RLIMIT_STACK },
};

/* --rlimit NAME=SOFT:HARD; a second one for the same resource replaces the first. */
static void parse_rlimit(struct options *o, char *spec) {
  char *eq = strchr(spec, '='), *colon = eq ? strchr(eq, ':') : NULL;
  if (!colon) usage("bad --rlimit");
  *eq = *colon = '\0';
  for (size_t i = 0; i < sizeof RLIMITS / sizeof RLIMITS[0]; i++) {
    if (strcmp(RLIMITS[i].name, spec) != 0) continue;
    int n = 0;
    while (n < o->nrlimits && o->rlimits[n].resource != RLIMITS[i].resource) n++;
    if (n == o->nrlimits) o->nrlimits++; /* at most one entry per resource: never beyond RLIM_NLIMITS */
    o->rlimits[n].resource = RLIMITS[i].resource;
    o->rlimits[n].limit.rlim_cur = parse_number(eq + 1, ULONG_MAX, "bad --rlimit soft value");
    o->rlimits[n].limit.rlim_max = parse_number(colon + 1, ULONG_MAX, "bad --rlimit hard value");
    return;
  }
  usage("unknown --rlimit name");
}

/*
 * A file of NUL-terminated words, read whole (at most MAX_PROCESS bytes); `*len` is its size. A confidential
 * image carries the container's setup and process this way, inside the encrypted disk the host cannot read.
 */
static char *read_words_file(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  char *text = malloc(MAX_PROCESS);
  if (!text) usage("no memory for a words file");
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, text + n, MAX_PROCESS - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die(path);
    if (r == 0) break;
    n += (size_t)r;
    if (n == MAX_PROCESS) usage("words file larger than MAX_PROCESS");
  }
  close(fd);
  if (n == 0 || text[n - 1] != '\0') usage("words file is not NUL-terminated words");
  *len = n;
  return text;
}

/* Setup options (how to reach the host, how to set the container up) from `argv[first..argc)`. */
static void parse_setup_words(struct options *o, int first, int argc, char **argv, int allow_file) {
  for (int i = first; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--poweroff") == 0) { o->poweroff = 1; continue; }
    if (!v) usage("option without value");
    i++;
    if (strcmp(a, "--vsock") == 0) o->vsock = v;
    else if (strcmp(a, "--unix") == 0) o->unix_path = v;
    else if (strcmp(a, "--root") == 0) o->root = v;
    else if (strcmp(a, "--unmount") == 0) o->unmount = v;
    else if (strcmp(a, "--hostname") == 0) o->hostname = v;
    else if (strcmp(a, "--populate-dev") == 0) o->dev_dir = v;
    else if (strcmp(a, "--process-file") == 0) o->process_file = v;
    else if (strcmp(a, "--image-config") == 0) o->image_config = v;
    else if (strcmp(a, "--exec-listen") == 0) o->exec_listen = v;
    else if (strcmp(a, "--setup-file") == 0 && allow_file) {
      size_t len;
      char *text = read_words_file(v, &len);
      int nwords = 0;
      for (size_t k = 0; k < len; k++) nwords += text[k] == '\0';
      char **words = calloc((size_t)nwords, sizeof *words);
      if (!words) usage("no memory for the setup file");
      for (size_t k = 0, w = 0; k < len; k += strlen(text + k) + 1) words[w++] = text + k;
      parse_setup_words(o, 0, nwords, words, 0); /* the words stay allocated: the options point into them */
    } else if (strcmp(a, "--mount") == 0) {
      /* --mount TYPE SOURCE TARGET FLAGS DATA: mount(2)'s own arguments, decoded from runtime-spec on the host */
      if (i + 4 >= argc || o->nmounts >= MAX_MOUNTS) usage("--mount wants TYPE SOURCE TARGET FLAGS DATA");
      struct mount_spec *m = &o->mounts[o->nmounts++];
      m->type = v;
      m->source = argv[++i];
      m->target = argv[++i];
      m->flags = parse_number(argv[++i], ULONG_MAX, "bad --mount flags");
      m->data = argv[++i];
    } else usage("unknown option");
  }
}

/* The command line: how to reach the host and how to set the container up (mounts, host name). */
static void parse_setup(struct options *o, int argc, char **argv) {
  memset(o, 0, sizeof *o);
  o->root = "/";
  o->cwd = "/";
  o->umask_value = -1;
  parse_setup_words(o, 1, argc, argv, 1);
  if (!o->vsock == !o->unix_path) usage("exactly one of --vsock CID:PORT or --unix PATH is required");
  if (o->process_file && o->image_config) usage("--process-file with --image-config: one process, from one place");
  if (o->exec_listen && (o->process_file || o->image_config))
    usage("--exec-listen with --process-file or --image-config: an image that names its process takes no other");
}

/*
 * `--take-secret FILE`: the launch secret's slot (src/initramfs/secret-slot.ts) holds the passphrase, zero-padded
 * as libkrun's key broker sends it. Writes the bytes before the first NUL to stdout for cryptsetup, then zeroes the
 * slot and removes it, so the passphrase is gone from the guest's memory once the disk is open.
 */
static int take_secret(const char *path) {
  static char slot[4096];
  int fd = open(path, O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "ts-vmm-agent: no launch secret slot %s: %s\n", path, strerror(errno));
    return 1;
  }
  ssize_t n = read(fd, slot, sizeof slot);
  size_t len = n > 0 ? strnlen(slot, (size_t)n) : 0;
  int status = 0;
  if (len == 0) {
    fprintf(stderr, "ts-vmm-agent: the launch secret slot is empty: no secret was injected at launch\n");
    status = 1;
  } else {
    for (size_t done = 0; done < len;) {
      ssize_t w = write(STDOUT_FILENO, slot + done, len - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) { status = 1; break; }
      done += (size_t)w;
    }
  }
  if (n > 0) {
    memset(slot, 0, (size_t)n);
    if (pwrite(fd, slot, (size_t)n, 0) != n) status = 1;
  }
  close(fd);
  unlink(path);
  return status;
}

/*
 * The process description from the PROCESS frames: `len` bytes of NUL-terminated words, options then `--` and the
 * arguments. The words stay in `text`, which the options point into.
 */
static void parse_process(struct options *o, char *text, size_t len) {
  if (len == 0 || text[len - 1] != '\0') usage("process description is not NUL-terminated words");
  size_t nwords = 0;
  for (size_t i = 0; i < len; i++) nwords += text[i] == '\0';
  char **words = calloc(nwords + 1, sizeof *words);
  o->env = calloc(nwords + 1, sizeof *o->env);
  if (!words || !o->env) usage("no memory for the process description");
  for (size_t i = 0, w = 0; i < len; i += strlen(text + i) + 1) words[w++] = text + i;
  size_t i = 0;
  for (; i < nwords; i++) {
    const char *a = words[i];
    const char *v = i + 1 < nwords ? words[i + 1] : NULL;
    if (strcmp(a, "--") == 0) { i++; break; }
    if (strcmp(a, "--terminal") == 0) { o->terminal = 1; continue; }
    if (strcmp(a, "--no-new-privileges") == 0) { o->no_new_privs = 1; continue; }
    if (!v) usage("process option without value");
    i++;
    if (strcmp(a, "--cwd") == 0) o->cwd = v;
    else if (strcmp(a, "--uid") == 0) o->uid = (uid_t)parse_number(v, UINT32_MAX, "bad --uid");
    else if (strcmp(a, "--gid") == 0) o->gid = (gid_t)parse_number(v, UINT32_MAX, "bad --gid");
    else if (strcmp(a, "--umask") == 0) o->umask_value = (long)parse_number(v, 0777, "bad --umask");
    else if (strcmp(a, "--group") == 0) {
      if (o->ngroups >= NGROUPS_MAX) usage("more additional groups than NGROUPS_MAX");
      o->groups[o->ngroups++] = (gid_t)parse_number(v, UINT32_MAX, "bad --group");
    } else if (strcmp(a, "--rlimit") == 0) parse_rlimit(o, words[i]);
    else if (strcmp(a, "--env") == 0) o->env[o->nenv++] = words[i];
    else usage("unknown process option");
  }
  if (i >= nwords) usage("no program given after --");
  o->argv = words + i;
}

/* For one connect(2) to be answered, and for all attempts together. */
enum { CONNECT_TIMEOUT_S = 5, CONNECT_BUDGET_S = 60 };

static int connect_host(const struct options *o) {
  int fd;
  if (o->vsock) {
    char *colon = strchr(o->vsock, ':');
    if (!colon) usage("--vsock wants CID:PORT");
    *colon = '\0';
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK };
    addr.svm_cid = (unsigned)parse_number(o->vsock, UINT32_MAX, "bad vsock CID");
    addr.svm_port = (unsigned)parse_number(colon + 1, UINT32_MAX, "bad vsock port");
    /*
     * The kernel gives up on a vsock connect after 2 s by default, which an emulated or loaded host can exceed;
     * a late answer then finds the guest gone. Allow CONNECT_TIMEOUT_S per attempt, and retry with a fresh socket
     * (a failed connect leaves the old one unusable) for up to CONNECT_BUDGET_S: while the transport is still
     * probing (ENODEV), and after an attempt that got no answer.
     */
    struct timeval timeout = { .tv_sec = CONNECT_TIMEOUT_S };
    struct timespec begun, now;
    clock_gettime(CLOCK_MONOTONIC, &begun);
    for (;;) {
      fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) die("socket(AF_VSOCK)");
      setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &timeout, sizeof timeout);
      if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) break;
      /* ENODEV until the virtio transport has probed its device, which under emulation can take seconds */
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (now.tv_sec - begun.tv_sec >= CONNECT_BUDGET_S) die("connect to host over vsock");
      close(fd);
      usleep(20000);
    }
  } else {
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(o->unix_path) >= sizeof addr.sun_path) usage("--unix path too long");
    strcpy(addr.sun_path, o->unix_path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket(AF_UNIX)");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect to host over unix socket");
  }
  return fd;
}

/* Where further processes come in (`--exec-listen`): a vsock port any CID may reach, or a Unix socket path. */
static int listen_exec(const char *where) {
  int fd;
  if (strchr(where, '/')) {
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(where) >= sizeof addr.sun_path) usage("--exec-listen path too long");
    strcpy(addr.sun_path, where);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("--exec-listen on a unix socket");
  } else {
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY };
    addr.svm_port = (unsigned)parse_number(where, UINT32_MAX, "bad --exec-listen port");
    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("--exec-listen on vsock");
  }
  if (listen(fd, 8) < 0) die("listen for exec");
  return fd;
}

/* execvp(3) semantics, but with PATH taken from the process's own environment, not the agent's. */
static void exec_program(const struct options *o) {
  const char *prog = o->argv[0];
  if (strchr(prog, '/')) {
    execve(prog, o->argv, o->env);
    return;
  }
  const char *path = DEFAULT_PATH;
  for (int i = 0; i < o->nenv; i++)
    if (strncmp(o->env[i], "PATH=", 5) == 0) path = o->env[i] + 5;
  int saved = ENOENT;
  char candidate[PATH_MAX];
  for (const char *dir = path; *dir;) {
    size_t len = strcspn(dir, ":");
    if (len > 0 && snprintf(candidate, sizeof candidate, "%.*s/%s", (int)len, dir, prog) < (int)sizeof candidate) {
      execve(candidate, o->argv, o->env);
      if (errno != ENOENT && errno != ENOTDIR) saved = errno;
    }
    dir += len;
    if (*dir == ':') dir++;
  }
  errno = saved;
}

struct child_error { int err; char step[64]; };

/* Runs in the forked child: set up the process's world and exec it; on failure report the step and errno. */
static void child_main(const struct options *o, int report_fd, int slave_fd, int in_fd, int out_fd, int err_fd) {
  struct child_error e = { 0 };
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  signal(SIGPIPE, SIG_DFL);
  if (setsid() < 0) { e.err = errno; strcpy(e.step, "setsid"); goto fail; }
  if (o->terminal) {
    if (ioctl(slave_fd, TIOCSCTTY, 0) < 0) { e.err = errno; strcpy(e.step, "TIOCSCTTY"); goto fail; }
    in_fd = out_fd = err_fd = slave_fd;
  }
  if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) { e.err = errno; strcpy(e.step, "dup2"); goto fail; }
  if (strcmp(o->root, "/") != 0 && chroot(o->root) < 0) { e.err = errno; strcpy(e.step, "chroot"); goto fail; }
  if (chdir(o->cwd) < 0) { e.err = errno; snprintf(e.step, sizeof e.step, "chdir %s", o->cwd); goto fail; }
  for (int i = 0; i < o->nrlimits; i++)
    if (setrlimit(o->rlimits[i].resource, &o->rlimits[i].limit) < 0) { e.err = errno; strcpy(e.step, "setrlimit"); goto fail; }
  if (setgroups((size_t)o->ngroups, o->groups) < 0) { e.err = errno; strcpy(e.step, "setgroups"); goto fail; }
  if (setgid(o->gid) < 0) { e.err = errno; strcpy(e.step, "setgid"); goto fail; }
  if (setuid(o->uid) < 0) { e.err = errno; strcpy(e.step, "setuid"); goto fail; }
  /*
   * An exec'd process ends with its session, which ends with the agent (PID 1 in the guest kills everything anyway;
   * this holds where the agent is not PID 1 too). Set after setuid, which clears it; the session may be gone already.
   */
  if (exec_session_pid && (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != exec_session_pid)) _exit(128 + SIGKILL);
  if (o->umask_value >= 0) umask((mode_t)o->umask_value);
  if (o->no_new_privs && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) { e.err = errno; strcpy(e.step, "no_new_privs"); goto fail; }
  exec_program(o);
  e.err = errno;
  snprintf(e.step, sizeof e.step, "exec %.50s", o->argv[0]);
fail:
  if (write(report_fd, &e, sizeof e) < 0) _exit(125);
  _exit(e.err == ENOENT ? 127 : 126);
}

static void set_nonblocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Unmounts everything at or below `dir`, deepest first, so the root disk's writes reach the disk. */
static void unmount_tree(const char *dir) {
  char mounts[64][PATH_MAX];
  int n = 0;
  size_t dlen = strlen(dir);
  FILE *f = fopen("/proc/self/mounts", "r");
  if (!f) return;
  char line[PATH_MAX * 2];
  while (n < 64 && fgets(line, sizeof line, f)) {
    char target[PATH_MAX];
    if (sscanf(line, "%*s %4095s", target) != 1) continue;
    if (strncmp(target, dir, dlen) == 0 && (target[dlen] == '\0' || target[dlen] == '/')) strcpy(mounts[n++], target);
  }
  fclose(f);
  for (int i = n - 1; i >= 0; i--) {
    if (umount2(mounts[i], 0) == 0) continue;
    /* Still busy (cannot happen once every process is gone, but never leave a dirty root): make it read-only. */
    if (mount(NULL, mounts[i], NULL, MS_REMOUNT | MS_RDONLY, NULL) < 0 && i == 0)
      fprintf(stderr, "ts-vmm-agent: cannot unmount %s: %s\n", mounts[i], strerror(errno));
  }
  sync();
}

static int mkdir_p(const char *path) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) { errno = ENAMETOOLONG; return -1; }
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) < 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0755) < 0 && errno != EEXIST ? -1 : 0;
}

/* The mount point of a file the host copied in (a bind of /etc/hosts and the like): its directory, then the file. */
static int make_file_mount_point(const char *path) {
  char dir[PATH_MAX];
  if (snprintf(dir, sizeof dir, "%s", path) >= (int)sizeof dir) { errno = ENAMETOOLONG; return -1; }
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    if (mkdir_p(dir) < 0) return -1;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return errno == EISDIR || errno == EROFS ? (access(path, F_OK) == 0 ? 0 : -1) : -1;
  close(fd);
  return 0;
}

/* The devices runtime-spec says every container gets, for a /dev the bundle mounts as an empty tmpfs. */
static int populate_dev(const char *dir) {
  static const struct { const char *name; unsigned major, minor; } nodes[] = {
    { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
  };
  static const struct { const char *name, *target; } links[] = {
    { "ptmx", "pts/ptmx" }, { "fd", "/proc/self/fd" }, { "stdin", "/proc/self/fd/0" },
    { "stdout", "/proc/self/fd/1" }, { "stderr", "/proc/self/fd/2" },
  };
  char path[PATH_MAX];
  for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, nodes[i].name);
    if (mknod(path, S_IFCHR | 0666, makedev(nodes[i].major, nodes[i].minor)) < 0 && errno != EEXIST) return -1;
    chmod(path, 0666); /* mknod's mode passed through the umask */
  }
  for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, links[i].name);
    if (symlink(links[i].target, path) < 0 && errno != EEXIST) return -1;
  }
  return 0;
}

/* Mounts and host name, before READY, so a `created` container is fully set up. Returns 0 or reports and -1. */
static int set_up(const struct options *o) {
  char target[PATH_MAX];
  for (int i = 0; i < o->nmounts; i++) {
    const struct mount_spec *m = &o->mounts[i];
    if (snprintf(target, sizeof target, "%s%s", strcmp(o->root, "/") == 0 ? "" : o->root, m->target) >= (int)sizeof target) {
      send_error("mount %s: %s", m->target, ENAMETOOLONG);
      return -1;
    }
    int bind = strcmp(m->type, "bind") == 0;
    if ((bind ? make_file_mount_point(target) : mkdir_p(target)) < 0) { send_error("create mount point %s: %s", m->target, errno); return -1; }
    /* A bind mount takes its source as is; MS_RDONLY and the other flags apply only when it is remounted. */
    if (mount(m->source, target, bind ? NULL : m->type, bind ? MS_BIND : m->flags, bind || !m->data[0] ? NULL : m->data) < 0
        || (bind && m->flags && mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | m->flags, NULL) < 0)) {
      send_error("mount %s: %s", m->target, errno);
      return -1;
    }
  }
  if (o->dev_dir && populate_dev(o->dev_dir) < 0) { send_error("populate %s: %s", o->dev_dir, errno); return -1; }
  if (o->hostname && sethostname(o->hostname, strlen(o->hostname)) < 0) { send_error("sethostname %s: %s", o->hostname, errno); return -1; }
  return 0;
}

/*
 * A write to the socket returns once the data is queued in the guest kernel, not once the host has it; powering
 * off right after EXIT could lose it. The host closes its side when it has read EXIT: wait for that (discarding
 * anything it still sent), for at most EXIT_ACK_MS in case the host is gone.
 */
enum { EXIT_ACK_MS = 5000 };
static void await_host_close(void) {
  static uint8_t discard[4096];
  struct pollfd p = { sock, POLLIN, 0 };
  while (poll(&p, 1, EXIT_ACK_MS) > 0) {
    ssize_t n = recv(sock, discard, sizeof discard, 0);
    if (n == 0 || (n < 0 && errno != EINTR)) return;
  }
}

struct stream { int fd; uint8_t frame; };

static int forward_output(struct stream *s) {
  static uint8_t buf[MAX_PAYLOAD];
  ssize_t n = read(s->fd, buf, sizeof buf);
  if (n > 0) { send_frame(s->frame, buf, (uint32_t)n); return 1; }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
  close(s->fd); /* EOF, or EIO from a pty master whose slave side is gone */
  s->fd = -1;
  return 0;
}

static void report_exit(int status) {
  uint8_t exit_payload[5] = { WIFSIGNALED(status) ? 1 : 0 };
  uint32_t v = WIFSIGNALED(status) ? (uint32_t)WTERMSIG(status) : (uint32_t)WEXITSTATUS(status);
  exit_payload[1] = v & 0xff; exit_payload[2] = (v >> 8) & 0xff; exit_payload[3] = (v >> 16) & 0xff; exit_payload[4] = v >> 24;
  send_frame(FRAME_EXIT, exit_payload, sizeof exit_payload);
  shutdown(sock, SHUT_WR);
  await_host_close();
}

struct session_end { int started, host_gone, status; };

static struct session_end serve(struct options *o, const struct options *base, int listener, int sigfd, char *description, size_t description_len);

/* A forked session for one `ts-vmm exec` connection: its own process, from options as they were before any process. */
static void exec_session(const struct options *base, int conn, int sigfd, pid_t agent) {
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != agent) _exit(0);
  exec_session_pid = getpid();
  static struct options o;
  o = *base;
  sock = conn;
  send_frame(FRAME_READY, NULL, 0);
  struct session_end end = serve(&o, base, -1, sigfd, NULL, 0);
  if (end.started && !end.host_gone) report_exit(end.status);
  _exit(0);
}

/*
 * One process's session over `sock`: the PROCESS frames and START, then its I/O until it has exited and its output
 * is drained. With a listener (the container's own session), connections there become exec sessions.
 */
static struct session_end serve(struct options *o, const struct options *base, int listener, int sigfd, char *description, size_t description_len) {
  static uint8_t in[HEADER + MAX_PAYLOAD + STDIN_BUFFER];
  size_t in_len = 0;
  static uint8_t pending[STDIN_BUFFER];
  size_t pending_len = 0;
  int started = 0, stdin_eof = 0, host_gone = 0;
  pid_t child = -1;
  int status = 0, child_done = 0;
  struct stream out = { -1, FRAME_STDOUT }, err = { -1, FRAME_STDERR };
  int stdin_fd = -1, master = -1;
  struct winsize early_size = { 0 };

  for (;;) {
    /* Decode complete frames from the host. */
    size_t off = 0;
    while (in_len - off >= HEADER) {
      uint32_t len = in[off] | in[off + 1] << 8 | in[off + 2] << 16 | (uint32_t)in[off + 3] << 24;
      uint8_t type = in[off + 4];
      if (len > MAX_PAYLOAD) usage("host sent an oversized frame");
      if (in_len - off < HEADER + len) break;
      const uint8_t *p = in + off + HEADER;
      if (type == FRAME_STDIN && len > sizeof pending - pending_len) break; /* wait for the process to read */
      off += HEADER + len;
      if (type == FRAME_PROCESS && !started) {
        /* A confidential image names its own process; the host may not replace or extend it. */
        if (o->process_file || o->image_config) usage("the host sent a process, but this workload's process comes from its image");
        if (len > MAX_PROCESS - description_len) usage("process description larger than MAX_PROCESS");
        char *grown = realloc(description, description_len + len);
        if (!grown) usage("no memory for the process description");
        description = grown;
        memcpy(description + description_len, p, len);
        description_len += len;
      } else if (type == FRAME_START && !started) {
        started = 1;
        parse_process(o, description, description_len);
        int report[2], pin[2] = { -1, -1 }, pout[2] = { -1, -1 }, perr[2] = { -1, -1 }, slave = -1;
        if (pipe2(report, O_CLOEXEC) < 0) die("pipe");
        if (o->terminal) {
          master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
          if (master < 0 || grantpt(master) < 0 || unlockpt(master) < 0) die("posix_openpt");
          slave = open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC);
          if (slave < 0) die("open pty slave");
          if (early_size.ws_row) ioctl(master, TIOCSWINSZ, &early_size);
        } else if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0) {
          die("pipe");
        }
        child = fork();
        if (child < 0) die("fork");
        if (child == 0) child_main(o, report[1], slave, pin[0], pout[1], perr[1]);
        close(report[1]);
        struct child_error e;
        /* The pipe closes on exec (O_CLOEXEC): nothing read means the program runs. */
        if (read(report[0], &e, sizeof e) == (ssize_t)sizeof e) {
          e.step[sizeof e.step - 1] = '\0';
          send_error("%s: %s", e.step, e.err);
        } else {
          send_frame(FRAME_STARTED, NULL, 0);
        }
        close(report[0]);
        if (o->terminal) {
          close(slave);
          out.fd = master;
          stdin_fd = dup(master);
        } else {
          close(pin[0]); close(pout[1]); close(perr[1]);
          stdin_fd = pin[1];
          out.fd = pout[0];
          err.fd = perr[0];
        }
        set_nonblocking(stdin_fd);
        set_nonblocking(out.fd);
        if (err.fd >= 0) set_nonblocking(err.fd);
      } else if (type == FRAME_STDIN) {
        if (stdin_fd >= 0) { memcpy(pending + pending_len, p, len); pending_len += len; }
      } else if (type == FRAME_STDIN_EOF) {
        stdin_eof = 1;
      } else if (type == FRAME_SIGNAL && len == 4) {
        int sig = (int)(p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24);
        if (child > 0 && !child_done && sig > 0 && sig < 65) kill(child, sig);
      } else if (type == FRAME_WINSIZE && len == 4) {
        struct winsize ws = { .ws_row = (unsigned short)(p[0] | p[1] << 8), .ws_col = (unsigned short)(p[2] | p[3] << 8) };
        if (master >= 0) ioctl(master, TIOCSWINSZ, &ws);
        else early_size = ws;
      }
    }
    memmove(in, in + off, in_len - off);
    in_len -= off;

    /* Feed the process's stdin; close it at EOF once everything before EOF is written. */
    if (stdin_fd >= 0 && pending_len > 0) {
      ssize_t n = write(stdin_fd, pending, pending_len);
      if (n > 0) { memmove(pending, pending + n, pending_len - (size_t)n); pending_len -= (size_t)n; }
      else if (n < 0 && errno != EAGAIN && errno != EINTR) { close(stdin_fd); stdin_fd = -1; pending_len = 0; }
    }
    if (stdin_fd >= 0 && stdin_eof && pending_len == 0) {
      if (o->terminal) {
        static const char eot = 4; /* a pty has no half-close; ^D at line start is how a terminal says EOF */
        if (write(master, &eot, 1) < 0) { /* the process already left */ }
      }
      close(stdin_fd);
      stdin_fd = -1;
    }

    if (child_done && out.fd < 0 && err.fd < 0) break;
    if (host_gone && !started) break;

    struct pollfd fds[6];
    int nfds = 0, isock = -1, iout = -1, ierr = -1, iin = -1;
    int room = sizeof in - in_len >= HEADER + MAX_PAYLOAD;
    if (!host_gone && room) { isock = nfds; fds[nfds++] = (struct pollfd){ sock, POLLIN, 0 }; }
    if (out.fd >= 0) { iout = nfds; fds[nfds++] = (struct pollfd){ out.fd, POLLIN, 0 }; }
    if (err.fd >= 0) { ierr = nfds; fds[nfds++] = (struct pollfd){ err.fd, POLLIN, 0 }; }
    if (stdin_fd >= 0 && pending_len > 0) { iin = nfds; fds[nfds++] = (struct pollfd){ stdin_fd, POLLOUT, 0 }; }
    int isig = nfds;
    fds[nfds++] = (struct pollfd){ sigfd, POLLIN, 0 };
    int ilisten = -1;
    if (listener >= 0 && !child_done) { ilisten = nfds; fds[nfds++] = (struct pollfd){ listener, POLLIN, 0 }; }
    if (poll(fds, (nfds_t)nfds, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    if (isock >= 0 && fds[isock].revents) {
      ssize_t n = recv(sock, in + in_len, sizeof in - in_len, MSG_DONTWAIT);
      if (n > 0) in_len += (size_t)n;
      else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        host_gone = 1; /* nobody is left to report to: end the process */
        if (child > 0 && !child_done) kill(child, SIGKILL);
      }
    }
    if (iout >= 0 && fds[iout].revents) forward_output(&out);
    if (ierr >= 0 && fds[ierr].revents) forward_output(&err);
    if (iin >= 0 && (fds[iin].revents & (POLLERR | POLLHUP))) { close(stdin_fd); stdin_fd = -1; pending_len = 0; }
    if (ilisten >= 0 && fds[ilisten].revents) {
      int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
      if (conn >= 0) {
        pid_t agent = getpid();
        pid_t handler = fork();
        if (handler == 0) {
          /* Only the new connection: the container process's pipes must reach EOF without this session. */
          int inherited[] = { listener, sock, out.fd, err.fd, stdin_fd, master };
          for (size_t k = 0; k < sizeof inherited / sizeof *inherited; k++) if (inherited[k] >= 0) close(inherited[k]);
          exec_session(base, conn, sigfd, agent);
        }
        close(conn);
      }
    }
    if (fds[isig].revents) {
      struct signalfd_siginfo si;
      while (read(sigfd, &si, sizeof si) > 0) {}
      int st;
      pid_t pid;
      while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (pid != child) continue;
        child_done = 1;
        status = st;
        /* The container ends with its process: stop everything it left behind, so the pipes reach EOF. */
        kill(-child, SIGKILL);
        if (getpid() == 1) kill(-1, SIGKILL);
      }
    }
  }

  return (struct session_end){ started, host_gone, status };
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--take-secret") == 0) return take_secret(argv[2]);
  static struct options o;
  parse_setup(&o, argc, argv);
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  if (sigfd < 0) die("signalfd");

  sock = connect_host(&o);
  if (set_up(&o) < 0) {
    shutdown(sock, SHUT_WR);
    await_host_close(); /* so the ERROR frame is not lost at power-off */
    sync();
    if (o.poweroff) reboot(RB_POWER_OFF);
    return 125;
  }
  char *description = NULL; /* the process description: the PROCESS frames' bytes, up to MAX_PROCESS */
  size_t description_len = 0;
  if (o.process_file) description = read_words_file(o.process_file, &description_len);
  if (o.image_config) {
    char why[512];
    description = image_config_process(o.image_config, o.root, &description_len, why, sizeof why);
    if (!description) usage(why);
  }
  int listener = o.exec_listen ? listen_exec(o.exec_listen) : -1;
  static struct options base;
  base = o;
  send_frame(FRAME_READY, NULL, 0);
  struct session_end end = serve(&o, &base, listener, sigfd, description, description_len);
  if (listener >= 0) close(listener);

  if (getpid() == 1) while (waitpid(-1, NULL, 0) > 0) {}
  if (o.unmount) unmount_tree(o.unmount);
  if (end.started && !end.host_gone) report_exit(end.status);
  if (o.poweroff) {
    sync();
    reboot(RB_POWER_OFF);
  }
  return 0;
}
