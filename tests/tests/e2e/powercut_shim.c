/* LD_PRELOAD shim for the power-loss test: records how to undo every write a process
 * makes to files under PUBSUB_POWERCUT_DIR, and which of them an fsync made durable,
 * in the undo log PUBSUB_POWERCUT_LOG. After the process is killed, the test's cutter
 * (tests/src/powercut.rs) undoes what was written after each file's last fsync, as a
 * power cut loses what the page cache held.
 *
 * Record: a 64-byte header (magic, kind, seq, dev, ino, offset, len, old_size,
 * saved_len; native endian) and saved_len bytes: what the write or truncate replaced.
 * A write is logged after it returns, with the next sequence number; an fsync logs
 * SYNC with the sequence number reached before it began, so every write numbered up
 * to it finished before the fsync started and is durable. Unlinks and renames over a
 * file log DEAD, so a reused inode number is not taken for the deleted file.
 * Directory entries: creating a file logs CREATE (offset and len hold its directory's
 * inode and device), and an fsync of a directory logs SYNC for it, so a file whose
 * directory was not synced after it was created can be removed by the cut (under
 * whatever name it has then: one created and renamed goes too). Renames are not
 * modelled beyond DEAD: an older file renamed keeps its new name. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

enum { KIND_WRITE = 1, KIND_TRUNCATE = 2, KIND_SYNC = 3, KIND_DEAD = 4, KIND_CREATE = 5 };
#define MAGIC 0x54554350u /* "PCUT" */

struct header {
    uint32_t magic, kind;
    uint64_t seq, dev, ino, offset, len, old_size, saved_len;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t seq;
static int log_fd = -1;

static void *real(const char *name) { return dlsym(RTLD_NEXT, name); }

static int path_tracked(const char *path) {
    const char *dir = getenv("PUBSUB_POWERCUT_DIR");
    return dir && path && strncmp(path, dir, strlen(dir)) == 0;
}

/* Whether fd is a regular file (or, with dirs, a directory) under the tracked dir. */
static int fd_tracked_as(int fd, struct stat *st, int dirs) {
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return path_tracked(path) && fstat(fd, st) == 0 &&
           (S_ISREG(st->st_mode) || (dirs && S_ISDIR(st->st_mode)));
}

static int fd_tracked(int fd, struct stat *st) { return fd_tracked_as(fd, st, 0); }

/* `path` relative to `dirfd` as an absolute path in `full` (8200 bytes); NULL if unknown. */
static const char *resolve(int dirfd, const char *path, char *full) {
    if (path[0] == '/') return path;
    char base[4096];
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof base)) return NULL;
    } else {
        char link[64];
        snprintf(link, sizeof link, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(link, base, sizeof base - 1);
        if (n <= 0) return NULL;
        base[n] = 0;
    }
    snprintf(full, 8200, "%s/%s", base, path);
    return full;
}

