// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test-only, never shipped: what another module or a stalled CPU can do to
 * toa.ko, on demand of the VM lab's attack scenarios. One command per write
 * to /proc/toa_lab_hooks:
 *
 *   chain FD               socket FD of the writing process gets a destructor
 *                          chained after the one it has (toa's, on a TOA
 *                          connection), the way TLS device offload does it:
 *                          the old one saved, called from ours at close.
 *   delay-insert PORT MS   the next record toa.ko makes for a connection to
 *                          local port PORT waits MS ms first (kprobe on
 *                          toa_table_insert(), in the handshake's softirq).
 *   delay-exit MS          the next rmmod spins MS ms when toa's exit has
 *                          unregistered its kprobe (kretprobe on
 *                          unregister_kprobe(), task "rmmod"): unload held
 *                          after that RCU grace period, before the tables are
 *                          put back, so a handshake can be inside toa's code
 *                          while the rest of the unload runs.
 *   delay-task FN TID MS   task TID's next call of kernel function FN spins
 *                          MS ms at entry: tcp_v4_connect(), and an AF_INET6
 *                          socket connecting to a mapped address holds its
 *                          lock with ipv6_mapped installed; tcp_v6_connect(),
 *                          and it holds its lock before anything is installed.
 *   clear                  removes every probe.
 *
 * A kprobe handler cannot sleep: the delays spin, which is what a slow or
 * preempted CPU looks like to the rest of the kernel. Reading the
 * file gives "name=value" pairs, with the delays' start and end times
 * (ktime_get_mono_fast_ns, one clock for every CPU), so a scenario can check
 * that the windows it meant to overlap did.
 */
#include <linux/module.h>
#include <linux/kprobes.h>
#include <linux/net.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/uaccess.h>
#include <linux/timekeeping.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <net/sock.h>
#include <net/inet_sock.h>

#define MAX_CHAINED 16
#define MAX_DELAY_MS 5000

/* --- chained destructors -------------------------------------------------- */

static struct {
	struct sock *sk;
	void (*saved)(struct sock *sk);
} chained[MAX_CHAINED];
static DEFINE_SPINLOCK(chain_lock);
static atomic_t chained_open = ATOMIC_INIT(0);
static atomic_t chain_called = ATOMIC_INIT(0);

static void lab_chained_destruct(struct sock *sk)
{
	void (*saved)(struct sock *sk) = NULL;
	unsigned long flags;
	int i;

	spin_lock_irqsave(&chain_lock, flags);
	for (i = 0; i < MAX_CHAINED; i++) {
		if (chained[i].sk == sk) {
			saved = chained[i].saved;
			chained[i].sk = NULL;
			break;
		}
	}
	spin_unlock_irqrestore(&chain_lock, flags);
	atomic_inc(&chain_called);
	if (saved)
		saved(sk);
	atomic_dec(&chained_open);
	/* Test-only: the lab never unloads this module with sockets chained. */
	module_put(THIS_MODULE);
}

static int chain_fd(int fd)
{
	struct socket *sock;
	struct sock *sk;
	unsigned long flags;
	int err = 0, i, slot = -1;

	sock = sockfd_lookup(fd, &err);
	if (!sock)
		return err;
	sk = sock->sk;
	if (!sk || sk->sk_protocol != IPPROTO_TCP) {
		err = -EINVAL;
		goto out;
	}
	if (!try_module_get(THIS_MODULE)) {
		err = -EBUSY;
		goto out;
	}
	lock_sock(sk);
	spin_lock_irqsave(&chain_lock, flags);
	for (i = 0; i < MAX_CHAINED; i++) {
		if (!chained[i].sk) {
			slot = i;
			break;
		}
	}
	if (slot >= 0) {
		chained[slot].sk = sk;
		chained[slot].saved = sk->sk_destruct;
		sk->sk_destruct = lab_chained_destruct;
		atomic_inc(&chained_open);
	}
	spin_unlock_irqrestore(&chain_lock, flags);
	release_sock(sk);
	if (slot < 0) {
		module_put(THIS_MODULE);
		err = -ENOSPC;
	}
out:
	sockfd_put(sock);
	return err;
}

/* --- delays ----------------------------------------------------------------- */

struct delay {
	unsigned int ms;
	atomic_t shots;
	unsigned int done;
	u64 begin, end;
};

/*
 * Spins on the clock the times are reported in: under emulation udelay()'s
 * calibration is off by any factor, and the scenarios compare the windows.
 */
static void spin(struct delay *d)
{
	u64 begin = ktime_get_mono_fast_ns();
	u64 until = begin + (u64)READ_ONCE(d->ms) * NSEC_PER_MSEC;

	WRITE_ONCE(d->begin, begin);
	while (ktime_get_mono_fast_ns() < until)
		cpu_relax();
	WRITE_ONCE(d->end, ktime_get_mono_fast_ns());
	WRITE_ONCE(d->done, d->done + 1);
}

static void arm(struct delay *d, unsigned int ms)
{
	WRITE_ONCE(d->ms, ms);
	WRITE_ONCE(d->begin, 0);
	WRITE_ONCE(d->end, 0);
	atomic_set(&d->shots, 1);
}

static struct delay insert_delay, exit_delay, task_delay;
static u16 insert_port;
static pid_t task_tid;
static char task_fn[128];

static int insert_pre(struct kprobe *p, struct pt_regs *regs)
{
	struct sock *sk = (struct sock *)regs_get_kernel_argument(regs, 0);

	if (sk && inet_sk(sk)->inet_num == READ_ONCE(insert_port) &&
	    atomic_dec_if_positive(&insert_delay.shots) >= 0)
		spin(&insert_delay);
	return 0;
}

static int exit_ret(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	if (!strcmp(current->comm, "rmmod") && atomic_dec_if_positive(&exit_delay.shots) >= 0)
		spin(&exit_delay);
	return 0;
}

static int task_pre(struct kprobe *p, struct pt_regs *regs)
{
	if (current->pid == READ_ONCE(task_tid) && atomic_dec_if_positive(&task_delay.shots) >= 0)
		spin(&task_delay);
	return 0;
}

static struct kprobe insert_probe, task_probe;
static struct kretprobe exit_probe;
static bool insert_on, exit_on, task_on;

static int probe_on(struct kprobe *kp, bool *on, const char *symbol,
		    kprobe_pre_handler_t pre)
{
	int err;

	if (*on)
		return 0;
	memset(kp, 0, sizeof(*kp));
	kp->symbol_name = symbol;
	kp->pre_handler = pre;
	err = register_kprobe(kp);
	if (!err)
		*on = true;
	return err;
}

static int exit_probe_on(void)
{
	int err;

	if (exit_on)
		return 0;
	memset(&exit_probe, 0, sizeof(exit_probe));
	exit_probe.kp.symbol_name = "unregister_kprobe";
	exit_probe.handler = exit_ret;
	exit_probe.maxactive = 4;
	err = register_kretprobe(&exit_probe);
	if (!err)
		exit_on = true;
	return err;
}

static void probes_off(void)
{
	if (insert_on)
		unregister_kprobe(&insert_probe);
	if (task_on)
		unregister_kprobe(&task_probe);
	if (exit_on)
		unregister_kretprobe(&exit_probe);
	insert_on = task_on = exit_on = false;
}

/* --- /proc/toa_lab_hooks ---------------------------------------------------- */

static DEFINE_MUTEX(command_lock);

/* The task delay on function `fn`: the probe moves when the function does. */
static int task_delay_on(const char *fn, unsigned int tid, unsigned int ms)
{
	if (task_on && strcmp(task_fn, fn)) {
		unregister_kprobe(&task_probe);
		task_on = false;
	}
	strscpy(task_fn, fn, sizeof(task_fn));
	WRITE_ONCE(task_tid, tid);
	arm(&task_delay, ms);
	return probe_on(&task_probe, &task_on, task_fn, task_pre);
}

static int command(char *line)
{
	char fn[128];
	unsigned int a, ms;
	int fd;

	if (sscanf(line, "chain %d", &fd) == 1)
		return chain_fd(fd);
	if (sscanf(line, "delay-insert %u %u", &a, &ms) == 2 && a <= 65535 && ms <= MAX_DELAY_MS) {
		WRITE_ONCE(insert_port, a);
		arm(&insert_delay, ms);
		return probe_on(&insert_probe, &insert_on, "toa_table_insert", insert_pre);
	}
	if (sscanf(line, "delay-exit %u", &ms) == 1 && ms <= MAX_DELAY_MS) {
		arm(&exit_delay, ms);
		return exit_probe_on();
	}
	if (sscanf(line, "delay-task %127s %u %u", fn, &a, &ms) == 3 && ms <= MAX_DELAY_MS)
		return task_delay_on(fn, a, ms);
	if (!strcmp(strim(line), "clear")) {
		probes_off();
		return 0;
	}
	return -EINVAL;
}

static ssize_t hooks_write(struct file *file, const char __user *buf, size_t len, loff_t *off)
{
	char line[64];
	int err;

	if (len >= sizeof(line))
		return -EINVAL;
	if (copy_from_user(line, buf, len))
		return -EFAULT;
	line[len] = '\0';
	mutex_lock(&command_lock);
	err = command(line);
	mutex_unlock(&command_lock);
	return err ? err : len;
}

static void show_delay(struct seq_file *m, const char *name, const struct delay *d)
{
	seq_printf(m, " %s_done=%u %s_begin=%llu %s_end=%llu", name, READ_ONCE(d->done), name,
		   READ_ONCE(d->begin), name, READ_ONCE(d->end));
}

static int hooks_show(struct seq_file *m, void *v)
{
	seq_printf(m, "chained_open=%d chain_called=%d", atomic_read(&chained_open),
		   atomic_read(&chain_called));
	show_delay(m, "insert", &insert_delay);
	show_delay(m, "exit", &exit_delay);
	show_delay(m, "task", &task_delay);
	seq_printf(m, " now=%llu\n", ktime_get_mono_fast_ns());
	return 0;
}

static int hooks_open(struct inode *inode, struct file *file)
{
	return single_open(file, hooks_show, NULL);
}

static const struct proc_ops hooks_ops = {
	.proc_open = hooks_open,
	.proc_read = seq_read,
	.proc_lseek = seq_lseek,
	.proc_release = single_release,
	.proc_write = hooks_write,
};

static int __init lab_hooks_init(void)
{
	if (!proc_create("toa_lab_hooks", 0600, NULL, &hooks_ops))
		return -ENOMEM;
	return 0;
}

static void __exit lab_hooks_exit(void)
{
	remove_proc_entry("toa_lab_hooks", NULL);
	probes_off();
}

module_init(lab_hooks_init);
module_exit(lab_hooks_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("toa VM lab: chained destructors and widened race windows, on demand");
