// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa.ko: applications behind an L4 proxy see the real client address.
 * Module parameters, init and exit; init and exit mirror each other.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include "toa.h"

unsigned int toa_formats = TOA_FMT_ALL;

static int toa_formats_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;
	int err = kstrtouint(val, 0, &v);

	if (err || v == 0 || (v & ~TOA_FMT_ALL)) {
		pr_err("formats=%.*s rejected: want a non-zero mask of 0x1 (254/8), 0x2 (254/20), 0x4 (253/20), 0x8 (200/8)\n",
		       (int)strcspn(val, "\n"), val);
		return -EINVAL;
	}
	WRITE_ONCE(toa_formats, v);
	return 0;
}

static const struct kernel_param_ops toa_formats_ops = {
	.set = toa_formats_set,
	.get = param_get_uint,
};
module_param_cb(formats, &toa_formats_ops, &toa_formats, 0644);
MODULE_PARM_DESC(formats,
		 "TOA formats accepted, a bitmask: 0x1 254/8 (IPv4), 0x2 254/20 (IPv6), 0x4 253/20 (IPv6), 0x8 200/8 (IPv4); default 0xf");

static unsigned int max_records = 1U << 20;
module_param(max_records, uint, 0444);
MODULE_PARM_DESC(max_records,
		 "Most TOA records in memory at once, closed connections' included until their grace period ends (default 1048576); beyond it the kernel's own address is returned and record_alloc_failed counts");

static int __init toa_init(void)
{
	int err;

	/* The Rust core reads and writes this layout (toa-kmod/src/ffi.rs). */
	BUILD_BUG_ON(sizeof(struct toa_endpoint) != 20);
	BUILD_BUG_ON(sizeof(struct toa_cidr) != 18);

	err = toa_stats_init();
	if (err)
		goto out;
	err = toa_table_init(max_records);
	if (err)
		goto out_stats;
	err = toa_listeners_init();
	if (err)
		goto out_table;
	err = toa_hooks_init();
	if (err)
		goto out_listeners;
	err = toa_sockopt_init();
	if (err)
		goto out_hooks;
	toa_trust_report();
	pr_info("loaded: formats=%#x max_records=%u\n", toa_formats, max_records);
	return 0;

out_hooks:
	toa_hooks_exit();
out_listeners:
	toa_listeners_exit();
out_table:
	toa_table_exit();
out_stats:
	toa_stats_exit();
out:
	toa_ports_exit();
	toa_trust_exit();
	pr_err("load failed: %d\n", err);
	return err;
}

static void __exit toa_exit(void)
{
	toa_sockopt_exit();
	toa_hooks_exit();
	toa_listeners_exit();
	toa_table_exit();
	toa_stats_exit();
	toa_ports_exit();
	toa_trust_exit();
	pr_info("unloaded\n");
}

module_init(toa_init);
module_exit(toa_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("TCP Option Address: accept()/getpeername() return the client an L4 proxy put in a TCP option");
MODULE_AUTHOR("toa developers");
MODULE_VERSION(TOA_VERSION);
#ifdef TOA_TEST_NO_REWRITE
/* Never a release: `modinfo -F toa_test_build toa.ko` says what it lacks. */
MODULE_INFO(toa_test_build, "no-rewrite");
#endif
