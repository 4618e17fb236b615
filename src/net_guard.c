/*
 * net_guard.c - CIDR parsing, address classes and the allow-list check.
 *
 * The ranges refused by default are two small tables, one per family,
 * searched in order (the more specific rows first: the metadata host before
 * its link-local /16). IPv6 forms that embed an IPv4 address are unwrapped
 * first, so ::ffff:127.0.0.1 and 64:ff9b::7f00:1 are loopback like
 * 127.0.0.1.
 */
#include "net_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

/* At most this much of a refused CIDR is quoted back in a message. */
#define QUOTE_MAX 64

/* One range refused by default. */
struct net_range {
    unsigned char addr[16];
    int prefix;
    enum net_class class;
};

static const struct net_range ranges_v4[] = {
    {{255, 255, 255, 255}, 32, NET_BROADCAST},
    {{169, 254, 169, 254}, 32, NET_METADATA}, /* AWS, GCP, Azure, OCI, ... */
    {{100, 100, 100, 200}, 32, NET_METADATA}, /* Alibaba Cloud */
    {{192, 0, 0, 192}, 32, NET_METADATA},     /* Oracle Cloud (older) */
    {{0, 0, 0, 0}, 8, NET_UNSPECIFIED},       /* "this network" */
    {{127, 0, 0, 0}, 8, NET_LOOPBACK},
    {{10, 0, 0, 0}, 8, NET_PRIVATE}, /* RFC 1918 */
    {{172, 16, 0, 0}, 12, NET_PRIVATE},
    {{192, 168, 0, 0}, 16, NET_PRIVATE},
    {{169, 254, 0, 0}, 16, NET_LINK_LOCAL},
    {{100, 64, 0, 0}, 10, NET_CGNAT},   /* RFC 6598 */
    {{192, 0, 0, 0}, 24, NET_RESERVED}, /* IETF protocol assignments */
    {{224, 0, 0, 0}, 4, NET_MULTICAST},
    {{240, 0, 0, 0}, 4, NET_RESERVED},
};

static const struct net_range ranges_v6[] = {
    {{0}, 128, NET_UNSPECIFIED},                                      /* :: */
    {{[15] = 1}, 128, NET_LOOPBACK},                                  /* ::1 */
    {{0xfd, 0x00, 0x0e, 0xc2, [14] = 0x02, 0x54}, 128, NET_METADATA}, /* fd00:ec2::254 */
    {{0xfc}, 7, NET_PRIVATE},                                         /* unique local */
    {{0xfe, 0xc0}, 10, NET_PRIVATE},                                  /* site-local (deprecated) */
    {{0xfe, 0x80}, 10, NET_LINK_LOCAL},
    {{0xff}, 8, NET_MULTICAST},
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, NET_RESERVED}, /* local-use NAT64 */
    {{0x01, 0x00}, 64, NET_RESERVED},                         /* discard-only */
};

/* Whether the first prefix bits of a and b agree. */
static bool prefix_equal(const unsigned char *a, const unsigned char *b, int prefix)
{
    int bytes = prefix / 8, bits = prefix % 8;
    if (memcmp(a, b, (size_t)bytes) != 0)
        return false;
    if (bits == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - bits));
    return ((a[bytes] ^ b[bytes]) & mask) == 0;
}

/* ---- CIDRs ---- */

int net_cidr_parse(const char *text, struct net_cidr *out, struct errmsg *err)
{
    struct errmsg scratch;
    char addr[INET6_ADDRSTRLEN];
    const char *slash = strchr(text, '/');
    size_t addr_len = slash ? (size_t)(slash - text) : strlen(text);
    struct net_cidr c = {0};

    if (!err)
        err = &scratch;
    if (addr_len == 0 || addr_len >= sizeof(addr))
        goto bad;
    memcpy(addr, text, addr_len);
    addr[addr_len] = '\0';
    c.family = strchr(addr, ':') ? AF_INET6 : AF_INET;
    if (inet_pton(c.family, addr, c.addr) != 1)
        goto bad;

    int bits = c.family == AF_INET ? 32 : 128;
    c.prefix = bits;
    if (slash) {
        const char *p = slash + 1;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 3 || p[digits] != '\0')
            goto bad;
        c.prefix = atoi(p);
        if (c.prefix > bits)
            return errmsg_set(err, -DRV_EBAD_FIELD, "'%.*s' has a prefix length above %d",
                              QUOTE_MAX, text, bits);
    }

    bool host_bits = false;
    for (int i = c.prefix; i < bits; i++) {
        unsigned char mask = (unsigned char)(0x80 >> (i % 8));
        if (c.addr[i / 8] & mask) {
            host_bits = true;
            c.addr[i / 8] &= (unsigned char)~mask;
        }
    }
    if (host_bits) {
        char network[NET_CIDR_STRLEN];
        net_cidr_format(&c, network);
        return errmsg_set(err, -DRV_EBAD_FIELD,
                          "'%.*s' has bits set past the prefix; did you mean '%s'", QUOTE_MAX, text,
                          network);
    }
    *out = c;
    return 0;
bad:
    return errmsg_set(err, -DRV_EBAD_FIELD,
                      "'%.*s' is not an IP address or CIDR (e.g. 10.0.0.0/8 or ::1)", QUOTE_MAX,
                      text);
}

void net_cidr_format(const struct net_cidr *c, char buf[NET_CIDR_STRLEN])
{
    if (!inet_ntop(c->family, c->addr, buf, INET6_ADDRSTRLEN))
        snprintf(buf, INET6_ADDRSTRLEN, "?");
    size_t len = strlen(buf);
    snprintf(buf + len, NET_CIDR_STRLEN - len, "/%d", c->prefix);
}

