/* LD_PRELOAD shim for the fsync-failure test: while the file named by
 * PUBSUB_FSYNC_FAIL_FLAG exists, fsync and fdatasync of a file whose path contains
 * PUBSUB_FSYNC_FAIL_MATCH fail with EIO, as a dying disk makes them. Everything else
 * (and every call while the flag is absent) goes to the real functions. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int should_fail(int fd) {
    const char *flag = getenv("PUBSUB_FSYNC_FAIL_FLAG");
    const char *match = getenv("PUBSUB_FSYNC_FAIL_MATCH");
    if (!flag || !match || access(flag, F_OK) != 0) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return 0;
    path[n] = 0;
    return strstr(path, match) != NULL;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    if (should_fail(fd)) { errno = EIO; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    if (should_fail(fd)) { errno = EIO; return -1; }
    return real(fd);
}
