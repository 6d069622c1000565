// SPDX-License-Identifier: GPL-2.0-only
/*
 * trusted_proxies: the networks a TOA is believed from.
 *
 * TOA lets any packet claim to come from any client. When the list is set,
 * a handshake from any other source keeps the kernel's own answer and is
 * counted. The list is replaced as a whole (RCU) when the parameter is written.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/slab.h>
#include <linux/string.h>
#include "toa.h"

#define TOA_MAX_TRUSTED		64

struct toa_trust {
	struct toa_param_value head;	/* first: see struct toa_param_value */
	int n;
	struct toa_cidr cidrs[TOA_MAX_TRUSTED];
};

static struct toa_param toa_trust = { .name = "trusted_proxies" };

/* The current list, or NULL; under rcu_read_lock(). */
static struct toa_trust *toa_trust_current(void)
{
	struct toa_param_value *v = rcu_dereference(toa_trust.value);

	return v ? container_of(v, struct toa_trust, head) : NULL;
}

static const char *toa_trust_reason(int rc)
{
	switch (rc) {
	case TOA_TRUST_BAD_ADDRESS:
		return "not an IPv4 or IPv6 address";
	case TOA_TRUST_BAD_PREFIX:
		return "bad prefix length";
	case TOA_TRUST_HOST_BITS:
		return "host bits set below the prefix";
	case TOA_TRUST_TOO_MANY:
		return "more than 64 networks";
	case TOA_TRUST_EMPTY:
		return "empty entry";
	default:
		return "invalid";
	}
}

static int toa_trusted_set(const char *val, const struct kernel_param *kp)
{
	struct toa_trust *t;
	size_t len, offset = 0;
	int rc;

	BUILD_BUG_ON(offsetof(struct toa_trust, head) != 0);
	rc = toa_param_text_len(&toa_trust, val, &len);
	if (rc)
		return rc;
	t = kzalloc(sizeof(*t), GFP_KERNEL);
	if (!t)
		return -ENOMEM;
	t->n = toa_trusted_parse((const __u8 *)val, len, t->cidrs, TOA_MAX_TRUSTED, &offset);
	if (t->n < 0) {
		pr_err("trusted_proxies=%.*s rejected: %s at offset %zu; want comma-separated CIDRs such as 10.0.0.0/8,fd00::/64\n",
		       (int)len, val, toa_trust_reason(t->n), offset);
		kfree(t);
		return -EINVAL;
	}
	memcpy(t->head.text, val, len);
	if (t->n == 0)
		pr_info("trusted_proxies is empty: a TOA is accepted from any source\n");
	else
		pr_info("trusted_proxies: TOA accepted only from %s\n", t->head.text);
	toa_param_publish(&toa_trust, &t->head);
	return 0;
}

static const struct kernel_param_ops toa_trusted_ops = {
	.set = toa_trusted_set,
	.get = toa_param_get,
};
module_param_cb(trusted_proxies, &toa_trusted_ops, &toa_trust, 0644);
MODULE_PARM_DESC(trusted_proxies,
		 "Comma-separated IPv4/IPv6 CIDRs of the L4 proxies; a TOA from any other source is ignored. Empty (default): TOA accepted from any source");

bool toa_trusted(const struct toa_endpoint *source)
{
	struct toa_trust *t;
	bool ok;

	rcu_read_lock();
	t = toa_trust_current();
	ok = !t || t->n == 0 || toa_trusted_match(t->cidrs, t->n, source);
	rcu_read_unlock();
	return ok;
}

void toa_trust_report(void)
{
	struct toa_trust *t;

	rcu_read_lock();
	t = toa_trust_current();
	if (!t || t->n == 0)
		pr_info("trusted_proxies not set: a TOA is accepted from any source that reaches this host\n");
	rcu_read_unlock();
}

void toa_trust_exit(void)
{
	toa_param_close(&toa_trust);
}
