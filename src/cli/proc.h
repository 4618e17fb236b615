/*
 * proc.h - the child process `drover worker` runs for one job: started in its
 * own process group (so one signal reaches everything it started), its stdin
 * fed from a buffer and then at end of file, its stdout read line by line
 * under a hard cap, and the tail of its stderr kept in a small ring.
 *
 * Ownership: struct proc is the caller's (embedded in its job). proc_init()
 * makes it empty; proc_release() closes its descriptors and frees its line
 * buffer, but neither signals nor waits for the process: the caller reaps its
 * children with waitpid() and records the status with proc_set_exited().
 */
#ifndef DROVER_CLI_PROC_H
#define DROVER_CLI_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "error.h"

#define PROC_LINE_MAX    (64 * 1024) /* a longer stdout line is cut to this many bytes */
#define PROC_STDERR_TAIL 4096        /* the last bytes of stderr that are kept */

struct proc {
    pid_t pid;        /* the child and its process group id; 0 when none was started */
    bool exited;      /* waitpid() collected it and status is set */
    int status;       /* its wait status, once exited */
    int out_fd;       /* read end of its stdout, non-blocking; -1 once closed */
    int err_fd;       /* read end of its stderr, likewise */
    char *line;       /* owned; PROC_LINE_MAX + 1 bytes: the stdout line being collected */
    size_t line_len;  /* bytes in line */
    bool line_cut;    /* the current line passed PROC_LINE_MAX: skipping to its newline */
    size_t err_total; /* stderr bytes seen in all; the ring holds the last of them */
    char err_ring[PROC_STDERR_TAIL];
};

/*
 * Called for each stdout line: line is NUL-terminated, without its newline,
 * and may be changed by the callee (it is the proc's buffer, valid until the
 * callback returns). cut: the line was longer than PROC_LINE_MAX and this is
 * its beginning; the rest is dropped.
 */
typedef void (*proc_line_fn)(void *ctx, char *line, size_t len, bool cut);

/* Make p empty: no process, no descriptors. */
void proc_init(struct proc *p);

/*
 * Start argv[0] (searched in the caller's PATH, like execvp) with argv and
 * envp, in a new process group whose id is its pid, with the default signal
 * dispositions and an empty signal mask. Its stdin reads input (input_len
 * bytes) and then end of file; its stdout and stderr are pipes read through
 * proc_read_stdout() and proc_read_stderr(); no other descriptor is passed.
 *
 * Returns 0, or -DRV_EIO (the command could not be started: err says why) or
 * -DRV_ENOMEM; on failure p stays empty.
 */
int proc_spawn(struct proc *p, char *const argv[], char *const envp[], const char *input,
               size_t input_len, struct errmsg *err);

/*
 * Like proc_spawn(), but the child shares our stdin, stdout and stderr (and
 * every descriptor not marked close-on-exec): for `drover callback heartbeat
 * --every`, which wraps a command transparently. No pipes, so out_fd and
 * err_fd stay -1 and no line buffer is allocated. Returns 0, -DRV_EIO (err
 * says why and errno is posix_spawnp()'s error, e.g. ENOENT) or -DRV_ENOMEM.
 */
int proc_spawn_inherit(struct proc *p, char *const argv[], char *const envp[], struct errmsg *err);

/*
 * Read what the child's stdout holds now, at most a few chunks (poll() is
 * level-triggered: the rest comes on the next round, so one chatty child
 * cannot starve the others), calling on_line for each complete line. At end
 * of file the last unterminated line is passed too and out_fd is closed.
 */
void proc_read_stdout(struct proc *p, proc_line_fn on_line, void *ctx);

/* Read what the child's stderr holds now into the ring; closes err_fd at end of file. */
void proc_read_stderr(struct proc *p);

/*
 * Stop reading: take what the pipes hold right now (bounded, passing stdout
 * lines to on_line as above), then close both. For a child that exited while
 * something it started still holds its output open.
 */
void proc_close_pipes(struct proc *p, proc_line_fn on_line, void *ctx);

/* Record that waitpid() returned status for p->pid. */
void proc_set_exited(struct proc *p, int status);

/* True when there is nothing more to wait for: never started, or exited with both pipes closed. */
bool proc_done(const struct proc *p);

/*
 * Send sig to the child's whole process group. Harmless once the group is
 * gone (ESRCH is ignored); nothing is sent when no child was started.
 */
void proc_signal(const struct proc *p, int sig);

/*
 * The kept stderr tail as text. When older output was dropped, the text
 * starts after the first newline (no half line); trailing white space is
 * removed. OUT out: PROC_STDERR_TAIL + 1 bytes, NUL-terminated (it may hold
 * other NUL bytes). Returns its length.
 */
size_t proc_stderr_tail(const struct proc *p, char *out);

/* "exit status 3" or "killed by signal 9 (KILL)" for a wait status, into out of size n. */
void proc_describe_status(int status, char *out, size_t n);

/* Close p's descriptors and free its buffer; p is empty afterwards. The process is not touched. */
void proc_release(struct proc *p);

#endif
