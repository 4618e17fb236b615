/*
 * test_net_guard.c - unit tests for src/net_guard.c: CIDR parsing and its
 * messages, every address class with the edges of its range, IPv6 forms
 * that carry an IPv4 address, and the allow-list's hits and misses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "net_guard.h"
#include "util.h"

/* text as a sockaddr_in or sockaddr_in6 (port 443), or fail. */
static socklen_t make_addr(const char *text, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(text, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(443);
        if (inet_pton(AF_INET6, text, &in6->sin6_addr) != 1)
            fail_msg("bad IPv6 address in test: %s", text);
        return sizeof(*in6);
    }
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(443);
    if (inet_pton(AF_INET, text, &in->sin_addr) != 1)
        fail_msg("bad IPv4 address in test: %s", text);
    return sizeof(*in);
}

static enum net_class classify(const char *text)
{
    struct sockaddr_storage ss;
    socklen_t len = make_addr(text, &ss);
    return net_classify((const struct sockaddr *)&ss, len);
}

/* net_guard_check() on text: its rc, and its reason in why. */
static int check(const struct net_guard *g, const char *text, struct errmsg *why)
{
    struct sockaddr_storage ss;
    socklen_t len = make_addr(text, &ss);
    return net_guard_check(g, (const struct sockaddr *)&ss, len, why);
}

static const char *class_name(enum net_class c)
{
    static const char *const names[] = {
        [NET_PUBLIC] = "PUBLIC",       [NET_NOT_IP] = "NOT_IP",     [NET_UNSPECIFIED] = "UNSPEC",
        [NET_LOOPBACK] = "LOOPBACK",   [NET_PRIVATE] = "PRIVATE",   [NET_LINK_LOCAL] = "LINK_LOCAL",
        [NET_METADATA] = "METADATA",   [NET_CGNAT] = "CGNAT",       [NET_MULTICAST] = "MULTICAST",
        [NET_BROADCAST] = "BROADCAST", [NET_RESERVED] = "RESERVED",
    };
    return (size_t)c < ARRAY_SIZE(names) ? names[c] : "?";
}

struct class_case {
    const char *addr;
    enum net_class want;
};

static void assert_classes(const struct class_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        enum net_class got = classify(cases[i].addr);
        if (got != cases[i].want)
            fail_msg("%s: class %s, want %s", cases[i].addr, class_name(got),
                     class_name(cases[i].want));
    }
}

/* ---- classes ---- */

static void test_classes_v4(void **state)
{
    static const struct class_case cases[] = {
        /* public, including the neighbours of every refused range */
        {"8.8.8.8", NET_PUBLIC},
        {"1.1.1.1", NET_PUBLIC},
        {"1.0.0.0", NET_PUBLIC},
        {"9.255.255.255", NET_PUBLIC},
        {"11.0.0.0", NET_PUBLIC},
        {"126.255.255.255", NET_PUBLIC},
        {"128.0.0.0", NET_PUBLIC},
        {"172.15.255.255", NET_PUBLIC},
        {"172.32.0.0", NET_PUBLIC},
        {"192.167.255.255", NET_PUBLIC},
        {"192.169.0.0", NET_PUBLIC},
        {"169.253.255.255", NET_PUBLIC},
        {"169.255.0.0", NET_PUBLIC},
        {"100.63.255.255", NET_PUBLIC},
        {"100.128.0.0", NET_PUBLIC},
        {"191.255.255.255", NET_PUBLIC},
        {"192.0.1.0", NET_PUBLIC},
        {"223.255.255.255", NET_PUBLIC},
        /* unspecified: 0.0.0.0/8 */
        {"0.0.0.0", NET_UNSPECIFIED},
        {"0.255.255.255", NET_UNSPECIFIED},
        /* loopback */
        {"127.0.0.1", NET_LOOPBACK},
        {"127.0.0.0", NET_LOOPBACK},
        {"127.255.255.255", NET_LOOPBACK},
        /* private */
        {"10.0.0.0", NET_PRIVATE},
        {"10.255.255.255", NET_PRIVATE},
        {"172.16.0.0", NET_PRIVATE},
        {"172.31.255.255", NET_PRIVATE},
        {"192.168.0.0", NET_PRIVATE},
        {"192.168.255.255", NET_PRIVATE},
        /* link-local, and the metadata hosts inside ranges */
        {"169.254.0.0", NET_LINK_LOCAL},
        {"169.254.169.253", NET_LINK_LOCAL},
        {"169.254.255.255", NET_LINK_LOCAL},
        {"169.254.169.254", NET_METADATA},
        {"100.100.100.200", NET_METADATA},
        {"192.0.0.192", NET_METADATA},
        /* CGNAT */
        {"100.64.0.0", NET_CGNAT},
        {"100.127.255.255", NET_CGNAT},
        {"100.100.100.201", NET_CGNAT},
        /* multicast, broadcast, reserved */
        {"224.0.0.0", NET_MULTICAST},
        {"239.255.255.255", NET_MULTICAST},
        {"240.0.0.0", NET_RESERVED},
        {"254.255.255.255", NET_RESERVED},
        {"255.255.255.254", NET_RESERVED},
        {"255.255.255.255", NET_BROADCAST},
        {"192.0.0.0", NET_RESERVED},
        {"192.0.0.255", NET_RESERVED},
    };
    (void)state;
    assert_classes(cases, ARRAY_SIZE(cases));
}

