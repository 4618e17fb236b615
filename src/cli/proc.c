/*
 * proc.c - a job's child process for `drover worker` (see proc.h).
 *
 * posix_spawn() rather than fork(): the worker holds libcurl state and a
 * signalfd, and a spawn sets the child's process group, signal mask and
 * dispositions and its three descriptors without running any of our code in
 * the child. The payload goes in through a memfd, not a pipe, so a large
 * payload never blocks the worker on a child that does not read its stdin.
 */
#include "cli/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROC_READ_CHUNK      16384
#define PROC_READS_PER_CALL  4  /* chunks per proc_read_*() call: fairness between children */
#define PROC_CLOSE_MAX_READS 64 /* proc_close_pipes(): at most this many chunks per pipe */

void proc_init(struct proc *p)
{
    memset(p, 0, sizeof(*p));
    p->out_fd = -1;
    p->err_fd = -1;
}

static void proc_close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static int proc_write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * The child's attributes: a new process group whose id is its pid, an empty
 * signal mask, default dispositions. The worker (and `drover callback`)
 * block SIGCHLD, SIGTERM and SIGINT for their signalfd and ignore SIGPIPE;
 * ignored dispositions and the mask survive exec, so reset both. Handlers
 * need no reset: exec does it. Returns 0 or an errno value.
 */
static int proc_spawn_attr(posix_spawnattr_t *attr)
{
    sigset_t mask, defaults;
    int rc;

    sigemptyset(&mask);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGINT);
    sigaddset(&defaults, SIGCHLD);
    sigaddset(&defaults, SIGHUP);
    sigaddset(&defaults, SIGQUIT);
    if ((rc = posix_spawnattr_setflags(attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF)) != 0 ||
        (rc = posix_spawnattr_setpgroup(attr, 0)) != 0 ||
        (rc = posix_spawnattr_setsigmask(attr, &mask)) != 0 ||
        (rc = posix_spawnattr_setsigdefault(attr, &defaults)) != 0)
        return rc;
    return 0;
}

int proc_spawn(struct proc *p, char *const argv[], char *const envp[], const char *input,
               size_t input_len, struct errmsg *err)
{
    int rc = 0;
    int in_fd = -1, out[2] = {-1, -1}, errp[2] = {-1, -1};
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    bool have_actions = false, have_attr = false;
    pid_t pid;

    proc_init(p);
    p->line = malloc(PROC_LINE_MAX + 1);
    if (!p->line)
        return errmsg_set(err, -DRV_ENOMEM, "out of memory");

    in_fd = memfd_create("drover-stdin", MFD_CLOEXEC);
    if (in_fd < 0 || proc_write_all(in_fd, input, input_len) < 0 || lseek(in_fd, 0, SEEK_SET) < 0) {
        rc = errmsg_set(err, -DRV_EIO, "cannot buffer the payload: %s", strerror(errno));
        goto out;
    }
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
        rc = errmsg_set(err, -DRV_EIO, "cannot make a pipe: %s", strerror(errno));
        goto out;
    }

    if ((errno = posix_spawn_file_actions_init(&actions)) != 0)
        goto nomem;
    have_actions = true;
    if ((errno = posix_spawnattr_init(&attr)) != 0)
        goto nomem;
    have_attr = true;
    /* dup2() clears close-on-exec on the copies; every other descriptor of
     * ours is close-on-exec, and closefrom covers any a library left open. */
    if ((errno = posix_spawn_file_actions_adddup2(&actions, in_fd, 0)) != 0 ||
        (errno = posix_spawn_file_actions_adddup2(&actions, out[1], 1)) != 0 ||
        (errno = posix_spawn_file_actions_adddup2(&actions, errp[1], 2)) != 0 ||
        (errno = posix_spawn_file_actions_addclosefrom_np(&actions, 3)) != 0)
        goto nomem;

    if ((errno = proc_spawn_attr(&attr)) != 0)
        goto nomem;

    int spawn_rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv, envp);
    if (spawn_rc != 0) {
        rc = errmsg_set(err, -DRV_EIO, "cannot run '%s': %s", argv[0], strerror(spawn_rc));
        goto out;
    }

    p->pid = pid;
    p->out_fd = out[0];
    p->err_fd = errp[0];
    out[0] = errp[0] = -1;
    /* Non-blocking: the loop reads what is there and goes back to poll(). */
    fcntl(p->out_fd, F_SETFL, fcntl(p->out_fd, F_GETFL) | O_NONBLOCK);
    fcntl(p->err_fd, F_SETFL, fcntl(p->err_fd, F_GETFL) | O_NONBLOCK);
    goto out;

