// SPDX-License-Identifier: GPL-2.0-only
/*
 * Module parameters whose parsed value is replaced as a whole (ports,
 * trusted_proxies): readers take the value under rcu_read_lock(), writers are
 * serialised by the module parameter lock and free the old value after a
 * grace period, and unload frees the last one and refuses later writes.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/string.h>
#include "toa.h"

int toa_param_text_len(const struct toa_param *p, const char *val, size_t *len)
{
	if (p->closed)
		return -EBUSY;
	*len = strcspn(val, "\n");
	if (*len >= TOA_PARAM_TEXT_MAX) {
		pr_err("%s rejected: longer than %d bytes\n", p->name, TOA_PARAM_TEXT_MAX - 1);
		return -EINVAL;
	}
	return 0;
}

void toa_param_publish(struct toa_param *p, struct toa_param_value *v)
{
	/* Writers are serialised by the module parameter lock. */
	struct toa_param_value *old = rcu_dereference_protected(p->value, 1);

	rcu_assign_pointer(p->value, v);
	if (old)
		kfree_rcu(old, rcu);
}

int toa_param_get(char *buf, const struct kernel_param *kp)
{
	struct toa_param *p = kp->arg;
	struct toa_param_value *v;
	int n;

	rcu_read_lock();
	v = rcu_dereference(p->value);
	n = scnprintf(buf, PAGE_SIZE, "%s\n", v ? v->text : "");
	rcu_read_unlock();
	return n;
}

void toa_param_close(struct toa_param *p)
{
	/* A write to the parameter's sysfs file may be running until the module is gone. */
	toa_param_lock();
	kfree(rcu_dereference_protected(p->value, 1));
	RCU_INIT_POINTER(p->value, NULL);
	p->closed = true;
	toa_param_unlock();
}
