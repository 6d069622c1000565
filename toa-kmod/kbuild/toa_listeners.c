// SPDX-License-Identifier: GPL-2.0-only
/*
 * Listeners that were open before toa.ko loaded, and listeners it cannot arm.
 *
 * Services are running when operators install toa: at load, every TCP
 * listener that belongs to a process is armed the way listen() arms new ones
 * (toa_arm(), socket locked). They are found through the processes' file
 * tables rather than the kernel's listening hash: the walk needs no
 * per-version layout of that hash, finds exactly the sockets that belong to
 * user space (kernel listeners have no file), and knows which process holds a
 * listener it could not arm, which is what the operator needs to know.
 *
 * What is covered from the load on: every connection such a listener
 * completes after it is armed. Connections it completed before (queued or
 * accepted) keep the kernel's answer for their whole life; so does the one
 * connection an accept() call that was already waiting hands out, because
 * accept() gave that socket the listener's old table before it slept.
 *
 * A listening socket held only outside any file table (in flight in an
 * SCM_RIGHTS message, or in an io_uring's registered files after its fd was
 * closed) is not found; it is armed if it listens again.
 */
#include <linux/fdtable.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <linux/net.h>
#include <linux/sched.h>
#include <linux/vmalloc.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <net/net_namespace.h>
#include <net/inet_sock.h>
#include <net/tcp_states.h>
#include "toa.h"

/* Listening sockets found in one walk; more are armed when they listen again. */
#define TOA_WALK_MAX 8192

struct toa_found {
	struct file *file;
	pid_t pid;
	char comm[TASK_COMM_LEN];
};

static void toa_copy_comm(char *to, const char *from)
{
	memcpy(to, from, TASK_COMM_LEN);
	to[TASK_COMM_LEN - 1] = '\0';
}

struct toa_walk {
	struct toa_found *found;
	unsigned int n;
	bool full;
	struct task_struct *task;
};

static unsigned int toa_armed_at_load;

/* A socket's file, told apart from any other by its file system (sockfs). */
static struct socket *toa_socket_of(struct file *file)
{
	struct inode *inode = file_inode(file);

	if (!S_ISSOCK(inode->i_mode) || inode->i_sb->s_magic != SOCKFS_MAGIC)
		return NULL;
	return SOCKET_I(inode);
}

/* Under the task's file table lock: keep a reference to each TCP listener. */
static int toa_walk_fd(const void *arg, struct file *file, unsigned int fd)
{
	struct toa_walk *w = (struct toa_walk *)arg;
	struct socket *sock = toa_socket_of(file);
	struct sock *sk;
	unsigned int i;

	if (!sock || sock->type != SOCK_STREAM)
		return 0;
	sk = READ_ONCE(sock->sk);
	if (!sk || sk->sk_protocol != IPPROTO_TCP || READ_ONCE(sk->sk_state) != TCP_LISTEN)
		return 0;
	/* Forked workers share their parent's listeners: one entry each. */
	for (i = 0; i < w->n; i++)
		if (w->found[i].file == file)
			return 0;
	if (w->n == TOA_WALK_MAX) {
		w->full = true;
		return 1;
	}
	get_file(file);
	w->found[w->n].file = file;
	w->found[w->n].pid = task_tgid_nr(w->task);
	/* task_lock is held: get_task_comm() would take it again on older kernels. */
	toa_copy_comm(w->found[w->n].comm, w->task->comm);
	w->n++;
	return 0;
}

void toa_listeners_arm_existing(void)
{
	unsigned int i, armed = 0, foreign = 0;
	struct task_struct *p;
	struct toa_walk w = {};

	w.found = vzalloc(sizeof(*w.found) * TOA_WALK_MAX);
	if (!w.found) {
		pr_warn("no memory to look for listeners open at load: they keep the kernel's answer until they listen again\n");
		return;
	}
	rcu_read_lock();
	for_each_process(p) {
		/* task_lock keeps p->files from going away (as get_files_struct does). */
		task_lock(p);
		w.task = p;
		if (p->files)
			iterate_fd(p->files, 0, toa_walk_fd, &w);
		task_unlock(p);
		if (w.full)
			break;
	}
	rcu_read_unlock();

	for (i = 0; i < w.n; i++) {
		struct socket *sock = toa_socket_of(w.found[i].file);
		struct sock *sk = sock->sk;

		lock_sock(sk);
		if (sk->sk_state == TCP_LISTEN) {
			switch (toa_arm(sock)) {
			case TOA_ARM_ARMED:
				armed++;
				break;
			case TOA_ARM_FOREIGN_TABLE:
				foreign++;
				toa_listeners_note(sk, w.found[i].pid, w.found[i].comm,
						   "table replaced by another module");
				break;
			default:
				break;
			}
		}
		release_sock(sk);
		fput(w.found[i].file);
	}
	vfree(w.found);
	WRITE_ONCE(toa_armed_at_load, armed);
	if (w.full)
		pr_warn("more than %d listening sockets: the ones not reached keep the kernel's answer until they listen again\n",
			TOA_WALK_MAX);
	pr_info("armed %u listeners that were open at load: their new connections get the client from now on; connections they already had (and the next one of an accept() already waiting) keep the kernel's answer\n",
		armed);
	if (foreign)
		pr_warn("%u listeners could not be armed (another module replaced their tables): see /proc/net/toa_listeners\n",
			foreign);
}