static void test_classes_v6(void **state)
{
    static const struct class_case cases[] = {
        {"2001:4860:4860::8888", NET_PUBLIC},
        {"2606:4700::1111", NET_PUBLIC},
        {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_PUBLIC},
        {"fe00::", NET_PUBLIC},
        {"::", NET_UNSPECIFIED},
        {"::1", NET_LOOPBACK},
        {"fc00::", NET_PRIVATE},
        {"fd12:3456::1", NET_PRIVATE},
        {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_PRIVATE},
        {"fec0::1", NET_PRIVATE},
        {"fe80::", NET_LINK_LOCAL},
        {"fe80::1", NET_LINK_LOCAL},
        {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NET_LINK_LOCAL},
        {"fd00:ec2::254", NET_METADATA},
        {"fd00:ec2::253", NET_PRIVATE},
        {"ff02::1", NET_MULTICAST},
        {"ff00::", NET_MULTICAST},
        {"64:ff9b:1::1", NET_RESERVED},
        {"100::1", NET_RESERVED},
        {"100:0:0:1::", NET_PUBLIC},
    };
    (void)state;
    assert_classes(cases, ARRAY_SIZE(cases));
}

/* IPv6 forms that carry an IPv4 address take that address's class. */
static void test_classes_embedded(void **state)
{
    static const struct class_case cases[] = {
        /* IPv4-mapped */
        {"::ffff:127.0.0.1", NET_LOOPBACK},
        {"::ffff:10.1.2.3", NET_PRIVATE},
        {"::ffff:169.254.169.254", NET_METADATA},
        {"::ffff:100.64.0.1", NET_CGNAT},
        {"::ffff:0.0.0.0", NET_UNSPECIFIED},
        {"::ffff:255.255.255.255", NET_BROADCAST},
        {"::ffff:8.8.8.8", NET_PUBLIC},
        /* NAT64 well-known prefix */
        {"64:ff9b::127.0.0.1", NET_LOOPBACK},
        {"64:ff9b::7f00:1", NET_LOOPBACK},
        {"64:ff9b::a9fe:a9fe", NET_METADATA},
        {"64:ff9b::192.168.1.1", NET_PRIVATE},
        {"64:ff9b::8.8.8.8", NET_PUBLIC},
        /* IPv4-compatible (deprecated) */
        {"::127.0.0.1", NET_LOOPBACK},
        {"::10.0.0.1", NET_PRIVATE},
        {"::0.0.0.2", NET_UNSPECIFIED},
        /* 6to4 */
        {"2002:7f00:1::", NET_LOOPBACK},
        {"2002:a9fe:a9fe::1", NET_METADATA},
        {"2002:808:808::1", NET_PUBLIC},
    };
    (void)state;
    assert_classes(cases, ARRAY_SIZE(cases));
}

static void test_classify_not_ip(void **state)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    struct sockaddr_in in = {.sin_family = AF_INET};
    struct net_guard g;
    struct errmsg why = {0};
    (void)state;

    assert_int_equal(net_classify((const struct sockaddr *)&un, sizeof(un)), NET_NOT_IP);
    /* A length too short for the family is not trusted. */
    assert_int_equal(net_classify((const struct sockaddr *)&in, sizeof(in) - 1), NET_NOT_IP);
    net_guard_init(&g);
    assert_int_equal(net_guard_allow(&g, "0.0.0.0/0", &why), 0);
    assert_int_equal(net_guard_check(&g, (const struct sockaddr *)&un, sizeof(un), &why),
                     -DRV_EFORBIDDEN);
    assert_string_equal(why.text, "address family 1 is not IPv4 or IPv6");
}

/* ---- the guard ---- */

