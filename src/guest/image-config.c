/*
 * An OCI image configuration read into the agent's process description. The JSON reader takes the whole grammar
 * (RFC 8259) and keeps only the members of the top-level "config" object that name the process; everything else
 * is checked and skipped. The disk is the owner's, but the reader still bounds the file, the nesting and every
 * string before it allocates, and refuses what cannot become a word (a NUL, a lone surrogate).
 */
#define _GNU_SOURCE
#include "image-config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_CONFIG = 4 << 20, MAX_DEPTH = 64, MAX_DESCRIPTION = 8 << 20, MAX_GROUPS = 64 };

struct words {
  char **items;
  size_t n, cap;
};

struct reader {
  const char *start, *p, *end;
  int depth;
  char *error;
  size_t error_len;
  int failed;
};

struct image_process {
  struct words entrypoint, cmd, env;
  char *user, *workdir;
};

static int fail(char *error, size_t error_len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error, error_len, fmt, ap);
  va_end(ap);
  return -1;
}

/* The first failure is the one reported, with where it was found. */
static int bad(struct reader *r, const char *what) {
  if (!r->failed) {
    r->failed = 1;
    fail(r->error, r->error_len, "image config: %s at byte %ld", what, (long)(r->p - r->start));
  }
  return -1;
}

static void words_free(struct words *w) {
  for (size_t i = 0; i < w->n; i++) free(w->items[i]);
  free(w->items);
  memset(w, 0, sizeof *w);
}

static int words_push(struct words *w, char *item) {
  if (w->n == w->cap) {
    size_t cap = w->cap ? 2 * w->cap : 8;
    char **grown = realloc(w->items, cap * sizeof *grown);
    if (!grown) return -1;
    w->items = grown;
    w->cap = cap;
  }
  w->items[w->n++] = item;
  return 0;
}

static void skip_space(struct reader *r) {
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) r->p++;
}

static int peek(struct reader *r) {
  skip_space(r);
  return r->p < r->end ? (unsigned char)*r->p : -1;
}

static int expect(struct reader *r, char c, const char *what) {
  if (peek(r) != c) return bad(r, peek(r) < 0 ? "unexpected end" : what);
  r->p++;
  return 0;
}

static int hex4(struct reader *r, unsigned *value) {
  if (r->end - r->p < 4) return bad(r, "short \\u escape");
  *value = 0;
  for (int i = 0; i < 4; i++) {
    char c = *r->p++;
    unsigned digit = c >= '0' && c <= '9' ? (unsigned)(c - '0')
                   : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
                   : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
                   : 16;
    if (digit == 16) return bad(r, "bad \\u escape");
    *value = *value << 4 | digit;
  }
  return 0;
}

static size_t put_utf8(char *out, unsigned cp) {
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) { out[0] = (char)(0xc0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | cp >> 12); out[1] = (char)(0x80 | (cp >> 6 & 0x3f)); out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | cp >> 18); out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
  out[2] = (char)(0x80 | (cp >> 6 & 0x3f)); out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/*
 * A string; decoded into a new allocation at `*out`, or only checked when `out` is NULL. The decoded text is never
 * longer than its escaped form, which bounds the allocation by the file.
 */
static int read_string(struct reader *r, char **out) {
  if (expect(r, '"', "expected a string") < 0) return -1;
  const char *close = r->p;
  while (close < r->end && *close != '"') {
    if (*close != '\\') close++;
    else if (r->end - close >= 2) close += 2;
    else break;
  }
  if (close >= r->end || *close != '"') return bad(r, "unterminated string");
  char *text = NULL;
  size_t n = 0;
  if (out && !(text = malloc((size_t)(close - r->p) + 1))) return bad(r, "no memory");
  char utf8[4];
  while (*r->p != '"') {
    unsigned char c = (unsigned char)*r->p++;
    size_t k = 1;
    utf8[0] = (char)c;
    if (c < 0x20) { free(text); return bad(r, "control character in a string"); }
    if (c == '\\') {
      char e = *r->p++;
      switch (e) {
        case '"': case '\\': case '/': utf8[0] = e; break;
        case 'b': utf8[0] = '\b'; break;
        case 'f': utf8[0] = '\f'; break;
        case 'n': utf8[0] = '\n'; break;
        case 'r': utf8[0] = '\r'; break;
        case 't': utf8[0] = '\t'; break;
        case 'u': {
          unsigned cp, low;
          if (hex4(r, &cp) < 0) { free(text); return -1; }
          if (cp >= 0xdc00 && cp <= 0xdfff) { free(text); return bad(r, "lone low surrogate"); }
          if (cp >= 0xd800 && cp <= 0xdbff) {
            if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u') { free(text); return bad(r, "lone high surrogate"); }
            r->p += 2;
            if (hex4(r, &low) < 0) { free(text); return -1; }
            if (low < 0xdc00 || low > 0xdfff) { free(text); return bad(r, "lone high surrogate"); }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          }
          if (cp == 0) { free(text); return bad(r, "NUL in a string"); }
          k = put_utf8(utf8, cp);
          break;
        }
        default: free(text); return bad(r, "bad escape");
      }
    }
    if (text) memcpy(text + n, utf8, k);
    n += k;
  }
  r->p++;
  if (text) {
    text[n] = '\0';
    *out = text;
  }
  return 0;
}

