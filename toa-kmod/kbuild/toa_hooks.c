// SPDX-License-Identifier: GPL-2.0-only
/*
 * Where toa.ko meets the TCP stack: per-socket function tables.
 *
 * A listening TCP socket of a user-space process gets module-owned copies of
 * its two tables when it calls listen():
 *   sock->ops                  (struct proto_ops)  getname wrapped: what
 *                              accept() and getpeername() answer;
 *   inet_csk(sk)->icsk_af_ops  (inet_connection_sock_af_ops)  syn_recv_sock
 *                              wrapped: the packet completing the handshake
 *                              (the ACK; the SYN for Fast Open; SYN cookies
 *                              too) is parsed and a record is made for the child.
 * The kernel copies sock->ops to every socket accept() creates (do_accept,
 * all versions); from 6.6 accept() even asks the *listener's* ops for the
 * child's address. Either way both accept() and later getpeername() calls on
 * a child reach toa_getname(). The first answer for a child without a record
 * puts the kernel's own table back on it: it can never get one (records are
 * made before the child can be accepted), so plain connections pay nothing
 * after accept(). Sockets with the kernel's tables are never touched.
 *
 * Why nothing can be skipped (the seed's kretprobes could be, under load):
 * every call through these tables is an ordinary indirect call the kernel
 * makes itself. No instance pool, no recursion guard, no probe that a softirq
 * on top of another probe would miss. The one probe left arms listeners:
 * inet_listen runs only in process context from listen(), never inside
 * another probe's handler, which is the only way a kprobe hit is dropped.
 * A listener that was not armed (opened before the module loaded, owned by
 * the kernel, or with tables another module replaced) makes no records: its
 * connections get the kernel's answer from start to end, never a mix.
 *
 * Kernel sockets (no file: iSCSI target, ocfs2, NFS, DLM, ...) are never
 * armed and never rewritten, and nothing is written past the length of the
 * kernel's own answer unless the caller is known to hold a sockaddr_storage:
 * callers asking with peer == 2 (do_accept(); SO_PEERNAME, into a char[128],
 * later a sockaddr_storage) and the getpeername syscall (checked by the
 * return address, once per call site).
 *
 * Unload with connections open and calls in flight, on every kernel from 3.10
 * to 7.x: the copies are heap memory that is never freed. At unload their
 * wrapped entries are set back to the kernel's functions, so every socket
 * that still points at a copy sees exactly the kernel's table from then on
 * and nothing has to be found or restored per socket. What remains is code:
 * each wrapper counts itself in and out (per CPU), and toa_wait_callers()
 * returns once the counts were equal before and unchanged after a wait for
 * (a) every CPU to leave softirq/atomic sections (RCU; sched-RCU before 4.20)
 * and (b) every preempted task to schedule voluntarily (RCU Tasks on
 * preemptible kernels; implied by (a) without preemption). A caller that
 * loaded a wrapper's address but was preempted before entering it holds up
 * (b); one that entered shows in the counts; one that left has no further use
 * of a wrapper except through another counted entry. Blocking accept() never
 * runs module code while it sleeps: the copies keep the kernel's accept.
 *
 * Kernel by kernel (what differs, and why the argument above still holds):
 *  3.10 (RHEL/CentOS 7): getname takes `int *uaddr_len` (compat.h wraps it);
 *     syn_recv_sock has no own_req: a child it returns is queued for
 *     accept() unless the listener is closing (RHEL 7.9, like 4.4+, then
 *     frees it unaccepted, its record with it through the destructor);
 *     accept() copies the listener's ops to the child and asks the child's
 *     ops for the address. Kernels are built without preemption: wait (a)
 *     (sched-RCU) also ends every window between loading a table entry and
 *     calling it. No RCU Tasks is needed.
 *  4.x (Ubuntu 16.04-18.04, SLES 12/15, RHEL 8's 4.18): 4.4 adds own_req
 *     (a child that lost the race is freed unaccepted: no record); 4.17
 *     makes getname return the length. Still no preemption in distro
 *     kernels but low-latency flavours; where CONFIG_PREEMPT is set, RCU
 *     Tasks is used: it exists from 3.18, but before 4.14 only the RCU
 *     torture test selects it, and compat.h refuses a preemptible kernel
 *     without it (by 4.14 the function tracer selects it on CONFIG_PREEMPT).
 *     Before 4.20 RCU-sched and RCU are separate: both are waited for
 *     (RHEL 8 backported the consolidation: compat.h).
 *  5.x (Debian 11, Ubuntu 20.04/22.04, RHEL 9): 5.8 runs cgroup getpeername
 *     programs inside inet_getname, which the wrapper calls, so they still
 *     run; 5.16 takes the socket lock there: the wrapper may sleep, which
 *     is why it is counted in and out rather than covered by RCU alone.
 *  6.x (Debian 12/13, Ubuntu 24.04): PREEMPT_DYNAMIC kernels are
 *     preemptible: RCU Tasks (b) covers a caller preempted between loading
 *     a wrapper's address and entering it. From 6.6 accept() takes the
 *     listener's ops once and calls its getname for the child: the
 *     listener's copy wraps getname, so the answer is rewritten there too.
 *     PREEMPT_RT kernels sleep on spinlocks inside the wrappers: counted.
 *  7.x: syn_recv_sock gains opt_child_init (also backported to stable
 *     kernels; Kbuild reads the header); the syscalls and io_uring ask for
 *     the peer through do_getsockname(), recognised as holding a
 *     sockaddr_storage. Nothing else changes.
 */
