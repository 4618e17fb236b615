/*
 * net_guard.h - the SSRF guard: which IP addresses outbound requests may
 * connect to.
 *
 * Dispatches, webhooks and notifications go to URLs that users give, so a
 * URL must not be a way into the server's own network. By default the guard
 * refuses every address that is not publicly routable: loopback,
 * unspecified, private, link-local, cloud metadata, CGNAT, multicast,
 * broadcast and reserved ranges. IPv6 forms that carry an IPv4 address
 * (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64
 * 64:ff9b::/96, 6to4 2002::/16) are judged by the IPv4 address inside.
 * An allow-list of CIDRs (`--allow-target`, [outbound] allow_target) lets
 * chosen ranges through.
 *
 * The guard judges addresses, not names: the outbound engine asks it about
 * each address it is about to connect to (after DNS), so a name that
 * resolves to 127.0.0.1, or re-resolves there later, is still refused.
 *
 * Everything here is pure and allocation-free; a struct net_guard is
 * read-only once filled and may be shared between threads.
 */
#ifndef DROVER_NET_GUARD_H
#define DROVER_NET_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "error.h"

/* Most allow-list entries (the config allows fewer: CONFIG_MAX_TARGETS). */
#define NET_GUARD_MAX_ALLOW 64

/* Room for a formatted CIDR: an IPv6 address, "/128" and the NUL. */
#define NET_CIDR_STRLEN (46 + 5)

/* A network: an address and a prefix length, host bits zero. */
struct net_cidr {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network byte order; AF_INET uses the first 4 */
    int prefix;             /* 0..32 or 0..128 */
};

/*
 * Parse "a.b.c.d/n", "x:y::z/n" or a bare address (meaning /32 or /128)
 * into *out. The prefix is 1 to 3 decimal digits; bits past it must be
 * zero (10.0.0.1/8 is refused with "did you mean '10.0.0.0/8'"). No
 * spaces, no zone ids (fe80::1%eth0), no host names. Returns 0, or
 * -DRV_EBAD_FIELD with err->text such as "'10.0.0.0/33' has a prefix
 * length above 32" (err may be NULL).
 */
int net_cidr_parse(const char *text, struct net_cidr *out, struct errmsg *err);

/* Write c as "ADDRESS/PREFIX" (canonical: "10.0.0.1/32", "::1/128") into buf. */
void net_cidr_format(const struct net_cidr *c, char buf[NET_CIDR_STRLEN]);

/* Whether the address (family, addr in network byte order) lies in c. */
bool net_cidr_contains(const struct net_cidr *c, int family, const unsigned char *addr);

/* What kind of address a destination is. Only NET_PUBLIC passes by default. */
enum net_class {
    NET_PUBLIC,      /* globally routable */
    NET_NOT_IP,      /* not an AF_INET or AF_INET6 address */
    NET_UNSPECIFIED, /* 0.0.0.0/8, :: */
    NET_LOOPBACK,    /* 127.0.0.0/8, ::1 */
    NET_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10 */
    NET_LINK_LOCAL,  /* 169.254/16, fe80::/10 */
    NET_METADATA,    /* cloud metadata: 169.254.169.254, fd00:ec2::254, 100.100.100.200,
                        192.0.0.192 */
    NET_CGNAT,       /* 100.64.0.0/10 (shared address space) */
    NET_MULTICAST,   /* 224.0.0.0/4, ff00::/8 */
    NET_BROADCAST,   /* 255.255.255.255 */
    NET_RESERVED,    /* 240.0.0.0/4, 192.0.0.0/24, 64:ff9b:1::/48, 100::/64 */
};

/*
 * Classify the address in sa (a sockaddr_in or sockaddr_in6; len is its
 * size). An IPv6 address that carries an IPv4 one gets the class of that
 * IPv4 address.
 */
enum net_class net_classify(const struct sockaddr *sa, socklen_t len);

/* "a loopback address", "a cloud metadata address", ... for messages. */
const char *net_class_text(enum net_class c);

/* The allow-list. Fill with net_guard_init() and net_guard_allow(). */
struct net_guard {
    struct net_cidr allow[NET_GUARD_MAX_ALLOW];
    int n_allow;
};

/* An empty allow-list: only public addresses pass. */
void net_guard_init(struct net_guard *g);

/*
 * Add one CIDR (net_cidr_parse()'s forms) to the allow-list. Returns 0,
 * -DRV_EBAD_FIELD for a malformed CIDR, or -DRV_ECONFIG when the list holds
 * NET_GUARD_MAX_ALLOW entries already; err->text says which.
 */
int net_guard_allow(struct net_guard *g, const char *cidr, struct errmsg *err);

/*
 * May an outbound request connect to sa? 0 when the address is public or
 * in the allow-list (an IPv6 address carrying an IPv4 one also passes when
 * that IPv4 address is in the list). Otherwise -DRV_EFORBIDDEN with
 * why->text such as "127.0.0.1 is a loopback address; allow it with
 * --allow-target" (why may be NULL).
 */
int net_guard_check(const struct net_guard *g, const struct sockaddr *sa, socklen_t len,
                    struct errmsg *why);

#endif
