// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test-only, never shipped: an in-kernel TCP server for the VM lab, shaped
 * like the iSCSI target or ocfs2. A kernel thread accepts on `port` (an
 * AF_INET kernel socket, no file) and asks each connection for its peer with
 * a 16-byte sockaddr_in on its stack between guard bytes, as
 * iscsit_accept_np() does. /proc/toa_kernel_listener shows the last answer
 * and whether the guards survived: toa.ko must leave both alone, whatever
 * TOA the handshake carried.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/net.h>
#include <linux/in.h>
#include <linux/mutex.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <net/net_namespace.h>
#include <net/sock.h>

static int port = 8090;
module_param(port, int, 0444);
MODULE_PARM_DESC(port, "TCP port the kernel listener accepts on");

#define GUARD 0xa5

struct probe {
	u8 before[16];
	struct sockaddr_in sin;
	u8 after[16];
};

static struct socket *listener;
static struct task_struct *server;
static DEFINE_MUTEX(last_lock);
static char last[160] = "none\n";
static unsigned int accepted;

static bool guards_intact(const struct probe *p)
{
	size_t i;

	for (i = 0; i < sizeof(p->before); i++)
		if (p->before[i] != GUARD || p->after[i] != GUARD)
			return false;
	return true;
}

/* The peer of `sock` as an in-kernel server asks for it: 16 bytes, peer = 1. */
static int peer_of(struct socket *sock, struct probe *p)
{
	struct sockaddr *uaddr = (struct sockaddr *)&p->sin;
	int uaddr_len = sizeof(p->sin);
	int peer = 1;

	(void)uaddr_len;
	return toa_call_getname(sock->ops);
}

static int serve(void *unused)
{
	while (!kthread_should_stop()) {
		struct socket *conn;
		struct probe p;
		int n;

		if (kernel_accept(listener, &conn, 0)) {
			msleep(10);
			continue;
		}
		memset(&p, GUARD, sizeof(p));
		n = peer_of(conn, &p);
		mutex_lock(&last_lock);
		accepted++;
		snprintf(last, sizeof(last), "accepted=%u peer=%pI4:%u len=%d guards=%s\n",
			 accepted, &p.sin.sin_addr, ntohs(p.sin.sin_port), n,
			 guards_intact(&p) ? "intact" : "overwritten");
		mutex_unlock(&last_lock);
		sock_release(conn);
	}
	return 0;
}

static int show(struct seq_file *seq, void *v)
{
	mutex_lock(&last_lock);
	seq_puts(seq, last);
	mutex_unlock(&last_lock);
	return 0;
}

static int __init kernel_listener_init(void)
{
	struct sockaddr_in sin = {
		.sin_family = AF_INET,
		.sin_port = htons(port),
		.sin_addr.s_addr = htonl(INADDR_ANY),
	};
	int err;

	err = toa_sock_create_kern(AF_INET, SOCK_STREAM, IPPROTO_TCP, &listener);
	if (err)
		return err;
	listener->sk->sk_reuse = SK_CAN_REUSE;
	/* void *: the address parameter's type differs between kernels. */
	err = kernel_bind(listener, (void *)&sin, sizeof(sin));
	if (err)
		goto out_sock;
	err = kernel_listen(listener, 8);
	if (err)
		goto out_sock;
	if (!toa_proc_create_single("toa_kernel_listener", 0444, NULL, show)) {
		err = -ENOMEM;
		goto out_sock;
	}
	server = kthread_run(serve, NULL, "toa_klisten");
	if (IS_ERR(server)) {
		err = PTR_ERR(server);
		goto out_proc;
	}
	return 0;

out_proc:
	remove_proc_entry("toa_kernel_listener", NULL);
out_sock:
	sock_release(listener);
	return err;
}

static void __exit kernel_listener_exit(void)
{
	/* Wakes the thread out of accept; it then sees the stop request. */
	kernel_sock_shutdown(listener, SHUT_RDWR);
	kthread_stop(server);
	remove_proc_entry("toa_kernel_listener", NULL);
	sock_release(listener);
}

module_init(kernel_listener_init);
module_exit(kernel_listener_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("toa VM lab: an in-kernel TCP listener that asks for its peers with a 16-byte buffer");
