/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Every kernel-version difference toa.ko cares about, and nothing else.
 * Force-included into every C file by Kbuild. RHEL backports features without
 * bumping LINUX_VERSION_CODE, so RHEL_RELEASE_CODE is consulted first.
 */
#ifndef TOA_COMPAT_H
#define TOA_COMPAT_H

#include <linux/version.h>
#include <linux/kconfig.h>

#if LINUX_VERSION_CODE < KERNEL_VERSION(3, 10, 0)
#error "toa.ko needs Linux 3.10 (RHEL 7) or newer"
#endif

#ifdef RHEL_RELEASE_CODE
#define TOA_RHEL_AT_LEAST(maj, min) (RHEL_RELEASE_CODE >= RHEL_RELEASE_VERSION(maj, min))
#else
#define TOA_RHEL_AT_LEAST(maj, min) 0
#endif

#include <linux/kprobes.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/ptrace.h>

#if !defined(CONFIG_KPROBES) || !defined(CONFIG_KRETPROBES)
#error "toa.ko hooks the kernel with kretprobes: CONFIG_KPROBES and CONFIG_KRETPROBES must be set"
#endif

/* READ_ONCE/WRITE_ONCE arrived in 3.19 (RHEL 7 backported them later in 7.x). */
#include <linux/compiler.h>
#ifndef READ_ONCE
#define READ_ONCE(x) ACCESS_ONCE(x)
#endif
#ifndef WRITE_ONCE
#define WRITE_ONCE(x, val) (ACCESS_ONCE(x) = (val))
#endif

/*
 * Arguments of a probed function, read from its entry registers. The probed
 * functions are ordinary C functions, so the architecture's calling convention
 * applies; only the first six arguments are ever needed.
 */
#if defined(CONFIG_X86_64)
#define toa_arg1(regs) ((regs)->di)
#define toa_arg2(regs) ((regs)->si)
#define toa_arg3(regs) ((regs)->dx)
#define toa_arg4(regs) ((regs)->cx)
#define toa_arg5(regs) ((regs)->r8)
#define toa_arg6(regs) ((regs)->r9)
#define toa_set_return(regs, v) ((regs)->ax = (unsigned long)(v))
#elif defined(CONFIG_ARM64)
#define toa_arg1(regs) ((regs)->regs[0])
#define toa_arg2(regs) ((regs)->regs[1])
#define toa_arg3(regs) ((regs)->regs[2])
#define toa_arg4(regs) ((regs)->regs[3])
#define toa_arg5(regs) ((regs)->regs[4])
#define toa_arg6(regs) ((regs)->regs[5])
#define toa_set_return(regs, v) ((regs)->regs[0] = (unsigned long)(v))
#else
#error "toa.ko supports x86_64 and arm64"
#endif

/*
 * getname: 4.17 dropped the `int *uaddr_len` argument and returns the length.
 *   < 4.17: int getname(struct socket *, struct sockaddr *, int *uaddr_len, int peer)
 *  >= 4.17: int getname(struct socket *, struct sockaddr *, int peer)
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 17, 0)
#define TOA_GETNAME_RETURNS_LEN 1
#define toa_getname_peer(regs) ((int)toa_arg3(regs))
#define toa_getname_lenp(regs) ((int *)NULL)
#else
#define TOA_GETNAME_RETURNS_LEN 0
#define toa_getname_peer(regs) ((int)toa_arg4(regs))
#define toa_getname_lenp(regs) ((int *)toa_arg3(regs))
#endif

/*
 * syn_recv_sock: 4.4 (lockless listeners) added `req_unhash` and `bool *own_req`
 * (arguments 5 and 6). A child we do not own is freed without ->destroy, so
 * nothing may be recorded for it. RHEL 7 stays on the 3.10 signature.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 4, 0)
#define toa_syn_recv_own_req(regs) ((bool *)toa_arg6(regs))
#else
#define toa_syn_recv_own_req(regs) ((bool *)NULL)
#endif

/* proc_create_single() arrived in 4.18; before it, single_open() by hand. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 18, 0)
#define toa_proc_create_single proc_create_single
#else
static inline int toa_single_open(struct inode *inode, struct file *file)
{
	return single_open(file, PDE_DATA(inode), NULL);
}

static inline struct proc_dir_entry *
toa_proc_create_single(const char *name, umode_t mode, struct proc_dir_entry *parent,
		       int (*show)(struct seq_file *, void *))
{
	static const struct file_operations fops = {
		.owner = THIS_MODULE,
		.open = toa_single_open,
		.read = seq_read,
		.llseek = seq_lseek,
		.release = single_release,
	};

	return proc_create_data(name, mode, parent, &fops, show);
}
#endif

#endif