nomem:
    rc = errmsg_set(err, -DRV_ENOMEM, "cannot prepare the command: %s", strerror(errno));
out:
    if (have_actions)
        posix_spawn_file_actions_destroy(&actions);
    if (have_attr)
        posix_spawnattr_destroy(&attr);
    proc_close_fd(&in_fd);
    proc_close_fd(&out[0]);
    proc_close_fd(&out[1]);
    proc_close_fd(&errp[0]);
    proc_close_fd(&errp[1]);
    if (rc < 0)
        proc_release(p);
    return rc;
}

int proc_spawn_inherit(struct proc *p, char *const argv[], char *const envp[], struct errmsg *err)
{
    posix_spawnattr_t attr;
    pid_t pid;
    int rc;

    proc_init(p);
    if ((rc = posix_spawnattr_init(&attr)) != 0)
        return errmsg_set(err, -DRV_ENOMEM, "cannot prepare the command: %s", strerror(rc));
    if ((rc = proc_spawn_attr(&attr)) != 0) {
        posix_spawnattr_destroy(&attr);
        return errmsg_set(err, -DRV_ENOMEM, "cannot prepare the command: %s", strerror(rc));
    }
    rc = posix_spawnp(&pid, argv[0], NULL, &attr, argv, envp);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        errmsg_set(err, -DRV_EIO, "cannot run '%s': %s", argv[0], strerror(rc));
        errno = rc;
        return -DRV_EIO;
    }
    p->pid = pid;
    return 0;
}

/* Hand n bytes of stdout to the line collector, calling on_line per line. */
static void proc_feed(struct proc *p, const char *data, size_t n, proc_line_fn on_line, void *ctx)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl ? (size_t)(nl - data) : n;

        if (!p->line_cut) {
            size_t room = PROC_LINE_MAX - p->line_len;
            size_t copy = take < room ? take : room;
            memcpy(p->line + p->line_len, data, copy);
            p->line_len += copy;
            if (take > room) {
                /* Past the cap: pass the beginning now, drop the rest of the line. */
                p->line[p->line_len] = '\0';
                on_line(ctx, p->line, p->line_len, true);
                p->line_len = 0;
                p->line_cut = true;
            }
        }
        if (!nl)
            return;
        if (!p->line_cut) {
            p->line[p->line_len] = '\0';
            on_line(ctx, p->line, p->line_len, false);
        }
        p->line_len = 0;
        p->line_cut = false;
        data = nl + 1;
        n -= take + 1;
    }
}

/* End of stdout: the last line, if it had no newline, then close. */
static void proc_end_stdout(struct proc *p, proc_line_fn on_line, void *ctx)
{
    if (p->line_len > 0 && !p->line_cut) {
        p->line[p->line_len] = '\0';
        on_line(ctx, p->line, p->line_len, false);
    }
    p->line_len = 0;
    p->line_cut = false;
    proc_close_fd(&p->out_fd);
}

/*
 * Read up to max_reads chunks from stdout. Returns true while the pipe is
 * still open (it would block), false once closed.
 */