static void test_guard_default_refuses_with_reason(void **state)
{
    static const char *const cases[][2] = {
        {"127.0.0.1", "127.0.0.1 is a loopback address; allow it with --allow-target"},
        {"::1", "::1 is a loopback address; allow it with --allow-target"},
        {"0.0.0.0", "0.0.0.0 is an unspecified address; allow it with --allow-target"},
        {"::", ":: is an unspecified address; allow it with --allow-target"},
        {"10.1.2.3", "10.1.2.3 is a private address; allow it with --allow-target"},
        {"fd00::1", "fd00::1 is a private address; allow it with --allow-target"},
        {"169.254.1.1", "169.254.1.1 is a link-local address; allow it with --allow-target"},
        {"169.254.169.254",
         "169.254.169.254 is a cloud metadata address; allow it with --allow-target"},
        {"fd00:ec2::254",
         "fd00:ec2::254 is a cloud metadata address; allow it with --allow-target"},
        {"100.64.0.0", "100.64.0.0 is a shared (CGNAT) address; allow it with --allow-target"},
        {"224.0.0.1", "224.0.0.1 is a multicast address; allow it with --allow-target"},
        {"255.255.255.255", "255.255.255.255 is a broadcast address; allow it with --allow-target"},
        {"240.0.0.1", "240.0.0.1 is a reserved address; allow it with --allow-target"},
        {"::ffff:127.0.0.1",
         "::ffff:127.0.0.1 carries 127.0.0.1, a loopback address; allow it with --allow-target"},
        {"64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe carries 169.254.169.254, a cloud metadata "
                               "address; allow it with --allow-target"},
    };
    struct net_guard g;
    (void)state;

    net_guard_init(&g);
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct errmsg why = {0};
        int rc = check(&g, cases[i][0], &why);
        if (rc != -DRV_EFORBIDDEN)
            fail_msg("%s: rc %d, want -DRV_EFORBIDDEN", cases[i][0], rc);
        assert_string_equal(why.text, cases[i][1]);
    }
    /* Public addresses pass; why may be NULL. */
    assert_int_equal(check(&g, "8.8.8.8", NULL), 0);
    assert_int_equal(check(&g, "2001:4860:4860::8888", NULL), 0);
    assert_int_equal(check(&g, "::ffff:8.8.8.8", NULL), 0);
    assert_int_equal(check(&g, "127.0.0.1", NULL), -DRV_EFORBIDDEN);
}

static void test_guard_allow_list(void **state)
{
    struct net_guard g;
    struct errmsg err = {0};
    (void)state;

    net_guard_init(&g);
    assert_int_equal(net_guard_allow(&g, "127.0.0.0/8", &err), 0);
    assert_int_equal(net_guard_allow(&g, "10.1.2.3", &err), 0);
    assert_int_equal(net_guard_allow(&g, "fd00:1::/32", &err), 0);
    assert_int_equal(net_guard_allow(&g, "169.254.169.254/32", &err), 0);
    assert_int_equal(g.n_allow, 4);

    /* hits */
    assert_int_equal(check(&g, "127.0.0.1", &err), 0);
    assert_int_equal(check(&g, "127.255.255.255", &err), 0);
    assert_int_equal(check(&g, "10.1.2.3", &err), 0);
    assert_int_equal(check(&g, "fd00:1:ffff::1", &err), 0);
    assert_int_equal(check(&g, "169.254.169.254", &err), 0);
    /* an IPv6 form of an allowed IPv4 address passes too */
    assert_int_equal(check(&g, "::ffff:127.0.0.1", &err), 0);
    assert_int_equal(check(&g, "64:ff9b::a01:203", &err), 0);

    /* misses: next door to each entry */
    assert_int_equal(check(&g, "10.1.2.4", &err), -DRV_EFORBIDDEN);
    assert_string_equal(err.text, "10.1.2.4 is a private address; allow it with --allow-target");
    assert_int_equal(check(&g, "10.1.2.2", &err), -DRV_EFORBIDDEN);
    assert_int_equal(check(&g, "fd00:2::1", &err), -DRV_EFORBIDDEN);
    assert_int_equal(check(&g, "169.254.169.253", &err), -DRV_EFORBIDDEN);
    assert_int_equal(check(&g, "::1", &err), -DRV_EFORBIDDEN);
    assert_int_equal(check(&g, "::ffff:10.1.2.4", &err), -DRV_EFORBIDDEN);
    /* an IPv4 entry does not match IPv6 bytes that happen to start alike */
    assert_int_equal(check(&g, "7f00::1", &err), 0); /* public anyway */
    assert_int_equal(check(&g, "fe80::7f00:1", &err), -DRV_EFORBIDDEN);

    /* An allow-list entry for an IPv6 range covers the mapped form as written. */
    net_guard_init(&g);
    assert_int_equal(net_guard_allow(&g, "::ffff:127.0.0.0/104", &err), 0);
    assert_int_equal(check(&g, "::ffff:127.0.0.1", &err), 0);
    assert_int_equal(check(&g, "127.0.0.1", &err), -DRV_EFORBIDDEN);

    /* Everything. */
    net_guard_init(&g);
    assert_int_equal(net_guard_allow(&g, "0.0.0.0/0", &err), 0);
    assert_int_equal(net_guard_allow(&g, "::/0", &err), 0);
    assert_int_equal(check(&g, "127.0.0.1", &err), 0);
    assert_int_equal(check(&g, "::1", &err), 0);
    assert_int_equal(check(&g, "255.255.255.255", &err), 0);
}

