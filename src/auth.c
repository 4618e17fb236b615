/*
 * auth.c - token digests and constant-time lookup.
 */
#include "auth.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>

struct auth_token {
    enum auth_role role;
    unsigned char digest[SHA256_DIGEST_LENGTH];
};

struct auth {
    struct auth_token tokens[CONFIG_MAX_TOKENS + 1];
    int n;
    /* Fetched once: SHA256() looks the digest up by name on every call (every request). */
    EVP_MD *sha256;
};

/* The SHA-256 digest of a token. 0, or -DRV_EINTERNAL (out zeroed). */
static int token_digest(const struct auth *a, const char *token,
                        unsigned char out[SHA256_DIGEST_LENGTH])
{
    unsigned int len = 0;
    if (EVP_Digest(token, strlen(token), out, &len, a->sha256, NULL) == 1 &&
        len == SHA256_DIGEST_LENGTH)
        return 0;
    memset(out, 0, SHA256_DIGEST_LENGTH);
    return -DRV_EINTERNAL;
}

int auth_new(const struct config *cfg, struct auth **out)
{
    struct auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return -DRV_ENOMEM;
    if ((a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL) {
        free(a);
        return -DRV_EINTERNAL;
    }
    for (int i = 0; i < cfg->n_tokens; i++) {
        int rc = auth_add(a, cfg->tokens[i].role, cfg->tokens[i].secret);
        if (rc < 0) {
            auth_free(a);
            return rc;
        }
    }
    *out = a;
    return 0;
}

int auth_add(struct auth *a, enum auth_role role, const char *secret)
{
    if (a->n == (int)(sizeof(a->tokens) / sizeof(a->tokens[0])))
        return -DRV_ECONFIG;
    if (token_digest(a, secret, a->tokens[a->n].digest) < 0)
        return -DRV_EINTERNAL;
    a->tokens[a->n].role = role;
    a->n++;
    return 0;
}

void auth_free(struct auth *a)
{
    if (a == NULL)
        return;
    EVP_MD_free(a->sha256);
    OPENSSL_cleanse(a, sizeof(*a));
    free(a);
}

int auth_count(const struct auth *a)
{
    return a->n;
}

enum auth_role auth_check(const struct auth *a, const char *authorization)
{
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return ROLE_NONE;
    const char *token = authorization + 7;
    while (*token == ' ')
        token++;
    if (*token == '\0')
        return ROLE_NONE;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    if (token_digest(a, token, digest) < 0)
        return ROLE_NONE;
    unsigned role = ROLE_NONE;
    for (int i = 0; i < a->n; i++) {
        /* Branch-free select: every token is compared, whichever matches. */
        unsigned match = CRYPTO_memcmp(digest, a->tokens[i].digest, sizeof(digest)) == 0;
        role |= (unsigned)a->tokens[i].role & (0u - match);
    }
    /* Two roles can share a token only by configuration; the most powerful wins. */
    if (role & ROLE_ADMIN)
        return ROLE_ADMIN;
    if (role & ROLE_SUBMIT)
        return ROLE_SUBMIT;
    if (role & ROLE_WORKER)
        return ROLE_WORKER;
    return role & ROLE_READ ? ROLE_READ : ROLE_NONE;
}

bool auth_allows(enum auth_role role, unsigned route_roles)
{
    if (route_roles == ROLE_NONE)
        return true;
    if (role == ROLE_ADMIN)
        return true;
    return (route_roles & (unsigned)role) != 0;
}

const char *auth_role_name(enum auth_role role)
{
    switch (role) {
    case ROLE_ADMIN: return "admin";
    case ROLE_SUBMIT: return "submit";
    case ROLE_WORKER: return "worker";
    case ROLE_READ: return "read";
    }
    return "none";
}
