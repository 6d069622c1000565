/* SPDX-License-Identifier: GPL-2.0-only */
/* What the parts of toa.ko share: counters, the per-socket table, the hooks. */
#ifndef TOA_H
#define TOA_H

#include <linux/moduleparam.h>
#include <linux/percpu.h>
#include <linux/hash.h>
#include <linux/rculist.h>
#include <net/sock.h>
#include <linux/in6.h>
#include "toa_core.h"

/* /proc/net/toa_stats rows, in display order. */
enum toa_counter {
	TOA_SYN_RECV_SOCK_TOA,		/* handshake completed with a recognised TOA */
	TOA_SYN_RECV_SOCK_NO_TOA,	/* handshake completed without one */
	TOA_GETNAME_TOA_OK,		/* peer name rewritten to the client */
	TOA_GETNAME_TOA_MISMATCH,	/* record found, kernel's answer not its proxy */
	TOA_GETNAME_TOA_EMPTY,		/* peer name asked for, socket has no record */
	TOA_IP6_ADDRESS_ALLOC,		/* records holding an IPv6 client, created */
	TOA_IP6_ADDRESS_FREE,		/* ... and released */
	TOA_OPTIONS_MALFORMED,		/* option area unwalkable: no TOA taken from it */
	TOA_SYN_RECV_SOCK_UNTRUSTED,	/* TOA from a source outside trusted_proxies: ignored */
	TOA_RECORD_ALLOC_FAILED,	/* no memory, or max_records reached */
	TOA_SOCKOPT_LOOKUP,		/* dpvs-style getsockopt answered */
	TOA_SYN_RECV_SOCK_OTHER_PORT,	/* TOA on a listener outside `ports`: ignored */
	TOA_GETNAME_KERNEL_SOCKET,	/* record on a socket without a file: kernel's answer */
	TOA_GETNAME_TOA_UNFIT,		/* IPv6 client, AF_INET socket, caller's buffer not known to fit it */
	TOA_LISTEN_ARMED,		/* listeners given the module's tables */
	TOA_LISTEN_KERNEL_SOCKET,	/* kernel listeners: never armed */
	TOA_LISTEN_FOREIGN_TABLE,	/* listeners whose tables another module replaced: not armed */
	TOA_GETNAME_TABLE_REPLACED,	/* record sockets given a table toa cannot wrap: proxy shown */
	TOA_NR_COUNTERS
};

struct toa_stats {
	u64 v[TOA_NR_COUNTERS];
};
DECLARE_PER_CPU(struct toa_stats, toa_stats);

static inline void toa_count(enum toa_counter c)
{
	this_cpu_inc(toa_stats.v[c]);
}

int toa_stats_init(void);
void toa_stats_exit(void);

/*
 * Per-socket records (toa_table.c), keyed by the socket and removed by its own
 * destructor, which the record chains in front of the kernel's.
 */
struct toa_record {
	struct hlist_node node;
	struct rcu_head rcu;
	struct sock *sk;
	/* The destructor the socket had before the record chained itself in. */
	void (*destruct)(struct sock *sk);
	/* Unload found another destructor chained after ours (toa_table.c). */
	bool chained;
	struct toa_endpoint client;
	struct toa_endpoint proxy;
	/*
	 * The answer for the socket's family, worked out once at the handshake
	 * so that getname only compares and copies: given when the kernel's own
	 * answer has `answer_family` and names the proxy (`proxy_addr`, IPv4
	 * mapped on AF_INET6). answer_len 0: work it out on each call.
	 */
	__u16 answer_family;
	__u8 answer_len;
	struct in6_addr proxy_addr;
	__u8 answer[28] __aligned(8);
};

int toa_table_init(unsigned int max_records);
void toa_table_exit(void);
void toa_table_insert(struct sock *sk, const struct toa_endpoint *client,
		      const struct toa_endpoint *proxy);
#define TOA_TABLE_BITS 16

struct toa_bucket {
	struct hlist_head head;
	spinlock_t lock;
};
extern struct toa_bucket *toa_buckets;

static inline struct toa_bucket *toa_bucket_of(const struct sock *sk)
{
	return &toa_buckets[hash_ptr((void *)sk, TOA_TABLE_BITS)];
}

