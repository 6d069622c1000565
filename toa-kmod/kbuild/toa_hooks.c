// SPDX-License-Identifier: GPL-2.0-only
/*
 * Where toa.ko meets the TCP stack: per-socket function tables.
 *
 * A listening TCP socket of a user-space process gets module-owned copies of
 * its two tables when it starts listening (probe on inet_csk_listen_start(),
 * socket locked, state checked), and so does every such listener already
 * open when the module loads (toa_listeners.c):
 *   sock->ops                  (struct proto_ops)  getname wrapped: what
 *                              accept() and getpeername() answer; setsockopt
 *                              wrapped: see "Tables that escape" below;
 *                              listen wrapped: see "What a socket inherits";
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
 * inet_csk_listen_start runs only in process context from listen(), never
 * inside another probe's handler, which is the only way a kprobe hit is
 * dropped (listen_probe_missed counts it: 0). A listener that was not armed
 * (owned by the kernel, or with tables another module replaced:
 * /proc/net/toa_listeners names its process) makes no records: its
 * connections get the kernel's answer from start to end, never a mix.
 *
 * Kernel sockets (no file: iSCSI target, ocfs2, NFS, DLM, ...) are never
 * armed and never rewritten, and nothing is written past the length of the
 * kernel's own answer unless the caller is known to hold a sockaddr_storage:
 * callers asking with peer == 2 (do_accept(); SO_PEERNAME, into a char[128],
 * later a sockaddr_storage) and the getpeername syscall, native or compat
 * (checked by the return address, once per call site).
 *
 * What a socket inherits. A record's socket has toa_sk_destruct() as its
 * destructor (toa_table.c). sk_clone_lock() copies it into every child, so a
 * socket that listens again after being a TOA connection (connect(AF_UNSPEC)
 * then listen()) drops its record and gets its destructor back first, in
 * our listen() wrapper, before any child can be cloned from it. Every socket
 * with a record has one of our tables (a table toa cannot wrap takes the
 * record away), so its listen() always comes through that wrapper.
 *
 * Tables that escape: the design decision. Anything may copy a socket's
 * tables *by value* and keep the copy where no unload can reach it. In the
 * kernel that is what a ULP does: kTLS (and espintcp) builds its own
 * proto_ops once, from the first socket that takes TCP_ULP after it loads.
 * If that socket is ours, every kTLS socket calls toa_getname() for good; if
 * it was not, a TOA socket that takes kTLS gets kTLS's table and would answer
 * with the proxy. So:
 *  - setsockopt on our table pins the module before any ULP runs on one of
 *    its sockets: a module reference that is never dropped, "pinned until
 *    reboot" in dmesg, `pinned: 1` in toa_stats, rmmod refused (in use).
 *    Upgrades and uninstalls then finish at the next boot (the installers
 *    and `toa status` say so). Tables are copied by value nowhere else in the
 *    kernel; a module of another vendor that does it is not covered.
 *  - after any setsockopt that replaced the table of a socket with a record
 *    (a ULP, IPV6_ADDRFORM), the socket gets a wrapped copy of its new table
 *    (made once per table, never freed), so its answers stay the client's.
 * Without a ULP, unloading stays possible and safe, as follows.
 *
 * Unload with connections open and calls in flight, on every kernel from 3.10
 * to 7.x: the copies are heap memory that is never freed. At unload their
 * wrapped entries are set back to the kernel's functions, so every socket
 * that still points at a copy sees exactly the kernel's table from then on
 * and nothing has to be found or restored per socket. Destructors are put
 * back under each record bucket's lock, after a flag that stops handshakes
 * from adding records to buckets already released. A destructor that another
 * module chained after ours (it saved toa_sk_destruct() and will call it) can
 * only be reached through that socket's close: unload waits for those
 * sockets to close instead of leaving them a pointer into freed code. What
 * remains is code: each wrapper counts itself in and out (per CPU), and
 * toa_wait_callers() returns once the counts were equal before and unchanged
 * after a wait for (a) every CPU to leave softirq/atomic sections (RCU;
 * sched-RCU before 4.20) and (b) every preempted task to schedule voluntarily
 * (RCU Tasks on preemptible kernels; implied by (a) without preemption). A
 * caller that loaded a wrapper's address but was preempted before entering
 * it holds up (b); one that entered shows in the counts; one that left has
 * no further use of a wrapper except through another counted entry. A
 * getpeername() waiting inside inet_getname() for its socket's lock holds
 * unload up for as long as the lock's owner keeps it (idle, reported every
 * 10 s): returning into freed text is the alternative. Blocking accept()
 * never runs module code while it sleeps: the copies keep the kernel's accept.
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
	/* The destructor the kernel gives this family's sockets. */
	void (*orig_destruct)(struct sock *sk);
};

