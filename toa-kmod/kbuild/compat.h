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

#if !defined(CONFIG_KPROBES)
#error "toa.ko arms listeners from a kprobe on inet_csk_listen_start: CONFIG_KPROBES must be set"
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
 * toa_call_getname() returns the length (or a negative errno) on both;
 * toa_getname_return() turns such a result into what the caller expects.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 17, 0)
#define TOA_GETNAME_PARAMS struct socket *sock, struct sockaddr *uaddr, int peer
#define toa_call_getname(ops) ((ops)->getname(sock, uaddr, peer))
#define toa_call_getname_fn(fn) (fn(sock, uaddr, peer))
#define toa_getname_return(n) (n)
#else
#define TOA_GETNAME_PARAMS struct socket *sock, struct sockaddr *uaddr, int *uaddr_len, int peer
#define toa_call_getname_fn(fn)							\
	({ int __err = fn(sock, uaddr, uaddr_len, peer);			\
	   __err < 0 ? __err : *uaddr_len; })
#define toa_call_getname(ops) toa_call_getname_fn((ops)->getname)
#define toa_getname_return(n)							\
	({ int __n = (n); __n < 0 ? __n : (*uaddr_len = __n, 0); })
#endif

/*
 * syn_recv_sock: 4.4 (lockless listeners) made the listener const and added
 * `req_unhash` and `bool *own_req`. A child we do not own is freed without
 * ever being accepted, so nothing may be recorded for it. RHEL 7 stays on the
 * 3.10 signature.
 */
#if defined(TOA_HAVE_OPT_CHILD_INIT)
/* 7.0, and stable kernels it was backported to (Kbuild reads the header). */
#define TOA_SYN_RECV_PARAMS const struct sock *sk, struct sk_buff *skb,	\
	struct request_sock *req, struct dst_entry *dst,			\
	struct request_sock *req_unhash, bool *own_req,				\
	void (*opt_child_init)(struct sock *newsk, const struct sock *sk)
#define TOA_SYN_RECV_ARGS sk, skb, req, dst, req_unhash, own_req, opt_child_init
#define toa_own_req() (*own_req)
#elif LINUX_VERSION_CODE >= KERNEL_VERSION(4, 4, 0)
#define TOA_SYN_RECV_PARAMS const struct sock *sk, struct sk_buff *skb,	\
	struct request_sock *req, struct dst_entry *dst,			\
	struct request_sock *req_unhash, bool *own_req
#define TOA_SYN_RECV_ARGS sk, skb, req, dst, req_unhash, own_req
#define toa_own_req() (*own_req)
#else
#define TOA_SYN_RECV_PARAMS struct sock *sk, struct sk_buff *skb,		\
	struct request_sock *req, struct dst_entry *dst
#define TOA_SYN_RECV_ARGS sk, skb, req, dst
#define toa_own_req() true
#endif

/* TCP_ULP (4.13): older kernels have no ULPs, and never see the option. */
#include <linux/tcp.h>
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

/*
 * setsockopt: 5.9 passes the option value as a sockptr_t. RHEL 8.10 carries
 * linux/sockptr.h, but its proto_ops.setsockopt still takes char __user *.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(5, 9, 0)
#define TOA_SETSOCKOPT_PARAMS struct socket *sock, int level, int optname,	\
	sockptr_t optval, unsigned int optlen
#else
#define TOA_SETSOCKOPT_PARAMS struct socket *sock, int level, int optname,	\
	char __user *optval, unsigned int optlen
#endif
#define TOA_SETSOCKOPT_ARGS sock, level, optname, optval, optlen

/* 4.2 gave sock_create_kern() a network namespace. */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 2, 0)
#define toa_sock_create_kern(family, type, proto, res) \
	sock_create_kern(&init_net, family, type, proto, res)
#else
#define toa_sock_create_kern(family, type, proto, res) \
	sock_create_kern(family, type, proto, res)
#endif

/*
 * Waiting out callers of the module's functions at unload (toa_hooks.c).
 * toa_synchronize_atomic(): every CPU left any softirq, preempt- or
 * BH-disabled region it was in (4.20 folded RCU-sched and RCU-bh into RCU).
 * toa_synchronize_tasks(): every task that was preempted has since scheduled
 * voluntarily, returned to user space or idled. Without preemption a task can
 * be stopped between two instructions only by an interrupt, so the atomic
 * wait covers it.
 */
#include <linux/rcupdate.h>
/*
 * RHEL 8 (4.18) backported the 4.20 consolidation: 8.0 keeps synchronize_sched()
 * as a wrapper of synchronize_rcu(), 8.3 and later no longer declare it.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 20, 0) || TOA_RHEL_AT_LEAST(8, 0)
#define TOA_RCU_CONSOLIDATED
#endif
#if defined(TOA_RCU_CONSOLIDATED)
#define toa_synchronize_atomic() synchronize_rcu()
#else
#define toa_synchronize_atomic() do { synchronize_sched(); synchronize_rcu(); } while (0)
#endif
/*
 * Readers of the record table on the getname path. Since 4.20 a region with
 * preemption off is an RCU reader for call_rcu() and synchronize_rcu(), and
 * costs an increment where rcu_read_lock() is a call (preemptible RCU).
 */
#if defined(TOA_RCU_CONSOLIDATED)
#define toa_read_lock() rcu_read_lock_sched_notrace()
#define toa_read_unlock() rcu_read_unlock_sched_notrace()
#else
#define toa_read_lock() rcu_read_lock()
#define toa_read_unlock() rcu_read_unlock()
#endif

#if defined(CONFIG_TASKS_RCU)
#define toa_synchronize_tasks() synchronize_rcu_tasks()
#elif defined(CONFIG_PREEMPT) || defined(CONFIG_PREEMPTION)
#error "toa.ko unloads safely on a preemptible kernel only with CONFIG_TASKS_RCU"
#else
#define toa_synchronize_tasks() toa_synchronize_atomic()
#endif

/*
 * Module parameter lock: kernel_param_lock(mod) since 4.2; before it one
 * global lock. Taken when the module frees what a parameter's setter writes.
 */
#include <linux/moduleparam.h>
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 2, 0)
#define toa_param_lock() kernel_param_lock(THIS_MODULE)
#define toa_param_unlock() kernel_param_unlock(THIS_MODULE)
#else
#define toa_param_lock() __kernel_param_lock()
#define toa_param_unlock() __kernel_param_unlock()
#endif

/*
 * Waiting at unload without counting as uninterruptible sleep (no hung-task
 * report, no load average) where the kernel can: TASK_IDLE came with 4.2,
 * schedule_timeout_idle() with 4.6.
 */
#include <linux/delay.h>
#include <linux/sched.h>
/* for_each_process() moved to linux/sched/signal.h in 4.11 (toa_listeners.c). */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 11, 0)
#include <linux/sched/signal.h>
#endif
#if LINUX_VERSION_CODE >= KERNEL_VERSION(4, 6, 0)
#define toa_sleep_idle(ms) schedule_timeout_idle(msecs_to_jiffies(ms))
#else
#define toa_sleep_idle(ms) msleep(ms)
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
