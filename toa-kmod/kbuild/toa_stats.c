// SPDX-License-Identifier: GPL-2.0-only
/* Per-CPU counters and /proc/net/toa_stats. */
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <net/net_namespace.h>
#include "toa.h"

DEFINE_PER_CPU(struct toa_stats, toa_stats);

static const char *const toa_counter_names[TOA_NR_COUNTERS] = {
	[TOA_SYN_RECV_SOCK_TOA] = "syn_recv_sock_toa",
	[TOA_SYN_RECV_SOCK_NO_TOA] = "syn_recv_sock_no_toa",
	[TOA_GETNAME_TOA_OK] = "getname_toa_ok",
	[TOA_GETNAME_TOA_MISMATCH] = "getname_toa_mismatch",
	[TOA_GETNAME_TOA_EMPTY] = "getname_toa_empty",
	[TOA_IP6_ADDRESS_ALLOC] = "ip6_address_alloc",
	[TOA_IP6_ADDRESS_FREE] = "ip6_address_free",
	[TOA_OPTIONS_MALFORMED] = "options_malformed",
	[TOA_SYN_RECV_SOCK_UNTRUSTED] = "syn_recv_sock_untrusted",
	[TOA_RECORD_ALLOC_FAILED] = "record_alloc_failed",
	[TOA_SOCKOPT_LOOKUP] = "sockopt_lookup",
	[TOA_SYN_RECV_SOCK_OTHER_PORT] = "syn_recv_sock_other_port",
	[TOA_GETNAME_KERNEL_SOCKET] = "getname_kernel_socket",
	[TOA_GETNAME_TOA_UNFIT] = "getname_toa_unfit",
	[TOA_LISTEN_ARMED] = "listen_armed",
	[TOA_LISTEN_KERNEL_SOCKET] = "listen_kernel_socket",
	[TOA_LISTEN_FOREIGN_TABLE] = "listen_foreign_table",
	[TOA_GETNAME_TABLE_REPLACED] = "getname_table_replaced",
};

/* The seed's layout: a header of online CPUs, then `name: v0 v1 ...`. */
static int toa_stats_show(struct seq_file *seq, void *v)
{
	int cpu, i;

	seq_puts(seq, "                         ");
	for_each_online_cpu(cpu)
		seq_printf(seq, " CPU%d", cpu);
	seq_putc(seq, '\n');
	for (i = 0; i < TOA_NR_COUNTERS; i++) {
		seq_printf(seq, "%-25s", toa_counter_names[i]);
		seq_putc(seq, ':');
		for_each_online_cpu(cpu)
			seq_printf(seq, " %llu",
				   (unsigned long long)per_cpu(toa_stats, cpu).v[i]);
		seq_putc(seq, '\n');
	}
	/*
	 * Not per CPU: listener arming runs the probe lost; 0 by construction.
	 * Also under its old name, kretprobe_missed, for this release only.
	 */
	seq_printf(seq, "%-25s: %lu\n", "listen_probe_missed", toa_hooks_missed());
	seq_printf(seq, "%-25s: %lu\n", "kretprobe_missed", toa_hooks_missed());
	/* Gauges: listeners armed by the walk at load; 1 once rmmod is refused. */
	seq_printf(seq, "%-25s: %u\n", "listen_armed_at_load", toa_listeners_armed_at_load());
	seq_printf(seq, "%-25s: %u\n", "pinned", toa_pinned() ? 1 : 0);
	/* A gauge: records in memory now; back to 0 once TOA connections close. */
	seq_printf(seq, "%-25s: %u\n", "records_live", toa_table_held());
	return 0;
}


int toa_stats_init(void)
{
	int cpu;

	for_each_possible_cpu(cpu)
		memset(per_cpu_ptr(&toa_stats, cpu), 0, sizeof(struct toa_stats));
	if (!toa_proc_create_single("toa_stats", 0444, init_net.proc_net, toa_stats_show))
		return -ENOMEM;
	return 0;
}

void toa_stats_exit(void)
{
	remove_proc_entry("toa_stats", init_net.proc_net);
}
