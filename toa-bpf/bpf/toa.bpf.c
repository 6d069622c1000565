// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa, the module-free mode: the same job as toa.ko with three BPF programs.
 *
 *  - sock_ops, PASSIVE_ESTABLISHED_CB: walks the TCP options of the packet that
 *    completed the handshake (the same formats and malformed-area rules as
 *    toa.ko) and keeps the client in socket storage;
 *  - cgroup/getpeername4 and getpeername6: accept() and getpeername() pass
 *    through them; they write the stored client over the kernel's answer.
 *
 * Only UAPI context fields are read, so no CO-RE or kernel BTF is needed. The
 * object carries BTF (-g) because socket storage maps require it.
 */
#include <linux/bpf.h>
#include <linux/types.h>

/* The UAPI's __always_inline is a plain hint; BPF wants no subprograms here. */
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* Helpers by number (linux/bpf.h's ___BPF_FUNC_MAPPER), so that no libbpf
 * headers are needed to build the object. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static void *(*bpf_sk_storage_get)(void *map, void *sk, void *value, __u64 flags) = (void *)107;

#define AF_INET 2
#define AF_INET6 10

/* Counters: indices match the names the loader reports (src/counters.rs). */
enum counter {
	SYN_RECV_SOCK_TOA,		/* handshake completed with a honoured TOA */
	SYN_RECV_SOCK_NO_TOA,		/* ... without one */
	OPTIONS_MALFORMED,		/* option area unwalkable: no TOA taken from it */
	SYN_RECV_SOCK_UNTRUSTED,	/* TOA from a source outside trusted_proxies */
	SYN_RECV_SOCK_OTHER_PORT,	/* TOA on a listener outside ports */
	GETNAME_TOA_OK,			/* peer name rewritten to the client */
	/* No getname_toa_empty: counting every answer on a plain socket would
	 * cost each getpeername() a map update (about 3 % of its rate). */
	GETNAME_FAMILY_KEPT,		/* IPv6 client, AF_INET socket: cannot be shown */
	NR_COUNTERS
};

/* Settings flags. */
#define TRUST_ANY 0x1	/* trusted_proxies empty: every source may set a client */
#define PORTS_ANY 0x2	/* ports empty: every listener honours TOA */

struct settings {
	__u32 formats;	/* toa.ko's bitmask: 0x1 254/8, 0x2 254/20, 0x4 253/20, 0x8 200/8 */
	__u32 flags;
	__u64 ports[1024];	/* bitmap of honoured local ports (host order) */
};

struct client {
	__u32 family;	/* AF_INET or AF_INET6 */
	__u32 port;	/* network order, in the low 16 bits, as user_port wants it */
	__u32 addr[4];	/* network order; IPv4 in addr[0] */
};

struct trusted_v4 {
	__u32 prefixlen;
	__u32 addr;
};

struct trusted_v6 {
	__u32 prefixlen;
	__u32 addr[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} toa_settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct trusted_v4);
	__type(value, __u8);
} toa_trusted_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct trusted_v6);
	__type(value, __u8);
} toa_trusted_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NR_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} toa_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct client);
} toa_clients SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&toa_counters, &which);

	if (v)
		*v += 1;
}

#define TCP_FIXED_LEN 20
#define MAX_AREA 40

enum scan { SCAN_NONE, SCAN_FOUND, SCAN_MALFORMED };

/* No TOA seen yet; offsets are masked to 0..63, so this is out of range. */
#define NO_TOA 0xff

static __always_inline int is_toa(__u32 kind, __u32 len, __u32 formats)
{
	__u32 bit = 0;

	if (kind == 254 && len == 8)
		bit = 0x1;
	else if (kind == 254 && len == 20)
		bit = 0x2;
	else if (kind == 253 && len == 20)
		bit = 0x4;
	else if (kind == 200 && len == 8)
		bit = 0x8;
	return (bit & formats) != 0;
}

/*
 * The option walk of toa-kmod/src/option.rs, on packet memory: the first enabled
 * TOA wins, EOL ends the walk, and the whole area is checked even after a TOA
 * was found (an area the kernel would give up on is not trusted either).
 * Every step advances by at least one byte of at most 40: 40 steps suffice.
 *
 * For the verifier: offsets are masked to 0..63 at the top of each step, so the
 * states of different paths (NOP, an option of unknown length, a TOA whose
 * length a branch made known) converge and are pruned instead of multiplying;
 * packet bounds are then proven against skb_data_end. The TOA is decoded after
 * the loop from its offset alone.
 */
static __always_inline enum scan scan(__u8 *area, __u8 *end, __u32 area_len,
				      __u32 formats, struct client *out)
{
	__u32 at = 0, toa_at = NO_TOA;

	for (int step = 0; step < MAX_AREA; step++) {
		if (at >= area_len)
			break;
		at &= 63;
		__u8 *p = area + at;
		if (p + 1 > end)
			return SCAN_MALFORMED;
		__u32 kind = p[0];
		if (kind == 0)
			break;
		if (kind == 1) {
			at++;
			continue;
		}
		if (at + 1 >= area_len || p + 2 > end)
			return SCAN_MALFORMED;
		__u32 len = p[1];
		if (len < 2 || at + len > area_len)
			return SCAN_MALFORMED;
		if (toa_at == NO_TOA && is_toa(kind, len, formats))
			toa_at = at;
		at += len;
	}
	if (toa_at == NO_TOA)
		return SCAN_NONE;

	__u8 *p = area + (toa_at & 63);
	if (p + 2 > end)
		return SCAN_MALFORMED;
	if (p[1] == 8) {
		if (p + 8 > end)
			return SCAN_MALFORMED;
		out->family = AF_INET;
		out->port = p[2] | (p[3] << 8);
		__builtin_memcpy(&out->addr[0], p + 4, 4);
	} else {
		if (p + 20 > end)
			return SCAN_MALFORMED;
		out->family = AF_INET6;
		out->port = p[2] | (p[3] << 8);
		__builtin_memcpy(out->addr, p + 4, 16);
		/* ::ffff:a.b.c.d is an IPv4 client (the module shows it so): an
		 * AF_INET socket can show it, an AF_INET6 one maps it back. */
		if (out->addr[0] == 0 && out->addr[1] == 0 &&
		    out->addr[2] == __builtin_bswap32(0xffff)) {
			out->family = AF_INET;
			out->addr[0] = out->addr[3];
			out->addr[3] = 0;
		}
	}
	return SCAN_FOUND;
}