#include <linux/kmemleak.h>
/* KSYM_SYMBOL_LEN needs MODULE_NAME_LEN, which kallsyms.h lacks on 3.10-4.15. */
#include <linux/module.h>
#include <linux/kallsyms.h>
#include <linux/kprobes.h>
#include <linux/net.h>
#include <linux/socket.h>
#include <linux/tcp.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in6.h>
#include <linux/if_ether.h>
#include <linux/delay.h>
#include <net/inet_connection_sock.h>
#include <net/inet_common.h>
#include <net/ipv6.h>
#include "toa.h"

/* The kernel's tables of one address family and the module's copies of them. */
struct toa_family {
	const struct proto_ops *orig_ops;
	const struct inet_connection_sock_af_ops *orig_af;
	struct toa_tables *copy;
};

/* Never freed: sockets keep pointing here after the module is gone. */
struct toa_tables {
	struct proto_ops ops;
	struct inet_connection_sock_af_ops af;
};

static struct toa_family toa_v4, toa_v6;
static bool toa_going;

/* --- counting callers in and out ------------------------------------------ */

DEFINE_PER_CPU(struct toa_calls, toa_calls);

static void toa_calls_sum(unsigned long *in, unsigned long *out)
{
	int cpu;

	*in = *out = 0;
	for_each_possible_cpu(cpu) {
		*in += READ_ONCE(per_cpu_ptr(&toa_calls, cpu)->in);
		*out += READ_ONCE(per_cpu_ptr(&toa_calls, cpu)->out);
	}
}

/* See the top of this file for why this is enough on every kernel. */
static void toa_wait_callers(void)
{
	unsigned long in, out, in2, out2;

	for (;;) {
		toa_calls_sum(&in, &out);
		if (in != out) {
			msleep(10);
			continue;
		}
		toa_synchronize_atomic();
		toa_synchronize_tasks();
		toa_calls_sum(&in2, &out2);
		if (in2 == in && out2 == out)
			return;
	}
}

/* --- handshake ---------------------------------------------------------- */

static void toa_proxy_endpoint(const struct sk_buff *skb, const struct tcphdr *th,
			       struct toa_endpoint *proxy)
{
	memset(proxy, 0, sizeof(*proxy));
	proxy->port = th->source;
	if (skb->protocol == htons(ETH_P_IP)) {
		proxy->family = 4;
		memcpy(proxy->addr, &ip_hdr(skb)->saddr, 4);
	} else {
		proxy->family = 6;
		memcpy(proxy->addr, &ipv6_hdr(skb)->saddr, 16);
	}
}