/* Appends one record (the caller holds the lock). */
static void log_record(struct header *h, const void *saved) {
    if (log_fd < 0) {
        const char *name = getenv("PUBSUB_POWERCUT_LOG");
        if (!name) return;
        int (*o)(const char *, int, ...) = real("open");
        log_fd = o(name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (log_fd < 0) return;
    }
    h->magic = MAGIC;
    size_t total = sizeof *h + h->saved_len;
    char *buf = malloc(total);
    if (!buf) abort();
    memcpy(buf, h, sizeof *h);
    if (h->saved_len) memcpy(buf + sizeof *h, saved, h->saved_len);
    ssize_t (*w)(int, const void *, size_t) = real("write");
    if (w(log_fd, buf, total) != (ssize_t)total) abort();
    free(buf);
}

/* Saves [offset, offset+len) clipped to the file's size. */
static char *save(int fd, uint64_t size, uint64_t offset, uint64_t len, uint64_t *saved) {
    *saved = offset >= size ? 0 : (size - offset < len ? size - offset : len);
    if (!*saved) return NULL;
    char *old = malloc(*saved);
    if (!old) abort();
    ssize_t (*pr)(int, void *, size_t, off_t) = real("pread64");
    if (pr(fd, old, *saved, offset) != (ssize_t)*saved) abort();
    return old;
}

static ssize_t tracked_write(int fd, const void *buf, size_t count, off_t offset, int positional) {
    ssize_t (*pw)(int, const void *, size_t, off_t) = real("pwrite64");
    ssize_t (*w)(int, const void *, size_t) = real("write");
    struct stat st;
    if (!fd_tracked(fd, &st)) return positional ? pw(fd, buf, count, offset) : w(fd, buf, count);
    pthread_mutex_lock(&lock);
    uint64_t at = positional ? (uint64_t)offset
                  : (fcntl(fd, F_GETFL) & O_APPEND) ? (uint64_t)st.st_size
                  : (uint64_t)lseek(fd, 0, SEEK_CUR);
    uint64_t saved_len;
    char *old = save(fd, st.st_size, at, count, &saved_len);
    ssize_t n = positional ? pw(fd, buf, count, offset) : w(fd, buf, count);
    if (n > 0) {
        struct header h = {.kind = KIND_WRITE, .seq = ++seq, .dev = st.st_dev, .ino = st.st_ino,
                           .offset = at, .len = n, .old_size = st.st_size,
                           .saved_len = saved_len < (uint64_t)n ? saved_len : (uint64_t)n};
        log_record(&h, old);
    }
    pthread_mutex_unlock(&lock);
    free(old);
    return n;
}

ssize_t write(int fd, const void *buf, size_t count) { return tracked_write(fd, buf, count, 0, 0); }
ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    return tracked_write(fd, buf, count, offset, 1);
}
ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    return tracked_write(fd, buf, count, offset, 1);
}

static int tracked_truncate(int fd, off_t length) {
    int (*t)(int, off_t) = real("ftruncate64");
    struct stat st;
    if (!fd_tracked(fd, &st)) return t(fd, length);
    pthread_mutex_lock(&lock);
    /* A preallocated segment cut to its end: save up to where the data ends (past
     * it, the file is a hole, which growing it back restores). */
    uint64_t size = st.st_size;
    off_t hole = lseek(fd, length, SEEK_HOLE);
    if (hole >= length && (uint64_t)hole < size && lseek(fd, hole, SEEK_DATA) < 0 && errno == ENXIO)
        size = hole;
    uint64_t saved_len;
    char *old = save(fd, size, length, size, &saved_len);
    int r = t(fd, length);
    if (r == 0) {
        struct header h = {.kind = KIND_TRUNCATE, .seq = ++seq, .dev = st.st_dev, .ino = st.st_ino,
                           .offset = length, .old_size = st.st_size, .saved_len = saved_len};
        log_record(&h, old);
    }
    pthread_mutex_unlock(&lock);
    free(old);
    return r;
}

int ftruncate(int fd, off_t length) { return tracked_truncate(fd, length); }
int ftruncate64(int fd, off_t length) { return tracked_truncate(fd, length); }

static int tracked_sync(int fd, const char *name) {
    int (*s)(int) = real(name);
    struct stat st;
    if (!fd_tracked_as(fd, &st, 1)) return s(fd);
    pthread_mutex_lock(&lock);
    uint64_t before = seq;
    pthread_mutex_unlock(&lock);
    int r = s(fd);
    if (r == 0) {
        pthread_mutex_lock(&lock);
        struct header h = {.kind = KIND_SYNC, .seq = before, .dev = st.st_dev, .ino = st.st_ino};
        log_record(&h, NULL);
        pthread_mutex_unlock(&lock);
    }
    return r;
}

int fsync(int fd) { return tracked_sync(fd, "fsync"); }
int fdatasync(int fd) { return tracked_sync(fd, "fdatasync"); }