static int read_literal(struct reader *r, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0) return bad(r, "unexpected character");
  r->p += n;
  return 0;
}

static int read_digits(struct reader *r) {
  if (r->p >= r->end || *r->p < '0' || *r->p > '9') return bad(r, "bad number");
  while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  return 0;
}

static int read_number(struct reader *r) {
  if (*r->p == '-') r->p++;
  if (r->p < r->end && *r->p == '0') r->p++;
  else if (read_digits(r) < 0) return -1;
  if (r->p < r->end && *r->p == '.') {
    r->p++;
    if (read_digits(r) < 0) return -1;
  }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
    r->p++;
    if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
    if (read_digits(r) < 0) return -1;
  }
  return 0;
}

/*
 * The next member of an object or element of an array, `close` ending it; `*first` is set for the first call.
 * Returns 1 when there is one (an object's key read into `*key`, or checked when `key` is NULL), 0 at the end.
 */
static int next_item(struct reader *r, char close, int *first, char **key, int is_object) {
  int c = peek(r);
  if (c == close) {
    r->p++;
    r->depth--;
    return 0;
  }
  if (!*first && expect(r, ',', "expected ',' or the end of the object or array") < 0) return -1;
  *first = 0;
  if (!is_object) return 1;
  if (read_string(r, key) < 0) return -1;
  if (expect(r, ':', "expected ':'") < 0) {
    if (key) free(*key);
    return -1;
  }
  return 1;
}

static int open_nested(struct reader *r, char open, const char *what) {
  if (expect(r, open, what) < 0) return -1;
  if (++r->depth > MAX_DEPTH) return bad(r, "nested too deeply");
  return 0;
}

static int skip_value(struct reader *r) {
  int c = peek(r);
  if (c == '{' || c == '[') {
    int is_object = c == '{', first = 1, more;
    if (open_nested(r, (char)c, "") < 0) return -1;
    while ((more = next_item(r, is_object ? '}' : ']', &first, NULL, is_object)) == 1)
      if (skip_value(r) < 0) return -1;
    return more;
  }
  if (c == '"') return read_string(r, NULL);
  if (c == 't') return read_literal(r, "true");
  if (c == 'f') return read_literal(r, "false");
  if (c == 'n') return read_literal(r, "null");
  if (c == '-' || (c >= '0' && c <= '9')) return read_number(r);
  return bad(r, c < 0 ? "unexpected end" : "unexpected character");
}

static int read_null(struct reader *r) {
  if (peek(r) != 'n') return 0;
  return read_literal(r, "null") < 0 ? -1 : 1;
}

/* A string or null (`*out` stays NULL); a second occurrence replaces the first, as in Go's encoding/json. */
static int read_optional_string(struct reader *r, char **out) {
  int null = read_null(r);
  if (null != 0) return null;
  char *text;
  if (read_string(r, &text) < 0) return -1;
  free(*out);
  *out = text;
  return 0;
}

/* An array of strings, or null. */
static int read_string_array(struct reader *r, struct words *out) {
  words_free(out);
  int null = read_null(r);
  if (null != 0) return null;
  if (open_nested(r, '[', "expected an array of strings") < 0) return -1;
  int first = 1, more;
  while ((more = next_item(r, ']', &first, NULL, 0)) == 1) {
    char *item;
    if (read_string(r, &item) < 0) return -1;
    if (words_push(out, item) < 0) {
      free(item);
      return bad(r, "no memory");
    }
  }
  return more;
}

static int read_process_members(struct reader *r, struct image_process *p) {
  int null = read_null(r);
  if (null != 0) return null;
  if (open_nested(r, '{', "\"config\" is not an object") < 0) return -1;
  int first = 1, more;
  char *key;
  while ((more = next_item(r, '}', &first, &key, 1)) == 1) {
    int rc = strcmp(key, "Entrypoint") == 0 ? read_string_array(r, &p->entrypoint)
           : strcmp(key, "Cmd") == 0        ? read_string_array(r, &p->cmd)
           : strcmp(key, "Env") == 0        ? read_string_array(r, &p->env)
           : strcmp(key, "User") == 0       ? read_optional_string(r, &p->user)
           : strcmp(key, "WorkingDir") == 0 ? read_optional_string(r, &p->workdir)
                                            : skip_value(r);
    free(key);
    if (rc < 0) return -1;
  }
  return more;
}