/* Under toa_read_lock(): the socket's record, valid until toa_read_unlock(). */
static inline const struct toa_record *toa_table_find(const struct sock *sk)
{
	struct toa_record *rec;

	hlist_for_each_entry_rcu(rec, &toa_bucket_of(sk)->head, node) {
		if (rec->sk == sk)
			return rec;
	}
	return NULL;
}
/* Unload: every socket with a record gets its own destructor back. */
void toa_table_release_sockets(void);
/* Unload, after that: returns once no socket can call toa_sk_destruct() any more. */
void toa_table_wait_chained(void);
/* A socket starting to listen: its record (if any) and its destructor go. */
void toa_table_forget(struct sock *sk);
/* Records allocated and not yet freed (the module's memory for them). */
unsigned int toa_table_held(void);
/* Under rcu_read_lock(): copies the record out; false if there is none. */
bool toa_table_lookup(const struct sock *sk, struct toa_endpoint *client,
		      struct toa_endpoint *proxy);

/* Hooks (toa_hooks.c). */
int toa_hooks_init(void);
void toa_hooks_exit(void);
enum toa_arm_result {
	TOA_ARM_ARMED,
	TOA_ARM_ALREADY,
	TOA_ARM_NOT_TCP,
	TOA_ARM_KERNEL_SOCKET,
	TOA_ARM_FOREIGN_TABLE,
};
/* Called with the listener locked (lock_sock). */
enum toa_arm_result toa_arm(struct socket *sock);
/* The module refuses rmmod from now on (see toa_hooks.c). */
bool toa_pinned(void);
/* What the kernel gives a socket of this family as sk_destruct. */
void (*toa_family_destructor(const struct sock *sk))(struct sock *sk);

/* Listeners (toa_listeners.c): the ones open at load, and the ones toa cannot arm. */
void toa_listeners_arm_existing(void);
unsigned int toa_listeners_armed_at_load(void);
void toa_listeners_unarmed(const struct sock *sk, struct task_struct *owner, const char *why);
void toa_listeners_note(const struct sock *sk, pid_t pid, const char *comm, const char *why);
int toa_listeners_init(void);
void toa_listeners_exit(void);
/* Listener arming runs lost by the probe (stays 0: see toa_hooks.c). */
unsigned long toa_hooks_missed(void);
/*
 * Every function the kernel calls through a pointer counts itself in and out
 * (toa_hooks.c waits for the counts at unload). Inline: getname pays for
 * every call it makes.
 */
struct toa_calls {
	unsigned long in, out;
};
DECLARE_PER_CPU(struct toa_calls, toa_calls);

static inline void toa_enter(void)
{
	this_cpu_inc(toa_calls.in);
}

static inline void toa_leave(void)
{
	this_cpu_inc(toa_calls.out);
}

/*
 * A module parameter replaced as a whole (toa_param.c). Its value starts with
 * a struct toa_param_value, so that the value's own allocation is what
 * kfree_rcu() and kfree() free.
 */
#define TOA_PARAM_TEXT_MAX	1024

struct toa_param_value {
	struct rcu_head rcu;
	/* What was written, without the newline; what a read of the file shows. */
	char text[TOA_PARAM_TEXT_MAX];
};

struct toa_param {
	const char *name;
	struct toa_param_value __rcu *value;
	/* Set at unload (under the parameter lock): later writes are refused. */
	bool closed;
};

/* The written text's length (up to a newline) in *len; -EBUSY once closed, -EINVAL when too long. */
int toa_param_text_len(const struct toa_param *p, const char *val, size_t *len);
/* Makes `v` the value (the caller holds the parameter lock, as a setter does). */
void toa_param_publish(struct toa_param *p, struct toa_param_value *v);
/* kernel_param_ops.get of a parameter whose `arg` is its struct toa_param. */
int toa_param_get(char *buf, const struct kernel_param *kp);
/* At unload: frees the value and refuses later writes. */
void toa_param_close(struct toa_param *p);

/* ports (toa_ports.c): true when a listener on local port `port` honours TOA. */
bool toa_port_honoured(__u16 port);
void toa_ports_exit(void);

/* trusted_proxies (toa_trust.c): true when `source` may carry a TOA. */
bool toa_trusted(const struct toa_endpoint *source);
void toa_trust_report(void);
void toa_trust_exit(void);

int toa_sockopt_init(void);
void toa_sockopt_exit(void);

/* Module parameters (toa_main.c). */
extern unsigned int toa_formats;

#endif
