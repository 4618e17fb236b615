/*
 * fuzz_config.c - the config file (drover serve --config FILE): the input
 * is the file's contents, given to config_load_file() through a memfd, then
 * config_validate() and config_release() as drover serve does.
 *
 * Invariants: a failure always says why; a config that loaded and validated
 * still validates after its list entries are read back (allow_target is
 * stored normalised, and net_cidr_parse() must accept what was stored).
 */
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "fuzz.h"
#include "net_guard.h"

/* One memfd for the whole run, rewritten for each input. */
static int memfd = -1;
static char memfd_path[64];

static void input_write(const uint8_t *data, size_t size)
{
    if (memfd < 0) {
        memfd = memfd_create("drover-fuzz-config", MFD_CLOEXEC);
        if (memfd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
    }
    if (ftruncate(memfd, 0) < 0) {
        perror("ftruncate");
        abort();
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = pwrite(memfd, data + done, size - done, (off_t)done);
        if (n <= 0) {
            perror("pwrite");
            abort();
        }
        done += (size_t)n;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    input_write(data, size);

    struct config cfg;
    struct errmsg err = {0};
    config_init(&cfg);
    int rc = config_load_file(&cfg, memfd_path, &err);
    if (rc == 0) {
        rc = config_validate(&cfg, &err);
        for (int i = 0; rc == 0 && i < cfg.n_allow_targets; i++) {
            struct net_cidr c;
            FUZZ_CHECK(net_cidr_parse(cfg.allow_targets[i], &c, NULL) == 0,
                       "stored allow_target '%s' does not parse", cfg.allow_targets[i]);
        }
    }
    if (rc < 0)
        FUZZ_CHECK(err.text[0] != '\0', "error %d without a message", rc);
    config_release(&cfg);
    return 0;
}