static int read_image(struct reader *r, struct image_process *p) {
  if (open_nested(r, '{', "the image config is not a JSON object") < 0) return -1;
  int first = 1, more;
  char *key;
  while ((more = next_item(r, '}', &first, &key, 1)) == 1) {
    int rc = strcmp(key, "config") == 0 ? read_process_members(r, p) : skip_value(r);
    free(key);
    if (rc < 0) return -1;
  }
  if (more < 0) return -1;
  if (peek(r) != -1) return bad(r, "text after the JSON object");
  return 0;
}

static char *read_file(const char *path, size_t *len, char *error, size_t error_len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fail(error, error_len, "image config %s: %s", path, strerror(errno));
    return NULL;
  }
  char *text = malloc(MAX_CONFIG);
  size_t n = 0;
  if (!text) fail(error, error_len, "image config: no memory");
  while (text) {
    ssize_t got = read(fd, text + n, MAX_CONFIG - n);
    if (got < 0 && errno == EINTR) continue;
    if (got == 0) break;
    if (got < 0) fail(error, error_len, "image config %s: %s", path, strerror(errno));
    else if ((n += (size_t)got) < MAX_CONFIG) continue;
    else fail(error, error_len, "image config %s: %d bytes or more", path, MAX_CONFIG);
    free(text);
    text = NULL;
  }
  close(fd);
  *len = n;
  return text;
}

/* The user as runc resolves it: `user[:group]`, each a number or a name in the image's files. */
struct identity {
  unsigned long uid, gid;
  unsigned long groups[MAX_GROUPS];
  int ngroups;
  char home[4096];
};