static void toa_handshake(const struct sock *listener, struct sock *child,
			  const struct sk_buff *skb)
{
	const struct tcphdr *th = tcp_hdr(skb);
	struct toa_endpoint client, proxy;
	size_t optlen;
	int rc;

	/* The stack checked doff and pulled the whole header before getting here. */
	optlen = th->doff > 5 ? (size_t)th->doff * 4 - sizeof(*th) : 0;
	rc = toa_scan_options((const __u8 *)(th + 1), optlen, READ_ONCE(toa_formats), &client);
	if (rc != TOA_SCAN_FOUND) {
		toa_count(TOA_SYN_RECV_SOCK_NO_TOA);
		if (rc >= TOA_SCAN_MALFORMED)
			toa_count(TOA_OPTIONS_MALFORMED);
		return;
	}
	if (!toa_port_honoured(inet_sk(listener)->inet_num)) {
		toa_count(TOA_SYN_RECV_SOCK_NO_TOA);
		toa_count(TOA_SYN_RECV_SOCK_OTHER_PORT);
		return;
	}
	toa_proxy_endpoint(skb, th, &proxy);
	if (!toa_trusted(&proxy)) {
		toa_count(TOA_SYN_RECV_SOCK_NO_TOA);
		toa_count(TOA_SYN_RECV_SOCK_UNTRUSTED);
		return;
	}
	toa_count(TOA_SYN_RECV_SOCK_TOA);
	toa_table_insert(child, &client, &proxy);
}

static struct sock *toa_syn_recv(const struct toa_family *f, TOA_SYN_RECV_PARAMS)
{
	struct sock *child;

	toa_enter();
	child = f->orig_af->syn_recv_sock(TOA_SYN_RECV_ARGS);
	if (child) {
		/* The child was cloned from the listener: it takes the kernel's table. */
		if (inet_csk(child)->icsk_af_ops == &f->copy->af)
			inet_csk(child)->icsk_af_ops = f->orig_af;
		/* A child another CPU won the race for is freed, never accepted. */
		if (toa_own_req())
			toa_handshake(sk, child, skb);
	}
	toa_leave();
	return child;
}

static struct sock *toa_syn_recv4(TOA_SYN_RECV_PARAMS)
{
	return toa_syn_recv(&toa_v4, TOA_SYN_RECV_ARGS);
}

static struct sock *toa_syn_recv6(TOA_SYN_RECV_PARAMS)
{
	return toa_syn_recv(&toa_v6, TOA_SYN_RECV_ARGS);
}

/* --- accept() / getpeername() -------------------------------------------- */

/*
 * Names the getpeername syscall's body has had: sys_, SyS_, SYSC_, __sys_,
 * __do_sys_, ...; newer kernels route it and io_uring through do_getsockname().
 * All of them answer from a struct sockaddr_storage on their own stack.
 */
static bool toa_is_getpeername_symbol(const char *name)
{
	static const char *const prefixes[] = {
		"sys_", "SyS_", "SYSC_", "do_sys_", "se_sys_", "x64_sys_", "arm64_sys_",
	};
	size_t i, n;

	while (*name == '_')
		name++;
	n = strlen("do_getsockname");
	if (!strncmp(name, "do_getsockname", n) && (name[n] == '\0' || name[n] == '.'))
		return true;
	for (i = 0; i < ARRAY_SIZE(prefixes); i++) {
		n = strlen(prefixes[i]);
		if (strncmp(name, prefixes[i], n))
			continue;
		name += n;
		n = strlen("getpeername");
		return !strncmp(name, "getpeername", n) && (name[n] == '\0' || name[n] == '.');
	}
	return false;
}

/*
 * True when the caller's buffer holds a sockaddr_storage: do_accept() asks with
 * peer == 2, and so does SO_PEERNAME (into a char[128], a sockaddr_storage
 * in newer kernels); getpeername() is recognised by the call site.
 */