static bool proc_pump_stdout(struct proc *p, int max_reads, proc_line_fn on_line, void *ctx)
{
    char chunk[PROC_READ_CHUNK];

    for (int i = 0; i < max_reads && p->out_fd >= 0; i++) {
        ssize_t n = read(p->out_fd, chunk, sizeof(chunk));
        if (n > 0) {
            proc_feed(p, chunk, (size_t)n, on_line, ctx);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        proc_end_stdout(p, on_line, ctx); /* end of file, or an error: nothing more comes */
    }
    return p->out_fd >= 0;
}

void proc_read_stdout(struct proc *p, proc_line_fn on_line, void *ctx)
{
    proc_pump_stdout(p, PROC_READS_PER_CALL, on_line, ctx);
}

static void proc_ring_put(struct proc *p, const char *data, size_t n)
{
    if (n > PROC_STDERR_TAIL) {
        p->err_total += n - PROC_STDERR_TAIL;
        data += n - PROC_STDERR_TAIL;
        n = PROC_STDERR_TAIL;
    }
    size_t at = p->err_total % PROC_STDERR_TAIL;
    size_t first = PROC_STDERR_TAIL - at < n ? PROC_STDERR_TAIL - at : n;
    memcpy(p->err_ring + at, data, first);
    memcpy(p->err_ring, data + first, n - first);
    p->err_total += n;
}

static void proc_pump_stderr(struct proc *p, int max_reads)
{
    char chunk[PROC_READ_CHUNK];

    for (int i = 0; i < max_reads && p->err_fd >= 0; i++) {
        ssize_t n = read(p->err_fd, chunk, sizeof(chunk));
        if (n > 0) {
            proc_ring_put(p, chunk, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        proc_close_fd(&p->err_fd);
    }
}

void proc_read_stderr(struct proc *p)
{
    proc_pump_stderr(p, PROC_READS_PER_CALL);
}

void proc_close_pipes(struct proc *p, proc_line_fn on_line, void *ctx)
{
    proc_pump_stdout(p, PROC_CLOSE_MAX_READS, on_line, ctx);
    if (p->out_fd >= 0)
        proc_end_stdout(p, on_line, ctx);
    proc_pump_stderr(p, PROC_CLOSE_MAX_READS);
    proc_close_fd(&p->err_fd);
}

void proc_set_exited(struct proc *p, int status)
{
    p->exited = true;
    p->status = status;
}

bool proc_done(const struct proc *p)
{
    return p->pid == 0 || (p->exited && p->out_fd < 0 && p->err_fd < 0);
}

void proc_signal(const struct proc *p, int sig)
{
    if (p->pid > 0)
        kill(-p->pid, sig);
}

size_t proc_stderr_tail(const struct proc *p, char *out)
{
    size_t len;

    if (p->err_total <= PROC_STDERR_TAIL) {
        len = p->err_total;
        memcpy(out, p->err_ring, len);
    } else {
        size_t at = p->err_total % PROC_STDERR_TAIL;
        memcpy(out, p->err_ring + at, PROC_STDERR_TAIL - at);
        memcpy(out + PROC_STDERR_TAIL - at, p->err_ring, at);
        len = PROC_STDERR_TAIL;
        /* The oldest kept line is likely a fragment: start at the next one. */
        const char *nl = memchr(out, '\n', len);
        if (nl && (size_t)(nl - out) + 1 < len) {
            size_t skip = (size_t)(nl - out) + 1;
            memmove(out, out + skip, len - skip);
            len -= skip;
        }
    }
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r' || out[len - 1] == ' ' ||
                       out[len - 1] == '\t'))
        len--;
    out[len] = '\0';
    return len;
}

void proc_describe_status(int status, char *out, size_t n)
{
    if (WIFEXITED(status)) {
        snprintf(out, n, "exit status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        const char *name = sigabbrev_np(WTERMSIG(status));
        snprintf(out, n, "killed by signal %d (%s)", WTERMSIG(status), name ? name : "?");
    } else {
        snprintf(out, n, "wait status %#x", (unsigned)status);
    }
}

void proc_release(struct proc *p)
{
    proc_close_fd(&p->out_fd);
    proc_close_fd(&p->err_fd);
    free(p->line);
    proc_init(p);
}
