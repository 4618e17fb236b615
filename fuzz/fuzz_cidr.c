/*
 * fuzz_cidr.c - allow-list entries as they arrive from --allow-target, the
 * config file and DROVER_ALLOW_TARGET: net_cidr_parse() on the input as a
 * C string.
 *
 * Invariants: a refusal always says why; an accepted CIDR has a prefix in
 * range and no bits past it; its canonical form parses back to the same
 * network and formats the same; a guard that allows it admits its own
 * network address, and a default guard's verdict on that address agrees
 * with net_classify().
 */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "fuzz.h"
#include "net_guard.h"

/* The network address of c as a sockaddr; returns its length. */
static socklen_t network_addr(const struct net_cidr *c, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (c->family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, c->addr, 4);
        return sizeof(*in);
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    memcpy(&in6->sin6_addr, c->addr, 16);
    return sizeof(*in6);
}

static void check_accepted(const char *s, const struct net_cidr *c)
{
    int bits = c->family == AF_INET ? 32 : 128;
    FUZZ_CHECK(c->family == AF_INET || c->family == AF_INET6, "'%s': family %d", s, c->family);
    FUZZ_CHECK(c->prefix >= 0 && c->prefix <= bits, "'%s': prefix %d", s, c->prefix);
    for (int i = c->prefix; i < bits; i++)
        FUZZ_CHECK(!(c->addr[i / 8] & (0x80 >> (i % 8))), "'%s': bit %d set past the prefix", s, i);

    char text[NET_CIDR_STRLEN], again_text[NET_CIDR_STRLEN];
    struct net_cidr again;
    net_cidr_format(c, text);
    FUZZ_CHECK(net_cidr_parse(text, &again, NULL) == 0, "'%s': canonical '%s' refused", s, text);
    FUZZ_CHECK(again.family == c->family && again.prefix == c->prefix &&
                   memcmp(again.addr, c->addr, sizeof(c->addr)) == 0,
               "'%s': canonical '%s' is another network", s, text);
    net_cidr_format(&again, again_text);
    FUZZ_CHECK(strcmp(text, again_text) == 0, "'%s': '%s' formats as '%s'", s, text, again_text);

    struct sockaddr_storage ss;
    socklen_t len = network_addr(c, &ss);
    const struct sockaddr *sa = (const struct sockaddr *)&ss;
    struct net_guard g;
    struct errmsg why = {0};
    net_guard_init(&g);
    int rc = net_guard_check(&g, sa, len, &why);
    enum net_class class = net_classify(sa, len);
    FUZZ_CHECK((rc == 0) == (class == NET_PUBLIC), "'%s': check %d but class %d", s, rc,
               (int)class);
    FUZZ_CHECK(rc == 0 || why.text[0] != '\0', "'%s': refused without a reason", s);
    FUZZ_CHECK(net_guard_allow(&g, text, &why) == 0, "'%s': the guard refuses '%s'", s, text);
    FUZZ_CHECK(net_guard_check(&g, sa, len, &why) == 0, "'%s': allowed, yet refused: %s", s,
               why.text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstring(data, size);
    struct net_cidr c;
    struct errmsg err = {0};
    int rc = net_cidr_parse(s, &c, &err);
    if (rc == 0)
        check_accepted(s, &c);
    else
        FUZZ_CHECK(rc == -DRV_EBAD_FIELD && err.text[0] != '\0', "'%s': rc %d, message '%s'", s, rc,
                   err.text);
    free(s);
    return 0;
}