static void test_guard_allow_errors(void **state)
{
    struct net_guard g;
    struct errmsg err = {0};
    char cidr[32];
    (void)state;

    net_guard_init(&g);
    assert_int_equal(net_guard_allow(&g, "127.0.0.1/8", &err), -DRV_EBAD_FIELD);
    assert_string_equal(err.text,
                        "'127.0.0.1/8' has bits set past the prefix; did you mean '127.0.0.0/8'");
    assert_int_equal(g.n_allow, 0);
    for (int i = 0; i < NET_GUARD_MAX_ALLOW; i++) {
        snprintf(cidr, sizeof(cidr), "10.%d.0.0/16", i);
        assert_int_equal(net_guard_allow(&g, cidr, &err), 0);
    }
    assert_int_equal(net_guard_allow(&g, "::1", &err), -DRV_ECONFIG);
    assert_string_equal(err.text, "more than 64 allowed targets");
    assert_int_equal(g.n_allow, NET_GUARD_MAX_ALLOW);
}

/* ---- CIDR parsing ---- */

static void test_cidr_parse_good(void **state)
{
    static const char *const cases[][2] = {
        {"127.0.0.0/8", "127.0.0.0/8"},
        {"10.1.2.3", "10.1.2.3/32"},
        {"10.1.2.3/32", "10.1.2.3/32"},
        {"0.0.0.0/0", "0.0.0.0/0"},
        {"172.16.0.0/12", "172.16.0.0/12"},
        {"10.0.0.0/008", "10.0.0.0/8"},
        {"::1", "::1/128"},
        {"::1/128", "::1/128"},
        {"::/0", "::/0"},
        {"fe80::/10", "fe80::/10"},
        {"FD00:EC2::254", "fd00:ec2::254/128"},
        {"2001:DB8:0:0::/32", "2001:db8::/32"},
        {"::ffff:10.0.0.0/104", "::ffff:10.0.0.0/104"},
    };
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct net_cidr c;
        struct errmsg err = {0};
        char text[NET_CIDR_STRLEN];
        int rc = net_cidr_parse(cases[i][0], &c, &err);
        if (rc != 0)
            fail_msg("%s: rc %d (%s)", cases[i][0], rc, err.text);
        net_cidr_format(&c, text);
        assert_string_equal(text, cases[i][1]);
    }
}