static bool toa_caller_has_storage(int peer, unsigned long site)
{
	static unsigned long getpeername_site;
	char name[KSYM_SYMBOL_LEN];

	if (peer == 2)
		return true;
	if (site == READ_ONCE(getpeername_site))
		return true;
	sprint_symbol_no_offset(name, site);
	if (!toa_is_getpeername_symbol(name))
		return false;
	WRITE_ONCE(getpeername_site, site);
	return true;
}

/* Puts the kernel's table back on a socket that will never have a record. */
static void toa_disarm(struct socket *sock, const struct toa_family *f)
{
	cmpxchg(&sock->ops, (const struct proto_ops *)&f->copy->ops, f->orig_ops);
}

/*
 * Whether the kernel's answer names the proxy the record was made for. Word
 * compares and fixed-size copies: the kernel's memcmp walks bytes, and this
 * runs on every call (it is what the getname budget is spent on).
 */
static __always_inline bool toa_names_proxy(const struct toa_record *rec,
					    const struct sockaddr *uaddr)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)uaddr;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)uaddr;

	if (uaddr->sa_family == AF_INET)
		return sin->sin_port == rec->proxy.port &&
		       sin->sin_addr.s_addr == rec->proxy_addr.s6_addr32[0];
	return sin6->sin6_port == rec->proxy.port &&
	       ipv6_addr_equal(&sin6->sin6_addr, &rec->proxy_addr);
}

static __always_inline void toa_copy_answer(struct sockaddr *uaddr,
					    const struct toa_record *rec)
{
	if (rec->answer_len == sizeof(struct sockaddr_in))
		memcpy(uaddr, rec->answer, sizeof(struct sockaddr_in));
	else
		memcpy(uaddr, rec->answer, sizeof(struct sockaddr_in6));
}

/*
 * The rare answers: a socket whose family changed since the handshake
 * (IPV6_ADDRFORM), an answer that is not the recorded proxy, or an IPv6
 * client on an AF_INET socket for a caller that may not have room for it.
 * Out of line, so the common path carries no locals to zero or guard.
 */
static noinline int toa_answer_slow(struct sock *sk, struct sockaddr *uaddr, int n,
				    int peer, unsigned long site)
{
	struct toa_endpoint client, proxy;
	const struct toa_record *rec;
	size_t cap = n;
	int rewritten;

	toa_read_lock();
	rec = toa_table_find(sk);
	if (rec) {
		client = rec->client;
		proxy = rec->proxy;
	}
	toa_read_unlock();
	if (!rec)
		return n;
	/* Only the AF_INET socket + IPv6 client case answers longer than the kernel. */
	if (client.family == 6 && sk->sk_family == AF_INET) {
		if (!toa_caller_has_storage(peer, site)) {
			pr_info_once("IPv6 client on an AF_INET socket asked for by %pS: kernel's answer kept, its buffer is not known to hold a sockaddr_in6\n",
				     (void *)site);
			toa_count(TOA_GETNAME_TOA_UNFIT);
			return n;
		}
		cap = sizeof(struct sockaddr_storage);
	}
	rewritten = toa_rewrite_peer(sk->sk_family, uaddr, n, cap, &client, &proxy);
	if (rewritten < 0) {
		toa_count(TOA_GETNAME_TOA_MISMATCH);
		return n;
	}
	toa_count(TOA_GETNAME_TOA_OK);
	return rewritten;
}