/* Never freed: sockets keep pointing here after the module is gone. */
struct toa_tables {
	struct proto_ops ops;
	struct inet_connection_sock_af_ops af;
};

static struct toa_family toa_v4, toa_v6;
static bool toa_going;

static const struct toa_family *toa_family_of(const struct sock *sk)
{
	if (sk->sk_family == AF_INET)
		return &toa_v4;
	if (sk->sk_family == AF_INET6 && toa_v6.copy)
		return &toa_v6;
	return NULL;
}

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

/*
 * See the top of this file for why this is enough on every kernel. A caller
 * may be asleep inside (getname waits for its socket's lock since 5.16, for
 * as long as the lock's owner keeps it): unload waits for it, idle rather
 * than uninterruptible, and says what it waits for every 10 s.
 */
static void toa_wait_callers(void)
{
	unsigned long in, out, in2, out2;
	unsigned long since = jiffies;

	for (;;) {
		toa_calls_sum(&in, &out);
		if (in != out) {
			if (time_after(jiffies, since + 10 * HZ)) {
				pr_info("unload waits for %lu calls still inside toa (getpeername() waiting for a socket's lock)\n",
					in - out);
				since = jiffies;
			}
			toa_sleep_idle(10);
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
		/*
		 * Listeners never carry a record (toa_listen() drops it), so no
		 * child can inherit toa_sk_destruct() without one of its own; the
		 * relisten-accepted lab scenario tries.
		 */
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
		/* 32-bit processes on 64-bit kernels (int 0x80, compat arm64). */
		"ia32_sys_", "ia32_compat_sys_", "x32_compat_sys_", "compat_sys_",
		"do_compat_sys_", "se_compat_sys_", "arm64_compat_sys_",
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

/* --- tables other subsystems put on a socket ------------------------------ */

/*
 * Whether the module has pinned itself: from the first time one of its
 * function pointers may have been copied where no unload can reach it.
 * Set once with xchg(), fully ordered like test_and_set_bit(), whose 3.10
 * version emits a `bts` without operand size that newer assemblers warn about.
 */
static int toa_pinned_flag;

bool toa_pinned(void)
{
	return READ_ONCE(toa_pinned_flag);
}

/* False when the module is already being unloaded: nothing may escape then. */
static bool toa_pin(const char *why)
{
	if (toa_pinned())
		return true;
	if (!try_module_get(THIS_MODULE))
		return false;
	if (xchg(&toa_pinned_flag, 1)) {
		module_put(THIS_MODULE);
		return true;
	}
	pr_warn("pinned until reboot: %s; rmmod toa is refused (in use) from now on\n", why);
	return true;
}

/*
 * Wrapped copies of tables that another subsystem put on a socket with a
 * record (kTLS, espintcp: one per ULP configuration and family), made once
 * and never freed, like the family copies.
 */
#define TOA_MAX_WRAPPED 64
struct toa_wrapped {
	const struct proto_ops *orig;
	struct proto_ops *copy;
	const struct toa_family *f;
};
static struct toa_wrapped toa_wrapped[TOA_MAX_WRAPPED];
static int toa_nr_wrapped;
static DEFINE_MUTEX(toa_wrapped_lock);

static int toa_getname4(TOA_GETNAME_PARAMS);
static int toa_getname6(TOA_GETNAME_PARAMS);
static int toa_setsockopt4(TOA_SETSOCKOPT_PARAMS);
static int toa_setsockopt6(TOA_SETSOCKOPT_PARAMS);
static int toa_listen4(struct socket *sock, int backlog);
static int toa_listen6(struct socket *sock, int backlog);

static bool toa_is_ours(const struct proto_ops *ops)
{
	int i;

	if ((toa_v4.copy && ops == &toa_v4.copy->ops) ||
	    (toa_v6.copy && ops == &toa_v6.copy->ops))
		return true;
	for (i = 0; i < READ_ONCE(toa_nr_wrapped); i++)
		if (ops == toa_wrapped[i].copy)
			return true;
	return false;
}

/*
 * Our copy of `table` with getname (and setsockopt) wrapped, or NULL when the
 * table's getname is neither the kernel's nor ours: another module answers
 * for that socket and toa cannot stand in between.
 */
static const struct proto_ops *toa_wrap_table(const struct toa_family *f,
					      const struct proto_ops *table)
{
	const struct proto_ops *found = NULL;
	struct proto_ops *copy;
	int i;

	if (table->getname != f->orig_ops->getname && table->getname != f->copy->ops.getname)
		return NULL;
	mutex_lock(&toa_wrapped_lock);
	for (i = 0; i < toa_nr_wrapped; i++) {
		if (toa_wrapped[i].orig == table && toa_wrapped[i].f == f) {
			found = toa_wrapped[i].copy;
			goto out;
		}
	}
	if (toa_nr_wrapped == TOA_MAX_WRAPPED || READ_ONCE(toa_going))
		goto out;
	copy = kmalloc(sizeof(*copy), GFP_KERNEL);
	if (!copy)
		goto out;
	/* Never freed: see the top of this file. */
	kmemleak_not_leak(copy);
	memcpy(copy, table, sizeof(*copy));
	copy->getname = f->copy->ops.getname;
	if (table->setsockopt == f->orig_ops->setsockopt ||
	    table->setsockopt == f->copy->ops.setsockopt)
		copy->setsockopt = f->copy->ops.setsockopt;
	if (table->listen == f->orig_ops->listen || table->listen == f->copy->ops.listen)
		copy->listen = f->copy->ops.listen;
	toa_wrapped[toa_nr_wrapped].orig = table;
	toa_wrapped[toa_nr_wrapped].copy = copy;
	toa_wrapped[toa_nr_wrapped].f = f;
	/* Readers (toa_is_ours) see the entry before the count covers it. */
	smp_wmb();
	WRITE_ONCE(toa_nr_wrapped, toa_nr_wrapped + 1);
	found = copy;
out:
	mutex_unlock(&toa_wrapped_lock);
	return found;
}

/*
 * A setsockopt replaced the table of a socket that has a record
 * (IPV6_ADDRFORM gives it the kernel's IPv4 table, a ULP its own): the
 * socket takes a wrapped copy of the new table, or it would answer with the
 * proxy from then on.
 */
static void toa_follow_table(struct socket *sock)
{
	const struct proto_ops *now = READ_ONCE(sock->ops);
	const struct proto_ops *wrapped;
	struct toa_endpoint client, proxy;
	const struct toa_family *f;
	struct sock *sk = sock->sk;
	bool found;

	if (!sk || toa_is_ours(now) || READ_ONCE(toa_going))
		return;
	rcu_read_lock();
	found = toa_table_lookup(sk, &client, &proxy);
	rcu_read_unlock();
	f = toa_family_of(sk);
	if (!found || !f)
		return;
	wrapped = now == f->orig_ops ? &f->copy->ops : toa_wrap_table(f, now);
	if (!wrapped) {
		toa_count(TOA_GETNAME_TABLE_REPLACED);
		pr_warn_once("a socket with a TOA record took a function table toa cannot wrap (%ps): it answers with the proxy\n",
			     now->getname);
		/*
		 * Its answers are that table's now. The record goes with its
		 * destructor, so that every socket with a record has one of our
		 * tables (toa_listen() relies on it).
		 */
		toa_table_forget(sk);
		return;
	}
	cmpxchg(&sock->ops, now, wrapped);
}

/*
 * Every setsockopt on a socket with our table. A ULP (kTLS, espintcp)
 * builds its tables once, by value, from the first socket that takes it: if
 * that socket is ours, the ULP's tables keep our functions for good, and no
 * unload can reach them. So the module pins itself before any ULP runs on
 * one of its sockets; while it is being unloaded, the socket is given the
 * kernel's table first, so the ULP copies that one.
 */
static int toa_setsockopt(const struct toa_family *f, TOA_SETSOCKOPT_PARAMS)
{
	const struct proto_ops *before;
	int err;

	toa_enter();
	if (level == SOL_TCP && optname == TCP_ULP &&
	    !toa_pin("a socket with toa's function table took a TCP ULP (kTLS, espintcp), which copies that table"))
		toa_disarm(sock, f);
	before = READ_ONCE(sock->ops);
	err = f->orig_ops->setsockopt(TOA_SETSOCKOPT_ARGS);
	if (!err && READ_ONCE(sock->ops) != before)
		toa_follow_table(sock);
	toa_leave();
	return err;
}

static int toa_setsockopt4(TOA_SETSOCKOPT_PARAMS)
{
	return toa_setsockopt(&toa_v4, TOA_SETSOCKOPT_ARGS);
}

static int toa_setsockopt6(TOA_SETSOCKOPT_PARAMS)
{
	return toa_setsockopt(&toa_v6, TOA_SETSOCKOPT_ARGS);
}

/*
 * listen() on a socket with our table: an accepted TOA socket disconnected
 * (connect AF_UNSPEC, state CLOSE) and listening now drops its record and
 * gets its own destructor back first, so that no child is cloned with
 * toa_sk_destruct() and no record. Only a CLOSE socket can start
 * listening, and a CLOSE socket has no peer whose answer the record could
 * give. Here rather than in the probe on inet_csk_listen_start(): a kprobe
 * handler may run in NMI-like context, where the record buckets' locks
 * must not be taken (lockdep: inconsistent {INITIAL USE} -> {IN-NMI}).
 */
static int toa_listen(const struct toa_family *f, struct socket *sock, int backlog)
{
	int err;

	toa_enter();
	if (sock->sk && READ_ONCE(sock->sk->sk_state) == TCP_CLOSE)
		toa_table_forget(sock->sk);
	err = f->orig_ops->listen(sock, backlog);
	toa_leave();
	return err;
}

static int toa_listen4(struct socket *sock, int backlog)
{
	return toa_listen(&toa_v4, sock, backlog);
}

static int toa_listen6(struct socket *sock, int backlog)
{
	return toa_listen(&toa_v6, sock, backlog);
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

/*
 * Called with the socket locked (lock_sock) and its state known: from the
 * probe on inet_csk_listen_start(), which inet_listen() calls under the lock
 * after its checks, or by the load-time walk. A connect() on the same socket
 * takes the same lock, so it cannot put its own af_ops (ipv6_mapped) on the
 * socket between our read and our write.
 */
enum toa_arm_result toa_arm(struct socket *sock)
{
	const struct inet_connection_sock_af_ops *af;
	const struct proto_ops *ops;
	struct sock *sk = sock->sk;
	struct inet_connection_sock *icsk;
	const struct toa_family *f;

	if (!sk || sock->type != SOCK_STREAM || sk->sk_protocol != IPPROTO_TCP)
		return TOA_ARM_NOT_TCP;
	if (!sock->file) {
		toa_count(TOA_LISTEN_KERNEL_SOCKET);
		return TOA_ARM_KERNEL_SOCKET;
	}
	f = toa_family_of(sk);
	if (!f || READ_ONCE(toa_going))
		return TOA_ARM_NOT_TCP;
	icsk = inet_csk(sk);
	ops = READ_ONCE(sock->ops);
	af = READ_ONCE(icsk->icsk_af_ops);
	if (ops == &f->copy->ops && af == &f->copy->af)
		return TOA_ARM_ALREADY;
	if ((ops != &f->copy->ops && !toa_is_kernel_table(ops, f->orig_ops, sizeof(*ops))) ||
	    (af != &f->copy->af && !toa_is_kernel_table(af, f->orig_af, sizeof(*af)))) {
		toa_count(TOA_LISTEN_FOREIGN_TABLE);
		return TOA_ARM_FOREIGN_TABLE;
	}
	/* Handshakes first: a record never exists on a socket whose answers are the kernel's. */
	WRITE_ONCE(icsk->icsk_af_ops, &f->copy->af);
	if (ops != &f->copy->ops &&
	    cmpxchg(&sock->ops, ops, (const struct proto_ops *)&f->copy->ops) != ops) {
		/* Someone else's table arrived in between: theirs wins, and no records. */
		WRITE_ONCE(icsk->icsk_af_ops, af);
		toa_count(TOA_LISTEN_FOREIGN_TABLE);
		return TOA_ARM_FOREIGN_TABLE;
	}
	toa_count(TOA_LISTEN_ARMED);
	return TOA_ARM_ARMED;
}

/*
 * inet_csk_listen_start(sk, ...) runs from inet_listen() with the socket
 * locked, in process context, after the state checks and before the socket
 * is hashed: no SYN and no accept() can reach it yet.
 */
static int toa_listen_pre(struct kprobe *kp, struct pt_regs *regs)
{
	struct sock *sk = (struct sock *)toa_arg1(regs);
	struct socket *sock = sk->sk_socket;

	/*
	 * No lock may be taken here (NMI-like context on int3 kprobes):
	 * toa_arm() takes none, and the note is lock-free. A former TOA
	 * socket's record was dropped by toa_listen() before this ran.
	 */
	if (sock && toa_arm(sock) == TOA_ARM_FOREIGN_TABLE)
		toa_listeners_unarmed(sk, current, "table replaced by another module");
	return 0;
}

static struct kprobe toa_listen_probe = {
	.symbol_name = "inet_csk_listen_start",
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
	f->orig_destruct = sock->sk->sk_destruct;
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
		f->copy->ops.setsockopt = toa_setsockopt4;
		f->copy->ops.listen = toa_listen4;
		f->copy->af.syn_recv_sock = toa_syn_recv4;
	} else {
		f->copy->ops.getname = toa_getname6;
		f->copy->ops.setsockopt = toa_setsockopt6;
		f->copy->ops.listen = toa_listen6;
		f->copy->af.syn_recv_sock = toa_syn_recv6;
	}
	return 0;
}

/* Sockets still pointing at a copy get exactly the kernel's functions. */
static void toa_family_restore(struct toa_family *f)
{
	int i;

	if (!f->copy)
		return;
	WRITE_ONCE(f->copy->ops.getname, f->orig_ops->getname);
	WRITE_ONCE(f->copy->ops.setsockopt, f->orig_ops->setsockopt);
	WRITE_ONCE(f->copy->ops.listen, f->orig_ops->listen);
	WRITE_ONCE(f->copy->af.syn_recv_sock, f->orig_af->syn_recv_sock);
	mutex_lock(&toa_wrapped_lock);
	for (i = 0; i < toa_nr_wrapped; i++) {
		if (toa_wrapped[i].f != f)
			continue;
		WRITE_ONCE(toa_wrapped[i].copy->getname, f->orig_ops->getname);
		if (toa_wrapped[i].copy->setsockopt == toa_setsockopt4 ||
		    toa_wrapped[i].copy->setsockopt == toa_setsockopt6)
			WRITE_ONCE(toa_wrapped[i].copy->setsockopt, f->orig_ops->setsockopt);
		if (toa_wrapped[i].copy->listen == toa_listen4 ||
		    toa_wrapped[i].copy->listen == toa_listen6)
			WRITE_ONCE(toa_wrapped[i].copy->listen, f->orig_ops->listen);
	}
	mutex_unlock(&toa_wrapped_lock);
}

void (*toa_family_destructor(const struct sock *sk))(struct sock *sk)
{
	return sk->sk_family == AF_INET6 && toa_v6.copy ? toa_v6.orig_destruct :
							  toa_v4.orig_destruct;
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
	/* Before the walk: a listener that starts meanwhile is armed by one or the other. */
	err = register_kprobe(&toa_listen_probe);
	if (err) {
		pr_err("cannot probe %s: %d\n", toa_listen_probe.symbol_name, err);
		return err;
	}
	toa_listeners_arm_existing();
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
	/* Sockets whose destructor another module chained after ours call it still. */
	toa_table_wait_chained();
	toa_wait_callers();
}
