/*
 * replay.c - run a fuzz target over its corpus without libFuzzer, so the
 * corpora are regression tests in the normal suite (make test-fuzz-replay),
 * built with the variant's own flags and so also under ASan+UBSan.
 *
 *     replay-<target> [--fork] DIR|FILE...
 *
 * Every regular file of each directory (sorted, dot-files skipped) and every
 * file named is one input, run with a time limit. By default all run in this
 * process, which keeps the replay at milliseconds even under ASan, and the
 * first failure ends it, naming its file (an abort, a signal, a sanitizer
 * report or the time limit). --fork runs each input in its own process
 * instead, so every failing input of a directory is listed (for triage; a
 * fork per input costs tens of ms under LeakSanitizer). Exits 0 when every
 * input passed, non-zero when one failed or none was found.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

/* Seconds one input may take; libFuzzer's -timeout plays this part in make fuzz. */
#define REPLAY_TIMEOUT_S 10

struct replay {
    bool fork;
    int inputs;
    int failures;
};

/* The input being run, for the failure handlers (a driver's global, not the server's). */
static const char *volatile current_input;

/* Name the input that is failing; async-signal-safe. */
static void say_failing(const char *why)
{
    const char *path = current_input;
    const char *parts[] = {
        "replay: FAIL", path ? " '" : "", path ? path : "", path ? "'" : "", ": ", why, "\n"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        if (write(STDERR_FILENO, parts[i], strlen(parts[i])) < 0)
            return;
    }
}

static void on_fatal_signal(int sig)
{
    say_failing(sig == SIGALRM   ? "over the time limit"
                : sig == SIGABRT ? "aborted (see above)"
                                 : "fatal signal");
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Present only when a sanitizer runtime is linked in (BUILD=asan). */
extern void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));
extern void __lsan_do_leak_check(void) __attribute__((weak));

static void on_sanitizer_death(void)
{
    if (current_input)
        say_failing("sanitizer error (see above)");
    else /* the one leak check, after the last input */
        say_failing("memory leaked by one of the inputs (see above; --fork names it)");
}

static void handlers_install(void)
{
    int sigs[] = {SIGABRT, SIGALRM, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
    /* Under a sanitizer the runtime owns the fault signals and reports them
     * better; it calls back before it exits. */
    size_t n = sizeof(sigs) / sizeof(sigs[0]);
    if (__sanitizer_set_death_callback) {
        __sanitizer_set_death_callback(on_sanitizer_death);
        n = 2;
    }
    for (size_t i = 0; i < n; i++)
        signal(sigs[i], on_fatal_signal);
}

/* Read the file at path into a buffer of exactly its size (so ASan sees overreads). */
static int read_input(const char *path, uint8_t **out, size_t *out_size)
{
    int rc = -1;
    uint8_t *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0)
        goto out;
    size_t size = (size_t)st.st_size, done = 0;
    buf = malloc(size > 0 ? size : 1);
    if (buf == NULL)
        goto out;
    while (done < size) {
        ssize_t n = read(fd, buf + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto out;
        done += (size_t)n;
    }
    *out = buf;
    *out_size = size;
    buf = NULL;
    rc = 0;
out:
    if (rc < 0)
        fprintf(stderr, "replay: cannot read '%s': %s\n", path, strerror(errno));
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* Run the target on data in a child; true when it returned normally. */
static bool run_forked(const char *path, const uint8_t *data, size_t size)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "replay: cannot fork for '%s': %s\n", path, strerror(errno));
        return false;
    }
    if (pid == 0) {
        alarm(REPLAY_TIMEOUT_S);
        LLVMFuzzerTestOneInput(data, size);
        exit(0); /* not _exit: LeakSanitizer checks at exit */
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            fprintf(stderr, "replay: waitpid: %s\n", strerror(errno));
            return false;
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    if (WIFSIGNALED(status))
        fprintf(stderr, "replay: FAIL '%s': %s%s\n", path, strsignal(WTERMSIG(status)),
                WTERMSIG(status) == SIGALRM ? " (over the time limit)" : "");
    else
        fprintf(stderr, "replay: FAIL '%s': exit status %d\n", path, WEXITSTATUS(status));
    return false;
}

static void replay_file(struct replay *r, const char *path)
{
    uint8_t *data = NULL;
    size_t size = 0;
    r->inputs++;
    if (read_input(path, &data, &size) < 0) {
        r->failures++;
        return;
    }
    if (r->fork) {
        if (!run_forked(path, data, size))
            r->failures++;
    } else {
        current_input = path;
        alarm(REPLAY_TIMEOUT_S);
        LLVMFuzzerTestOneInput(data, size);
        alarm(0);
        current_input = NULL;
    }
    free(data);
}

static int skip_dot(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

static void replay_path(struct replay *r, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        fprintf(stderr, "replay: cannot stat '%s': %s\n", path, strerror(errno));
        r->failures++;
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        replay_file(r, path);
        return;
    }
    struct dirent **names;
    int n = scandir(path, &names, skip_dot, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: cannot list '%s': %s\n", path, strerror(errno));
        r->failures++;
        return;
    }
    for (int i = 0; i < n; i++) {
        char *file;
        if (asprintf(&file, "%s/%s", path, names[i]->d_name) < 0) {
            r->failures++;
        } else {
            if (stat(file, &st) == 0 && S_ISREG(st.st_mode))
                replay_file(r, file);
            free(file);
        }
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    struct replay r = {.fork = false};
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "--fork") == 0) {
        r.fork = true;
        first = 2;
    }
    if (first >= argc) {
        fprintf(stderr, "usage: %s [--fork] DIR|FILE...\n", argv[0]);
        return 2;
    }
    if (!r.fork)
        handlers_install();
    for (int i = first; i < argc; i++)
        replay_path(&r, argv[i]);
    /* Check for leaks now rather than at exit, so the summary comes after it. */
    if (!r.fork && __lsan_do_leak_check)
        __lsan_do_leak_check();

    printf("fuzz replay: %d inputs, %d failures (%s", r.inputs, r.failures, argv[first]);
    for (int i = first + 1; i < argc; i++)
        printf(" %s", argv[i]);
    printf(")\n");
    if (r.inputs == 0)
        fprintf(stderr, "replay: no inputs found; an empty corpus tests nothing\n");
    return r.failures == 0 && r.inputs > 0 ? 0 : 1;
}