/* The kernel's answer `n` (a length or an errno) becomes the client's. */
static __always_inline int toa_answer(const struct toa_family *f, struct socket *sock,
				      struct sockaddr *uaddr, int n, int peer,
				      unsigned long site)
{
	const struct toa_record *rec;
	struct sock *sk = sock->sk;

#ifdef TOA_TEST_NO_REWRITE
	/* Test-only build (see Kbuild): the kernel's own answer, always. */
	return n;
#endif
	if (n < 0 || !peer || !sk)
		return n;
	toa_read_lock();
	rec = toa_table_find(sk);
	if (!rec) {
		toa_read_unlock();
		toa_count(TOA_GETNAME_TOA_EMPTY);
		toa_disarm(sock, f);
		return n;
	}
	if (!sock->file) {
		toa_read_unlock();
		toa_count(TOA_GETNAME_KERNEL_SOCKET);
		return n;
	}
	/* The common case: the answer was worked out at the handshake. */
	if (likely(rec->answer_len && uaddr->sa_family == rec->answer_family &&
		   toa_names_proxy(rec, uaddr) && rec->answer_len <= n)) {
		n = rec->answer_len;
		toa_copy_answer(uaddr, rec);
		toa_read_unlock();
		toa_count(TOA_GETNAME_TOA_OK);
		return n;
	}
	toa_read_unlock();
	return toa_answer_slow(sk, uaddr, n, peer, site);
}

static int toa_getname4(TOA_GETNAME_PARAMS)
{
	int n;

	toa_enter();
	/* A direct call where the table holds the usual function: no retpoline. */
	if (likely(toa_v4.orig_ops->getname == inet_getname))
		n = toa_call_getname_fn(inet_getname);
	else
		n = toa_call_getname(toa_v4.orig_ops);
	n = toa_answer(&toa_v4, sock, uaddr, n, peer, _RET_IP_);
	toa_leave();
	return toa_getname_return(n);
}

static int toa_getname6(TOA_GETNAME_PARAMS)
{
	int n;

	toa_enter();
	n = toa_call_getname(toa_v6.orig_ops);
	n = toa_answer(&toa_v6, sock, uaddr, n, peer, _RET_IP_);
	toa_leave();
	return toa_getname_return(n);
}

/*
 * IPV6_ADDRFORM turns an IPv4-mapped AF_INET6 socket into an AF_INET one and
 * gives it the kernel's IPv4 table: a socket with a record takes ours instead.
 */
static int toa_setsockopt6(TOA_SETSOCKOPT_PARAMS)
{
	struct toa_endpoint client, proxy;
	bool found;
	int err;

	toa_enter();
	err = toa_v6.orig_ops->setsockopt(TOA_SETSOCKOPT_ARGS);
	if (!err && level == SOL_IPV6 && optname == IPV6_ADDRFORM && sock->sk &&
	    !READ_ONCE(toa_going)) {
		rcu_read_lock();
		found = toa_table_lookup(sock->sk, &client, &proxy);
		rcu_read_unlock();
		if (found)
			cmpxchg(&sock->ops, toa_v4.orig_ops,
				(const struct proto_ops *)&toa_v4.copy->ops);
	}
	toa_leave();
	return err;
}

/* --- arming listeners ---------------------------------------------------- */

/*
 * The kernel's own table, or a copy that an earlier load of this module left
 * behind (restored at its unload: the same bytes). Anything else belongs to
 * another module and is left alone.
 */
static bool toa_is_kernel_table(const void *table, const void *orig, size_t size)
{
	return table == orig || !memcmp(table, orig, size);
}

static void toa_arm(struct socket *sock)
{
	const struct inet_connection_sock_af_ops *af;
	const struct proto_ops *ops;
	struct sock *sk = sock->sk;
	struct inet_connection_sock *icsk;
	const struct toa_family *f;

	if (!sk || sock->type != SOCK_STREAM || sk->sk_protocol != IPPROTO_TCP)
		return;
	if (!sock->file) {
		toa_count(TOA_LISTEN_KERNEL_SOCKET);
		return;
	}
	f = sk->sk_family == AF_INET ? &toa_v4 : sk->sk_family == AF_INET6 ? &toa_v6 : NULL;
	if (!f || !f->copy || READ_ONCE(toa_going))
		return;
	icsk = inet_csk(sk);
	if (READ_ONCE(sock->ops) == &f->copy->ops)
		return;
	ops = READ_ONCE(sock->ops);
	af = READ_ONCE(icsk->icsk_af_ops);
	if (!toa_is_kernel_table(ops, f->orig_ops, sizeof(*ops)) ||
	    !toa_is_kernel_table(af, f->orig_af, sizeof(*af))) {
		toa_count(TOA_LISTEN_FOREIGN_TABLE);
		return;
	}
	/* Handshakes first: a record never exists on a socket whose answers are the kernel's. */
	WRITE_ONCE(icsk->icsk_af_ops, &f->copy->af);
	cmpxchg(&sock->ops, ops, (const struct proto_ops *)&f->copy->ops);
	toa_count(TOA_LISTEN_ARMED);
}

