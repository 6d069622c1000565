// SPDX-License-Identifier: GPL-2.0-only
/*
 * Where toa.ko meets the TCP stack: kprobes only. No kernel function pointer is
 * replaced and no read-only page is written; every handler here is C.
 *
 *  tcp_v4_syn_recv_sock / tcp_v6_syn_recv_sock (return): the packet completing
 *     the handshake (the ACK; the SYN for Fast Open; SYN cookies too) is parsed
 *     and a record is kept for the new child socket.
 *  inet_getname / inet6_getname (return): accept() and getpeername() answers are
 *     rewritten from the record.
 *  tcp_v4_destroy_sock (entry): the record goes with its socket. IPv6 TCP
 *     sockets are destroyed through it as well.
 */
#include <linux/kprobes.h>
#include <linux/socket.h>
#include <linux/tcp.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/if_ether.h>
#include <net/ipv6.h>
#include "toa.h"

/* --- handshake ---------------------------------------------------------- */

struct toa_syn_recv_ctx {
	struct sk_buff *skb;
	bool *own_req;
};

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

static void toa_handshake(struct sock *child, const struct sk_buff *skb)
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
	toa_proxy_endpoint(skb, th, &proxy);
	if (!toa_trusted(&proxy)) {
		toa_count(TOA_SYN_RECV_SOCK_NO_TOA);
		toa_count(TOA_SYN_RECV_SOCK_UNTRUSTED);
		return;
	}
	toa_count(TOA_SYN_RECV_SOCK_TOA);
	toa_table_insert(child, &client, &proxy);
}

static int toa_syn_recv_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct toa_syn_recv_ctx *ctx = (struct toa_syn_recv_ctx *)ri->data;

	ctx->skb = (struct sk_buff *)toa_arg2(regs);
	ctx->own_req = toa_syn_recv_own_req(regs);
	return 0;
}

/* IPv4 packets on an IPv6 listener go through tcp_v4_syn_recv_sock, probed too. */
static int toa_syn_recv6_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct sk_buff *skb = (struct sk_buff *)toa_arg2(regs);

	if (skb->protocol == htons(ETH_P_IP))
		return 1;
	return toa_syn_recv_entry(ri, regs);
}

static int toa_syn_recv_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct toa_syn_recv_ctx *ctx = (struct toa_syn_recv_ctx *)ri->data;
	struct sock *child = (struct sock *)regs_return_value(regs);

	/* A child another CPU won the race for is freed without ->destroy. */
	if (!child || (ctx->own_req && !*ctx->own_req))
		return 0;
	toa_handshake(child, ctx->skb);
	return 0;
}

/* --- accept() / getpeername() -------------------------------------------- */

struct toa_getname_ctx {
	struct sock *sk;
	struct sockaddr *uaddr;
	int *lenp;
};

static int toa_getname_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct toa_getname_ctx *ctx = (struct toa_getname_ctx *)ri->data;
	struct socket *sock = (struct socket *)toa_arg1(regs);
	struct sock *sk = sock->sk;

	/* getsockname() and non-TCP sockets are never touched: skip the return probe. */
	if (!toa_getname_peer(regs) || !sk || sk->sk_protocol != IPPROTO_TCP)
		return 1;
	ctx->sk = sk;
	ctx->uaddr = (struct sockaddr *)toa_arg2(regs);
	ctx->lenp = toa_getname_lenp(regs);
	return 0;
}