/* Logs the end of the file at `path` (relative to `dirfd`) if this is its last name. */
static void mark_dead(int dirfd, const char *path) {
    char full[8200];
    path = resolve(dirfd, path, full);
    if (!path) return;
    struct stat st;
    if (!path_tracked(path) || lstat(path, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1)
        return;
    pthread_mutex_lock(&lock);
    struct header h = {.kind = KIND_DEAD, .seq = ++seq, .dev = st.st_dev, .ino = st.st_ino};
    log_record(&h, NULL);
    pthread_mutex_unlock(&lock);
}

int unlink(const char *path) {
    int (*u)(const char *) = real("unlink");
    mark_dead(AT_FDCWD, path);
    return u(path);
}

int unlinkat(int dirfd, const char *path, int flags) {
    int (*u)(int, const char *, int) = real("unlinkat");
    if (!(flags & AT_REMOVEDIR)) mark_dead(dirfd, path);
    return u(dirfd, path, flags);
}

int rename(const char *from, const char *to) {
    int (*r)(const char *, const char *) = real("rename");
    mark_dead(AT_FDCWD, to);
    return r(from, to);
}

/* Opens as `name` (open, open64, openat, openat64) does; logs CREATE if it made a new
 * regular file under the tracked dir. */
static int tracked_open(int dirfd, const char *path, int flags, mode_t mode, const char *name) {
    char full[8200];
    const char *where = (flags & O_CREAT) ? resolve(dirfd, path, full) : NULL;
    struct stat before;
    int creating = where && path_tracked(where) && lstat(where, &before) != 0;
    /* Held across the open, so no directory fsync logged meanwhile gets a sequence
     * number below this creation's while covering it. */
    if (creating) pthread_mutex_lock(&lock);
    int fd;
    if (dirfd == AT_FDCWD && strncmp(name, "openat", 6) != 0) {
        int (*o)(const char *, int, ...) = real(name);
        fd = o(path, flags, mode);
    } else {
        int (*o)(int, const char *, int, ...) = real(name);
        fd = o(dirfd, path, flags, mode);
    }
    if (!creating) return fd;
    if (fd < 0) {
        pthread_mutex_unlock(&lock);
        return fd;
    }
    char dir[8200];
    snprintf(dir, sizeof dir, "%s", where);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    struct stat st, parent;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && stat(dir, &parent) == 0) {
        struct header h = {.kind = KIND_CREATE, .seq = ++seq, .dev = st.st_dev, .ino = st.st_ino,
                           .offset = parent.st_ino, .len = parent.st_dev};
        log_record(&h, NULL);
    }
    pthread_mutex_unlock(&lock);
    return fd;
}

static mode_t mode_arg(int flags, va_list ap) {
    /* O_TMPFILE includes O_DIRECTORY: only all of its bits mean a mode was passed. */
    int has_mode = (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
    return has_mode ? (mode_t)va_arg(ap, int) : 0;
}

/* The four entry points, each reading its optional mode argument. */
#define WRAP_OPEN(name)                                                   \
    int name(const char *path, int flags, ...) {                          \
        va_list ap;                                                       \
        va_start(ap, flags);                                              \
        mode_t mode = mode_arg(flags, ap);                                \
        va_end(ap);                                                       \
        return tracked_open(AT_FDCWD, path, flags, mode, #name);          \
    }
#define WRAP_OPENAT(name)                                                 \
    int name(int dirfd, const char *path, int flags, ...) {               \
        va_list ap;                                                       \
        va_start(ap, flags);                                              \
        mode_t mode = mode_arg(flags, ap);                                \
        va_end(ap);                                                       \
        return tracked_open(dirfd, path, flags, mode, #name);             \
    }
WRAP_OPEN(open)
WRAP_OPEN(open64)
WRAP_OPENAT(openat)
WRAP_OPENAT(openat64)