static int all_digits(const char *s) {
  if (*s == '\0') return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

static FILE *open_in_root(const char *root, const char *file) {
  char path[4096];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", strcmp(root, "/") == 0 ? "" : root, file) >= sizeof path) return NULL;
  return fopen(path, "re");
}

static int resolve_user(const char *spec, const char *root, struct identity *id, char *error, size_t error_len) {
  memset(id, 0, sizeof *id);
  strcpy(id->home, "/");
  char user[256] = "", group[256] = "";
  const char *colon = strchr(spec, ':');
  size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
  if (ulen >= sizeof user || (colon && strlen(colon + 1) >= sizeof group)) return fail(error, error_len, "image config: User \"%.64s\" is too long", spec);
  memcpy(user, spec, ulen);
  if (colon) strcpy(group, colon + 1);
  if (colon && group[0] == '\0') return fail(error, error_len, "image config: User \"%.64s\" names an empty group", spec);

  int numeric_user = user[0] == '\0' || all_digits(user);
  errno = 0;
  id->uid = user[0] == '\0' ? 0 : numeric_user ? strtoul(user, NULL, 10) : 0;
  if (numeric_user && (errno || id->uid > UINT32_MAX - 1)) return fail(error, error_len, "image config: User \"%.64s\": uid out of range", spec);
  char name[256] = "";
  int found = 0;
  FILE *f = open_in_root(root, "etc/passwd");
  for (struct passwd *pw; f && (pw = fgetpwent(f));) {
    if (numeric_user ? pw->pw_uid != id->uid : strcmp(pw->pw_name, user) != 0) continue;
    id->uid = pw->pw_uid;
    id->gid = pw->pw_gid;
    snprintf(name, sizeof name, "%s", pw->pw_name);
    snprintf(id->home, sizeof id->home, "%s", pw->pw_dir[0] ? pw->pw_dir : "/");
    found = 1;
    break;
  }
  if (f) fclose(f);
  if (!found && !numeric_user) return fail(error, error_len, "image config: User \"%.64s\": no such user in the image's /etc/passwd", spec);

  if (group[0] != '\0') {
    /* An explicit group replaces the user's groups altogether, as with runc. */
    int numeric_group = all_digits(group);
    errno = 0;
    if (numeric_group) {
      id->gid = strtoul(group, NULL, 10);
      if (errno || id->gid > UINT32_MAX - 1) return fail(error, error_len, "image config: User \"%.64s\": gid out of range", spec);
      return 0;
    }
    f = open_in_root(root, "etc/group");
    found = 0;
    for (struct group *gr; f && (gr = fgetgrent(f));) {
      if (strcmp(gr->gr_name, group) != 0) continue;
      id->gid = gr->gr_gid;
      found = 1;
      break;
    }
    if (f) fclose(f);
    if (!found) return fail(error, error_len, "image config: User \"%.64s\": no such group in the image's /etc/group", spec);
    return 0;
  }
  if (name[0] == '\0') return 0;
  f = open_in_root(root, "etc/group");
  for (struct group *gr; f && (gr = fgetgrent(f));) {
    for (char **m = gr->gr_mem; *m; m++) {
      if (strcmp(*m, name) != 0 || gr->gr_gid == id->gid) continue;
      if (id->ngroups == MAX_GROUPS) break;
      id->groups[id->ngroups++] = gr->gr_gid;
    }
  }
  if (f) fclose(f);
  return 0;
}

struct description {
  char *text;
  size_t len;
  int too_big;
};

static void add_word(struct description *d, const char *word) {
  size_t n = strlen(word) + 1;
  if (d->too_big || n > MAX_DESCRIPTION - d->len) {
    d->too_big = 1;
    return;
  }
  memcpy(d->text + d->len, word, n);
  d->len += n;
}

static void add_number(struct description *d, const char *option, unsigned long value) {
  char text[32];
  snprintf(text, sizeof text, "%lu", value);
  add_word(d, option);
  add_word(d, text);
}

static int has_variable(const struct words *env, const char *prefix) {
  for (size_t i = 0; i < env->n; i++)
    if (strncmp(env->items[i], prefix, strlen(prefix)) == 0) return 1;
  return 0;
}

static char *describe(const struct image_process *p, const char *root, size_t *len, char *error, size_t error_len) {
  if (p->entrypoint.n + p->cmd.n == 0) {
    fail(error, error_len, "image config: names no command (neither Entrypoint nor Cmd)");
    return NULL;
  }
  const char *cwd = p->workdir && p->workdir[0] ? p->workdir : "/";
  if (cwd[0] != '/') {
    fail(error, error_len, "image config: WorkingDir \"%.64s\" is not an absolute path", cwd);
    return NULL;
  }
  for (size_t i = 0; i < p->env.n; i++) {
    if (!strchr(p->env.items[i], '=')) {
      fail(error, error_len, "image config: Env entry \"%.64s\" is not NAME=VALUE", p->env.items[i]);
      return NULL;
    }
  }
  struct identity id;
  if (resolve_user(p->user ? p->user : "", root, &id, error, error_len) < 0) return NULL;

  struct description d = { malloc(MAX_DESCRIPTION), 0, 0 };
  if (!d.text) {
    fail(error, error_len, "image config: no memory");
    return NULL;
  }
  add_word(&d, "--cwd");
  add_word(&d, cwd);
  add_number(&d, "--uid", id.uid);
  add_number(&d, "--gid", id.gid);
  for (int i = 0; i < id.ngroups; i++) add_number(&d, "--group", id.groups[i]);
  /* What runc and podman add when the image leaves them out. */
  if (!has_variable(&p->env, "PATH=")) {
    add_word(&d, "--env");
    add_word(&d, "PATH=" DEFAULT_PATH);
  }
  if (!has_variable(&p->env, "HOME=")) {
    char home[4096 + 8];
    snprintf(home, sizeof home, "HOME=%s", id.home);
    add_word(&d, "--env");
    add_word(&d, home);
  }
  for (size_t i = 0; i < p->env.n; i++) {
    add_word(&d, "--env");
    add_word(&d, p->env.items[i]);
  }
  add_word(&d, "--");
  for (size_t i = 0; i < p->entrypoint.n; i++) add_word(&d, p->entrypoint.items[i]);
  for (size_t i = 0; i < p->cmd.n; i++) add_word(&d, p->cmd.items[i]);
  if (d.too_big) {
    free(d.text);
    fail(error, error_len, "image config: the process is larger than %d bytes", MAX_DESCRIPTION);
    return NULL;
  }
  *len = d.len;
  return d.text;
}

char *image_config_process(const char *path, const char *root, size_t *len, char *error, size_t error_len) {
  error[0] = '\0';
  size_t size;
  char *text = read_file(path, &size, error, error_len);
  if (!text) return NULL;
  struct image_process p = { 0 };
  struct reader r = { text, text, text + size, 0, error, error_len, 0 };
  char *description = read_image(&r, &p) < 0 ? NULL : describe(&p, root, len, error, error_len);
  words_free(&p.entrypoint);
  words_free(&p.cmd);
  words_free(&p.env);
  free(p.user);
  free(p.workdir);
  free(text);
  return description;
}