/* Before inet_listen() runs: no accept() can be waiting on the socket yet. */
static int toa_listen_pre(struct kprobe *kp, struct pt_regs *regs)
{
	toa_arm((struct socket *)toa_arg1(regs));
	return 0;
}

static struct kprobe toa_listen_probe = {
	.symbol_name = "inet_listen",
	.pre_handler = toa_listen_pre,
};

unsigned long toa_hooks_missed(void)
{
	return toa_listen_probe.nmissed;
}

/* --- the copies ----------------------------------------------------------- */

/* The kernel's tables for `family`, read off a socket of its own. */
static int toa_family_init(struct toa_family *f, int family)
{
	struct socket *sock;
	int err;

	err = toa_sock_create_kern(family, SOCK_STREAM, IPPROTO_TCP, &sock);
	if (err)
		return err;
	f->orig_ops = sock->ops;
	f->orig_af = inet_csk(sock->sk)->icsk_af_ops;
	sock_release(sock);

	f->copy = kmalloc(sizeof(*f->copy), GFP_KERNEL);
	if (!f->copy)
		return -ENOMEM;
	/* Deliberately never freed (see the top of this file). */
	kmemleak_not_leak(f->copy);
	/* Byte copies, padding included: a restored copy compares equal (toa_arm). */
	memcpy(&f->copy->ops, f->orig_ops, sizeof(f->copy->ops));
	memcpy(&f->copy->af, f->orig_af, sizeof(f->copy->af));
	if (family == AF_INET) {
		f->copy->ops.getname = toa_getname4;
		f->copy->af.syn_recv_sock = toa_syn_recv4;
	} else {
		f->copy->ops.getname = toa_getname6;
		f->copy->ops.setsockopt = toa_setsockopt6;
		f->copy->af.syn_recv_sock = toa_syn_recv6;
	}
	return 0;
}

/* Sockets still pointing at the copy get exactly the kernel's table. */
static void toa_family_restore(struct toa_family *f)
{
	if (!f->copy)
		return;
	WRITE_ONCE(f->copy->ops.getname, f->orig_ops->getname);
	WRITE_ONCE(f->copy->ops.setsockopt, f->orig_ops->setsockopt);
	WRITE_ONCE(f->copy->af.syn_recv_sock, f->orig_af->syn_recv_sock);
}

int toa_hooks_init(void)
{
	int err;

	err = toa_family_init(&toa_v4, AF_INET);
	if (err) {
		pr_err("cannot read the kernel's IPv4 TCP tables: %d\n", err);
		return err;
	}
	/* IPv6 may be disabled (ipv6.disable=1): IPv4 listeners still work. */
	err = toa_family_init(&toa_v6, AF_INET6);
	if (err) {
		pr_info("IPv6 TCP unavailable (%d): IPv4 listeners only\n", err);
		toa_v6.copy = NULL;
	}
	err = register_kprobe(&toa_listen_probe);
	if (err) {
		pr_err("cannot probe %s: %d\n", toa_listen_probe.symbol_name, err);
		return err;
	}
	pr_info("listeners opened from now on honour TOA; ones already listening keep the kernel's answer until they listen again\n");
	return 0;
}

void toa_hooks_exit(void)
{
	/* Waits for a running handler: no listener is armed after this. */
	unregister_kprobe(&toa_listen_probe);
	WRITE_ONCE(toa_going, true);
	toa_family_restore(&toa_v4);
	toa_family_restore(&toa_v6);
	toa_table_release_sockets();
	toa_wait_callers();
}
