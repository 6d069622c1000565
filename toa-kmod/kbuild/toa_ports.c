// SPDX-License-Identifier: GPL-2.0-only
/*
 * ports: the local ports whose listeners honour TOA.
 *
 * A TOA reaching a listener on any other port is ignored and counted, so an
 * origin can take client addresses from the proxy on its service ports while
 * everything else on the host keeps the kernel's answer. Empty (the default)
 * means every port. The set is replaced as a whole (RCU) when written.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/bitmap.h>
#include <linux/slab.h>
#include <linux/string.h>
#include "toa.h"

struct toa_ports {
	struct toa_param_value head;	/* first: see struct toa_param_value */
	bool all;
	DECLARE_BITMAP(map, 65536);
};

static struct toa_param toa_ports = { .name = "ports" };

/* One entry, "N" or "N-M", 1 <= N <= M <= 65535; false when it is not that. */
static bool toa_ports_entry(const char *s, size_t len, unsigned int *lo, unsigned int *hi)
{
	char buf[16];
	char *dash;

	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, s, len);
	buf[len] = '\0';
	dash = strchr(buf, '-');
	if (dash)
		*dash = '\0';
	if (kstrtouint(buf, 10, lo) || *lo == 0 || *lo > 65535)
		return false;
	*hi = *lo;
	if (dash && (kstrtouint(dash + 1, 10, hi) || *hi < *lo || *hi > 65535))
		return false;
	return true;
}

static int toa_ports_set(const char *val, const struct kernel_param *kp)
{
	struct toa_ports *p;
	size_t len, at = 0, n;
	unsigned int lo, hi;
	int rc;

	BUILD_BUG_ON(offsetof(struct toa_ports, head) != 0);
	rc = toa_param_text_len(&toa_ports, val, &len);
	if (rc)
		return rc;
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	memcpy(p->head.text, val, len);
	p->all = len == 0;
	while (at < len) {
		n = strcspn(val + at, ",\n");
		if (at + n > len)
			n = len - at;
		if (!toa_ports_entry(val + at, n, &lo, &hi)) {
			pr_err("ports=%.*s rejected: bad entry at offset %zu; want comma-separated ports or ranges such as 80,443,8000-8099\n",
			       (int)len, val, at);
			kfree(p);
			return -EINVAL;
		}
		bitmap_set(p->map, lo, hi - lo + 1);
		at += n + 1;
		/* A trailing comma leaves an empty last entry: refuse it too. */
		if (at == len && val[len - 1] == ',') {
			pr_err("ports=%.*s rejected: empty entry at the end\n", (int)len, val);
			kfree(p);
			return -EINVAL;
		}
	}
	if (p->all)
		pr_info("ports is empty: listeners on every port honour TOA\n");
	else
		pr_info("ports: only listeners on %s honour TOA\n", p->head.text);
	toa_param_publish(&toa_ports, &p->head);
	return 0;
}

static const struct kernel_param_ops toa_ports_ops = {
	.set = toa_ports_set,
	.get = toa_param_get,
};
module_param_cb(ports, &toa_ports_ops, &toa_ports, 0644);
MODULE_PARM_DESC(ports,
		 "Comma-separated local ports or ranges (80,443,8000-8099) whose listeners honour TOA; a TOA to any other port is ignored. Empty (default): every port");

bool toa_port_honoured(__u16 port)
{
	struct toa_param_value *v;
	struct toa_ports *p;
	bool ok;

	rcu_read_lock();
	v = rcu_dereference(toa_ports.value);
	p = v ? container_of(v, struct toa_ports, head) : NULL;
	ok = !p || p->all || test_bit(port, p->map);
	rcu_read_unlock();
	return ok;
}

void toa_ports_exit(void)
{
	toa_param_close(&toa_ports);
}
