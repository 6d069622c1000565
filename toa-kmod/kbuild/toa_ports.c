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

#define TOA_PORTS_TEXT_MAX	1024

struct toa_ports {
	struct rcu_head rcu;
	bool all;
	DECLARE_BITMAP(map, 65536);
	char text[TOA_PORTS_TEXT_MAX];
};

static struct toa_ports __rcu *toa_ports;

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

/* Set at unload (under the parameter lock): later writes are refused. */
static bool toa_ports_closed;

static int toa_ports_set(const char *val, const struct kernel_param *kp)
{
	size_t len = strcspn(val, "\n");
	struct toa_ports *p, *old;
	size_t at = 0, n;
	unsigned int lo, hi;

	if (toa_ports_closed)
		return -EBUSY;
	if (len >= TOA_PORTS_TEXT_MAX) {
		pr_err("ports rejected: longer than %d bytes\n", TOA_PORTS_TEXT_MAX - 1);
		return -EINVAL;
	}
	p = kzalloc(sizeof(*p), GFP_KERNEL);
	if (!p)
		return -ENOMEM;
	memcpy(p->text, val, len);
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
		pr_info("ports: only listeners on %s honour TOA\n", p->text);

	/* Writers are serialised by the module parameter lock. */
	old = rcu_dereference_protected(toa_ports, 1);
	rcu_assign_pointer(toa_ports, p);
	if (old)
		kfree_rcu(old, rcu);
	return 0;
}

static int toa_ports_get(char *buf, const struct kernel_param *kp)
{
	struct toa_ports *p;
	int n;

	rcu_read_lock();
	p = rcu_dereference(toa_ports);
	n = scnprintf(buf, PAGE_SIZE, "%s\n", p ? p->text : "");
	rcu_read_unlock();
	return n;
}

static const struct kernel_param_ops toa_ports_ops = {
	.set = toa_ports_set,
	.get = toa_ports_get,
};
module_param_cb(ports, &toa_ports_ops, NULL, 0644);
MODULE_PARM_DESC(ports,
		 "Comma-separated local ports or ranges (80,443,8000-8099) whose listeners honour TOA; a TOA to any other port is ignored. Empty (default): every port");

bool toa_port_honoured(__u16 port)
{
	struct toa_ports *p;
	bool ok;

	rcu_read_lock();
	p = rcu_dereference(toa_ports);
	ok = !p || p->all || test_bit(port, p->map);
	rcu_read_unlock();
	return ok;
}

void toa_ports_exit(void)
{
	/* A write to the parameter's sysfs file may be running until the module is gone. */
	toa_param_lock();
	kfree(rcu_dereference_protected(toa_ports, 1));
	RCU_INIT_POINTER(toa_ports, NULL);
	toa_ports_closed = true;
	toa_param_unlock();
}
