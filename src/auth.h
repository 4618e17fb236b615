/*
 * auth.h - bearer tokens with roles.
 *
 * Tokens are kept only as SHA-256 digests; a presented token is hashed and
 * compared against every known digest with CRYPTO_memcmp and no early exit,
 * so neither the comparison nor the number of tokens leaks through timing.
 */
#ifndef DROVER_AUTH_H
#define DROVER_AUTH_H

#include <stdbool.h>

#include "config.h"

#define ROLE_NONE 0
#define ROLE_ANY  (ROLE_ADMIN | ROLE_SUBMIT | ROLE_WORKER | ROLE_READ)

struct auth;

/* Build from the config's tokens. Free with auth_free(). */
int auth_new(const struct config *cfg, struct auth **out);

/* Add one token (e.g. a generated admin token). */
int auth_add(struct auth *a, enum auth_role role, const char *secret);

void auth_free(struct auth *a);

int auth_count(const struct auth *a);

/*
 * The role of the token in an Authorization header value
 * ("Bearer <token>"), or ROLE_NONE when it is missing or unknown.
 */
enum auth_role auth_check(const struct auth *a, const char *authorization);

/* What `role` may reach: admin reaches everything; submit and worker also read. */
bool auth_allows(enum auth_role role, unsigned route_roles);

const char *auth_role_name(enum auth_role role);

#endif