static int toa_getname_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct toa_getname_ctx *ctx = (struct toa_getname_ctx *)ri->data;
	long ret = (long)regs_return_value(regs);
	struct toa_endpoint client, proxy;
	bool found;
	int len, n;

	if (ret < 0)
		return 0;
	len = TOA_GETNAME_RETURNS_LEN ? (int)ret : *ctx->lenp;

	rcu_read_lock();
	found = toa_table_lookup(ctx->sk, &client, &proxy);
	rcu_read_unlock();
	if (!found) {
		toa_count(TOA_GETNAME_TOA_EMPTY);
		return 0;
	}
	/* Callers of getname pass a struct sockaddr_storage. */
	n = toa_rewrite_peer(ctx->sk->sk_family, ctx->uaddr, len,
			     sizeof(struct sockaddr_storage), &client, &proxy);
	if (n < 0) {
		toa_count(TOA_GETNAME_TOA_MISMATCH);
		return 0;
	}
	if (TOA_GETNAME_RETURNS_LEN)
		toa_set_return(regs, n);
	else
		*ctx->lenp = n;
	toa_count(TOA_GETNAME_TOA_OK);
	return 0;
}

/* --- socket destruction -------------------------------------------------- */

static int toa_destroy_pre(struct kprobe *kp, struct pt_regs *regs)
{
	toa_table_remove((struct sock *)toa_arg1(regs));
	return 0;
}

/* --- registration --------------------------------------------------------- */

static struct kprobe toa_destroy_probe = {
	.symbol_name = "tcp_v4_destroy_sock",
	.pre_handler = toa_destroy_pre,
};

#define TOA_KRETPROBE(sym, entry, ret, ctx)				\
	{								\
		.kp = { .symbol_name = sym },				\
		.entry_handler = entry,					\
		.handler = ret,						\
		.data_size = sizeof(struct ctx),			\
	}

enum { TOA_KRP_GETNAME, TOA_KRP_GETNAME6, TOA_KRP_SYN_RECV, TOA_KRP_SYN_RECV6, TOA_NR_KRP };

/* Consumers before producers: getname is hooked before any record can exist. */
static struct kretprobe toa_kretprobes[TOA_NR_KRP] = {
	[TOA_KRP_GETNAME] = TOA_KRETPROBE("inet_getname", toa_getname_entry,
					  toa_getname_return, toa_getname_ctx),
	[TOA_KRP_GETNAME6] = TOA_KRETPROBE("inet6_getname", toa_getname_entry,
					   toa_getname_return, toa_getname_ctx),
	[TOA_KRP_SYN_RECV] = TOA_KRETPROBE("tcp_v4_syn_recv_sock", toa_syn_recv_entry,
					   toa_syn_recv_return, toa_syn_recv_ctx),
	[TOA_KRP_SYN_RECV6] = TOA_KRETPROBE("tcp_v6_syn_recv_sock", toa_syn_recv6_entry,
					    toa_syn_recv_return, toa_syn_recv_ctx),
};

unsigned long toa_hooks_missed(void)
{
	unsigned long missed = 0;
	int i;

	for (i = 0; i < TOA_NR_KRP; i++)
		missed += toa_kretprobes[i].nmissed;
	return missed;
}

int toa_hooks_init(void)
{
	int i, err;

	/* Records must never outlive their socket: the remover goes in first. */
	err = register_kprobe(&toa_destroy_probe);
	if (err) {
		pr_err("cannot probe %s: %d\n", toa_destroy_probe.symbol_name, err);
		return err;
	}
	for (i = 0; i < TOA_NR_KRP; i++) {
		/* Each in-flight call holds an instance; getname may be preempted. */
		toa_kretprobes[i].maxactive = max_t(int, 64, 8 * num_possible_cpus());
		err = register_kretprobe(&toa_kretprobes[i]);
		if (err) {
			pr_err("cannot probe %s: %d\n", toa_kretprobes[i].kp.symbol_name, err);
			goto unwind;
		}
	}
	return 0;

unwind:
	while (--i >= 0)
		unregister_kretprobe(&toa_kretprobes[i]);
	unregister_kprobe(&toa_destroy_probe);
	return err;
}

void toa_hooks_exit(void)
{
	int i;

	/* Producers first; unregistering waits for running handlers to finish. */
	for (i = TOA_NR_KRP - 1; i >= 0; i--)
		unregister_kretprobe(&toa_kretprobes[i]);
	unregister_kprobe(&toa_destroy_probe);
}