unsigned int toa_listeners_armed_at_load(void)
{
	return READ_ONCE(toa_armed_at_load);
}

/* --- listeners toa could not arm, for the operator ------------------------- */

#define TOA_UNARMED_MAX 32

struct toa_unarmed {
	/* Odd while being written: readers copy again (a seqcount by hand). */
	unsigned int seq;
	pid_t pid;
	char comm[TASK_COMM_LEN];
	u16 family;
	u16 port;
	const char *why;
};

/*
 * The latest TOA_UNARMED_MAX, oldest overwritten; `toa status` shows them.
 * Lock-free: notes come from the listen probe, whose handler may run in
 * NMI-like context (int3), where no lock may be taken.
 */
static struct toa_unarmed toa_unarmed[TOA_UNARMED_MAX];
static atomic_t toa_nr_unarmed = ATOMIC_INIT(0);

void toa_listeners_note(const struct sock *sk, pid_t pid, const char *comm, const char *why)
{
	unsigned int n = (unsigned int)atomic_inc_return(&toa_nr_unarmed) - 1;
	struct toa_unarmed *u = &toa_unarmed[n % TOA_UNARMED_MAX];

	WRITE_ONCE(u->seq, u->seq + 1);
	smp_wmb();
	u->pid = pid;
	toa_copy_comm(u->comm, comm);
	u->family = sk->sk_family;
	u->port = inet_sk(sk)->inet_num;
	u->why = why;
	smp_wmb();
	WRITE_ONCE(u->seq, u->seq + 1);
}

void toa_listeners_unarmed(const struct sock *sk, struct task_struct *owner, const char *why)
{
	toa_listeners_note(sk, task_tgid_nr(owner), owner->comm, why);
}

/* A consistent copy of slot `i`, or false if writers kept it busy. */
static bool toa_unarmed_read(unsigned int i, struct toa_unarmed *out)
{
	const struct toa_unarmed *u = &toa_unarmed[i % TOA_UNARMED_MAX];
	unsigned int seq, tries;

	for (tries = 0; tries < 100; tries++) {
		seq = READ_ONCE(u->seq);
		smp_rmb();
		*out = *u;
		smp_rmb();
		if (!(seq & 1) && seq == READ_ONCE(u->seq))
			return true;
		cpu_relax();
	}
	return false;
}

/* One line per listener: pid, process name, family, local port, reason. */
static int toa_listeners_show(struct seq_file *seq, void *v)
{
	unsigned int i, n, total = (unsigned int)atomic_read(&toa_nr_unarmed);
	struct toa_unarmed u;

	n = min_t(unsigned int, total, TOA_UNARMED_MAX);
	seq_printf(seq, "armed_at_load: %u\n", toa_listeners_armed_at_load());
	seq_printf(seq, "unarmed: %u\n", total);
	for (i = total - n; i < total; i++) {
		if (!toa_unarmed_read(i, &u))
			continue;
		u.comm[TASK_COMM_LEN - 1] = '\0';
		seq_printf(seq, "pid=%d comm=%s family=%s port=%u reason=%s\n", u.pid, u.comm,
			   u.family == AF_INET6 ? "ipv6" : "ipv4", u.port, u.why ? u.why : "?");
	}
	return 0;
}

int toa_listeners_init(void)
{
	if (!toa_proc_create_single("toa_listeners", 0444, init_net.proc_net, toa_listeners_show))
		return -ENOMEM;
	return 0;
}

void toa_listeners_exit(void)
{
	remove_proc_entry("toa_listeners", init_net.proc_net);
}