static __always_inline int port_honoured(struct settings *s, __u32 port)
{
	if (s->flags & PORTS_ANY)
		return 1;
	return (s->ports[(port >> 6) & 1023] >> (port & 63)) & 1;
}

static __always_inline int proxy_trusted(struct settings *s, struct bpf_sock_ops *skops)
{
	if (s->flags & TRUST_ANY)
		return 1;
	if (skops->family == AF_INET) {
		struct trusted_v4 k = { .prefixlen = 32, .addr = skops->remote_ip4 };

		return bpf_map_lookup_elem(&toa_trusted_v4, &k) != 0;
	}
	__u32 a0 = skops->remote_ip6[0], a1 = skops->remote_ip6[1];
	__u32 a2 = skops->remote_ip6[2], a3 = skops->remote_ip6[3];
	/* A v4 proxy reaching a dual-stack listener is an IPv4 source (::ffff:0:0/96). */
	if (a0 == 0 && a1 == 0 && a2 == __builtin_bswap32(0xffff)) {
		struct trusted_v4 k = { .prefixlen = 32, .addr = a3 };

		return bpf_map_lookup_elem(&toa_trusted_v4, &k) != 0;
	}
	struct trusted_v6 k = { .prefixlen = 128, .addr = { a0, a1, a2, a3 } };

	return bpf_map_lookup_elem(&toa_trusted_v6, &k) != 0;
}

SEC("sockops")
int toa_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;

	__u32 zero = 0;
	struct settings *s = bpf_map_lookup_elem(&toa_settings, &zero);
	if (!s)
		return 1;

	__u8 *th = (__u8 *)(long)skops->skb_data;
	__u8 *end = (__u8 *)(long)skops->skb_data_end;
	if (th + TCP_FIXED_LEN > end) {
		count(SYN_RECV_SOCK_NO_TOA);
		return 1;
	}
	__u32 doff = (th[12] >> 4) * 4;
	if (doff < TCP_FIXED_LEN) {
		count(SYN_RECV_SOCK_NO_TOA);
		count(OPTIONS_MALFORMED);
		return 1;
	}

	struct client c = {};
	enum scan r = scan(th + TCP_FIXED_LEN, end, doff - TCP_FIXED_LEN, s->formats, &c);
	if (r != SCAN_FOUND) {
		count(SYN_RECV_SOCK_NO_TOA);
		if (r == SCAN_MALFORMED)
			count(OPTIONS_MALFORMED);
		return 1;
	}
	if (!port_honoured(s, skops->local_port)) {
		count(SYN_RECV_SOCK_NO_TOA);
		count(SYN_RECV_SOCK_OTHER_PORT);
		return 1;
	}
	if (!proxy_trusted(s, skops)) {
		count(SYN_RECV_SOCK_NO_TOA);
		count(SYN_RECV_SOCK_UNTRUSTED);
		return 1;
	}

	struct bpf_sock *sk = skops->sk;
	if (!sk) {
		count(SYN_RECV_SOCK_NO_TOA);
		return 1;
	}
	struct client *slot = bpf_sk_storage_get(&toa_clients, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!slot) {
		count(SYN_RECV_SOCK_NO_TOA);
		return 1;
	}
	*slot = c;
	count(SYN_RECV_SOCK_TOA);
	return 1;
}

static __always_inline struct client *client_of(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 0;
	return bpf_sk_storage_get(&toa_clients, sk, 0, 0);
}

SEC("cgroup/getpeername4")
int toa_getpeername4(struct bpf_sock_addr *ctx)
{
	struct client *c = client_of(ctx);

	if (!c)
		return 1;
	if (c->family != AF_INET) {
		/* A hook cannot change the answer's family: the proxy stays. */
		count(GETNAME_FAMILY_KEPT);
		return 1;
	}
	ctx->user_ip4 = c->addr[0];
	ctx->user_port = c->port;
	count(GETNAME_TOA_OK);
	return 1;
}

SEC("cgroup/getpeername6")
int toa_getpeername6(struct bpf_sock_addr *ctx)
{
	struct client *c = client_of(ctx);

	if (!c)
		return 1;
	if (c->family == AF_INET) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = __builtin_bswap32(0xffff);
		ctx->user_ip6[3] = c->addr[0];
	} else {
		ctx->user_ip6[0] = c->addr[0];
		ctx->user_ip6[1] = c->addr[1];
		ctx->user_ip6[2] = c->addr[2];
		ctx->user_ip6[3] = c->addr[3];
	}
	ctx->user_port = c->port;
	count(GETNAME_TOA_OK);
	return 1;
}

char _license[] SEC("license") = "GPL";