static void test_cidr_parse_fields(void **state)
{
    static const unsigned char v4[4] = {10, 1, 0, 0};
    struct net_cidr c;
    (void)state;

    assert_int_equal(net_cidr_parse("10.1.0.0/16", &c, NULL), 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 16);
    assert_memory_equal(c.addr, v4, sizeof(v4));

    assert_int_equal(net_cidr_parse("::1", &c, NULL), 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(c.addr[15], 1);
    assert_int_equal(c.addr[0], 0);

    /* On failure *out is left alone. */
    c.prefix = 77;
    assert_int_equal(net_cidr_parse("nope", &c, NULL), -DRV_EBAD_FIELD);
    assert_int_equal(c.prefix, 77);
}

static void test_cidr_parse_bad(void **state)
{
    static const char *const not_cidr[] = {
        "",           "300.0.0.1",     "10.0.0",      "10.0.0.0/",   "10.0.0.0/8/8",
        "/8",         "10.0.0.0/-1",   "10.0.0.0/+8", "10.0.0.0/ 8", " 10.0.0.0/8",
        "1.2.3.4 ",   "fe80::1%eth0",  "example.com", "010.0.0.1",   "10.0.0.0/1000",
        ":::1",       "1.2.3.4/0x10",  "::1/",        "[::1]",       "10.0.0.0/8,::1",
        "1.2.3.4.5",  "ffff::ffff::1", "0x7f.0.0.1",  "127.1",       "10.0.0.0\n",
        "2130706433",
    };
    char want[256];
    (void)state;

    for (size_t i = 0; i < ARRAY_SIZE(not_cidr); i++) {
        struct net_cidr c;
        struct errmsg err = {0};
        snprintf(want, sizeof(want), "'%s' is not an IP address or CIDR (e.g. 10.0.0.0/8 or ::1)",
                 not_cidr[i]);
        assert_int_equal(net_cidr_parse(not_cidr[i], &c, &err), -DRV_EBAD_FIELD);
        assert_string_equal(err.text, want);
    }

    static const char *const precise[][2] = {
        {"10.0.0.0/33", "'10.0.0.0/33' has a prefix length above 32"},
        {"::/129", "'::/129' has a prefix length above 128"},
        {"10.0.0.0/999", "'10.0.0.0/999' has a prefix length above 32"},
        {"10.0.0.1/8", "'10.0.0.1/8' has bits set past the prefix; did you mean '10.0.0.0/8'"},
        {"172.31.0.0/11",
         "'172.31.0.0/11' has bits set past the prefix; did you mean '172.0.0.0/11'"},
        {"0.0.0.1/0", "'0.0.0.1/0' has bits set past the prefix; did you mean '0.0.0.0/0'"},
        {"fd00::1/64", "'fd00::1/64' has bits set past the prefix; did you mean 'fd00::/64'"},
        {"::1/127", "'::1/127' has bits set past the prefix; did you mean '::/127'"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(precise); i++) {
        struct net_cidr c;
        struct errmsg err = {0};
        assert_int_equal(net_cidr_parse(precise[i][0], &c, &err), -DRV_EBAD_FIELD);
        assert_string_equal(err.text, precise[i][1]);
    }

    /* A long input is quoted only in part. */
    char long_text[200];
    memset(long_text, '1', sizeof(long_text) - 1);
    long_text[sizeof(long_text) - 1] = '\0';
    struct net_cidr c;
    struct errmsg err = {0};
    assert_int_equal(net_cidr_parse(long_text, &c, &err), -DRV_EBAD_FIELD);
    assert_true(strlen(err.text) < 140);
}

/* Prefix edges: a /N contains exactly what shares its first N bits. */
static void test_cidr_contains(void **state)
{
    struct net_cidr c;
    unsigned char a[16];
    (void)state;

    assert_int_equal(net_cidr_parse("172.16.0.0/12", &c, NULL), 0);
    inet_pton(AF_INET, "172.16.0.0", a);
    assert_true(net_cidr_contains(&c, AF_INET, a));
    inet_pton(AF_INET, "172.31.255.255", a);
    assert_true(net_cidr_contains(&c, AF_INET, a));
    inet_pton(AF_INET, "172.32.0.0", a);
    assert_false(net_cidr_contains(&c, AF_INET, a));
    inet_pton(AF_INET, "172.15.255.255", a);
    assert_false(net_cidr_contains(&c, AF_INET, a));
    inet_pton(AF_INET6, "::ffff:172.16.0.1", a);
    assert_false(net_cidr_contains(&c, AF_INET6, a));

    assert_int_equal(net_cidr_parse("0.0.0.0/0", &c, NULL), 0);
    inet_pton(AF_INET, "255.255.255.255", a);
    assert_true(net_cidr_contains(&c, AF_INET, a));

    assert_int_equal(net_cidr_parse("fe80::/10", &c, NULL), 0);
    inet_pton(AF_INET6, "febf::1", a);
    assert_true(net_cidr_contains(&c, AF_INET6, a));
    inet_pton(AF_INET6, "fec0::", a);
    assert_false(net_cidr_contains(&c, AF_INET6, a));

    assert_int_equal(net_cidr_parse("10.1.2.3", &c, NULL), 0);
    inet_pton(AF_INET, "10.1.2.3", a);
    assert_true(net_cidr_contains(&c, AF_INET, a));
    inet_pton(AF_INET, "10.1.2.2", a);
    assert_false(net_cidr_contains(&c, AF_INET, a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes_v4),
        cmocka_unit_test(test_classes_v6),
        cmocka_unit_test(test_classes_embedded),
        cmocka_unit_test(test_classify_not_ip),
        cmocka_unit_test(test_guard_default_refuses_with_reason),
        cmocka_unit_test(test_guard_allow_list),
        cmocka_unit_test(test_guard_allow_errors),
        cmocka_unit_test(test_cidr_parse_good),
        cmocka_unit_test(test_cidr_parse_fields),
        cmocka_unit_test(test_cidr_parse_bad),
        cmocka_unit_test(test_cidr_contains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