bool net_cidr_contains(const struct net_cidr *c, int family, const unsigned char *addr)
{
    return c->family == family && prefix_equal(c->addr, addr, c->prefix);
}

/* ---- classes ---- */

/*
 * An IPv4 address carried in an IPv6 one, into v4: IPv4-mapped
 * ::ffff:0:0/96, IPv4-compatible ::/96 (not :: or ::1), NAT64 64:ff9b::/96,
 * 6to4 2002::/16 (the /48's middle 32 bits).
 */
static bool embedded_v4(const unsigned char v6[16], unsigned char v4[4])
{
    static const unsigned char mapped[12] = {[10] = 0xff, [11] = 0xff};
    static const unsigned char compat[12] = {0};
    static const unsigned char nat64[12] = {0x00, 0x64, 0xff, 0x9b};

    if (memcmp(v6, mapped, 12) == 0 || memcmp(v6, nat64, 12) == 0) {
        memcpy(v4, v6 + 12, 4);
        return true;
    }
    if (memcmp(v6, compat, 12) == 0 && ((v6[12] | v6[13] | v6[14]) != 0 || v6[15] > 1)) {
        memcpy(v4, v6 + 12, 4);
        return true;
    }
    if (v6[0] == 0x20 && v6[1] == 0x02) {
        memcpy(v4, v6 + 2, 4);
        return true;
    }
    return false;
}

static enum net_class classify_in(const struct net_range *ranges, size_t n,
                                  const unsigned char *addr)
{
    for (size_t i = 0; i < n; i++)
        if (prefix_equal(ranges[i].addr, addr, ranges[i].prefix))
            return ranges[i].class;
    return NET_PUBLIC;
}

/* The address in sa: family and bytes; false when it is not IPv4 or IPv6. */
static bool sockaddr_bytes(const struct sockaddr *sa, socklen_t len, int *family,
                           unsigned char addr[16])
{
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof(in));
        memcpy(addr, &in.sin_addr, 4);
        *family = AF_INET;
        return true;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        memcpy(addr, &in6.sin6_addr, 16);
        *family = AF_INET6;
        return true;
    }
    return false;
}

static enum net_class classify_bytes(int family, const unsigned char *addr)
{
    unsigned char v4[4];
    if (family == AF_INET)
        return classify_in(ranges_v4, ARRAY_SIZE(ranges_v4), addr);
    if (embedded_v4(addr, v4))
        return classify_in(ranges_v4, ARRAY_SIZE(ranges_v4), v4);
    return classify_in(ranges_v6, ARRAY_SIZE(ranges_v6), addr);
}

enum net_class net_classify(const struct sockaddr *sa, socklen_t len)
{
    int family;
    unsigned char addr[16];
    if (!sockaddr_bytes(sa, len, &family, addr))
        return NET_NOT_IP;
    return classify_bytes(family, addr);
}

const char *net_class_text(enum net_class c)
{
    switch (c) {
    case NET_PUBLIC: return "a public address";
    case NET_NOT_IP: return "not an IP address";
    case NET_UNSPECIFIED: return "an unspecified address";
    case NET_LOOPBACK: return "a loopback address";
    case NET_PRIVATE: return "a private address";
    case NET_LINK_LOCAL: return "a link-local address";
    case NET_METADATA: return "a cloud metadata address";
    case NET_CGNAT: return "a shared (CGNAT) address";
    case NET_MULTICAST: return "a multicast address";
    case NET_BROADCAST: return "a broadcast address";
    case NET_RESERVED: return "a reserved address";
    }
    return "an unknown kind of address";
}

/* ---- the allow-list ---- */

void net_guard_init(struct net_guard *g)
{
    memset(g, 0, sizeof(*g));
}

int net_guard_allow(struct net_guard *g, const char *cidr, struct errmsg *err)
{
    struct net_cidr c;
    int rc = net_cidr_parse(cidr, &c, err);
    if (rc)
        return rc;
    if (g->n_allow >= NET_GUARD_MAX_ALLOW)
        return errmsg_set(err, -DRV_ECONFIG, "more than %d allowed targets", NET_GUARD_MAX_ALLOW);
    g->allow[g->n_allow++] = c;
    return 0;
}

static bool allowed(const struct net_guard *g, int family, const unsigned char *addr)
{
    for (int i = 0; i < g->n_allow; i++)
        if (net_cidr_contains(&g->allow[i], family, addr))
            return true;
    return false;
}

int net_guard_check(const struct net_guard *g, const struct sockaddr *sa, socklen_t len,
                    struct errmsg *why)
{
    struct errmsg scratch;
    int family;
    unsigned char addr[16], v4[4];

    if (!why)
        why = &scratch;
    if (!sockaddr_bytes(sa, len, &family, addr))
        return errmsg_set(why, -DRV_EFORBIDDEN, "address family %d is not IPv4 or IPv6",
                          (int)sa->sa_family);
    enum net_class class = classify_bytes(family, addr);
    if (class == NET_PUBLIC || allowed(g, family, addr))
        return 0;
    bool inner = family == AF_INET6 && embedded_v4(addr, v4);
    if (inner && allowed(g, AF_INET, v4))
        return 0;

    char shown[INET6_ADDRSTRLEN], shown_v4[INET_ADDRSTRLEN];
    if (!inet_ntop(family, addr, shown, sizeof(shown)))
        snprintf(shown, sizeof(shown), "?");
    if (inner && inet_ntop(AF_INET, v4, shown_v4, sizeof(shown_v4)))
        return errmsg_set(why, -DRV_EFORBIDDEN, "%s carries %s, %s; allow it with --allow-target",
                          shown, shown_v4, net_class_text(class));
    return errmsg_set(why, -DRV_EFORBIDDEN, "%s is %s; allow it with --allow-target", shown,
                      net_class_text(class));
}
