// SPDX-License-Identifier: GPL-2.0-only
/*
 * toa, the module-free mode: the same job as toa.ko with BPF programs.
 *
 *  - capture: walks the TCP options of the packet that completed the
 *    handshake (the same formats and malformed-area rules as toa.ko) and keeps
 *    the client in socket storage. Two programs do it, and the loader attaches
 *    one kind:
 *     - fexit on tcp_create_openreq_child (kernels whose tracing programs may
 *       use socket storage, 5.11+, with a BPF trampoline): runs once per
 *       accepted connection, both families, and for nothing else;
 *     - sock_ops PASSIVE_ESTABLISHED_CB (5.10+): the fallback. The kernel runs
 *       a cgroup sock_ops program on every TCP callback of every socket
 *       (timeouts, windows, ECN, connect, both ends), and that plumbing is
 *       what costs a connection.
 *  - cgroup/getpeername4 and getpeername6: accept() and getpeername() pass
 *    through them; they write the stored client over the kernel's answer.
 *
 * Listeners the kernel made for itself (in-kernel servers) are left alone,
 * as toa.ko leaves them: no client is taken from their handshakes.
 *
 * getpeername reads only UAPI context fields. sock_ops and the fexit programs
 * read a few kernel fields, located on the running kernel by CO-RE (the local
 * struct definitions below carry preserve_access_index). The object carries
 * BTF (-g) because socket storage maps and CO-RE require it.
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
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static void *(*bpf_skc_to_tcp_sock)(void *sk) = (void *)137;

#define AF_INET 2
#define AF_INET6 10

/*
 * The kernel fields the fexit programs read, by name: CO-RE finds their
 * offsets in the running kernel's BTF ("___toa" is dropped when matching).
 */
#define __core __attribute__((preserve_access_index))

struct sk_buff___toa {
	unsigned char *head;
	__u16 transport_header;
	__u16 protocol;
} __core;

struct in6_addr___toa {
	union {
		__u32 u6_addr32[4];
	} in6_u;
} __core;

struct sock_common___toa {
	__u32 skc_daddr;
	__u16 skc_family;
	__u16 skc_num;
	struct in6_addr___toa skc_v6_daddr;
} __core;

struct request_sock___toa {
	struct sock_common___toa __req_common;
} __core;

/* Set on sockets the kernel made for itself (sock_create_kern): in-kernel
 * servers. A listener's children inherit it (sk_clone_lock copies it). */
struct sock___toa {
	__u8 sk_kern_sock : 1;
} __core;

/*
 * A bitfield's value on the running kernel, as libbpf's
 * BPF_CORE_READ_BITFIELD reads it: CO-RE gives the offset and size of the
 * bytes that hold it and the shifts that isolate it. The empty asm keeps
 * clang from folding the relocated offset into a load it cannot relocate.
 */
#ifdef __bpf__
#define FIELD_BYTE_OFFSET 0
#define FIELD_BYTE_SIZE 1
#define FIELD_LSHIFT_U64 4
#define FIELD_RSHIFT_U64 5
#define CORE_BITFIELD(s, field) ({						\
	const void *p_ = (const void *)(s) +					\
		__builtin_preserve_field_info((s)->field, FIELD_BYTE_OFFSET);	\
	__u32 size_ = __builtin_preserve_field_info((s)->field, FIELD_BYTE_SIZE); \
	__u64 v_;								\
	asm volatile("" : "=r"(p_) : "0"(p_));					\
	if (size_ == 1)								\
		v_ = *(const __u8 *)p_;						\
	else if (size_ == 2)							\
		v_ = *(const __u16 *)p_;					\
	else if (size_ == 4)							\
		v_ = *(const __u32 *)p_;					\
	else									\
		v_ = *(const __u64 *)p_;					\
	v_ <<= __builtin_preserve_field_info((s)->field, FIELD_LSHIFT_U64);	\
	v_ >>= __builtin_preserve_field_info((s)->field, FIELD_RSHIFT_U64);	\
	v_;									\
})
#else
/* Compiled natively (the walker's differential test): no CO-RE there. */
#define CORE_BITFIELD(s, field) ((s)->field)
#endif

/* Counters: indices match the names the loader reports (src/counters.rs).
 * New ones go last: an earlier release's map must stay a prefix. */
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
	SYN_RECV_SOCK_KERNEL_SOCKET,	/* handshake on an in-kernel listener: left alone */
	NR_COUNTERS
};

/* The bits of struct settings' flags. */
enum settings_flag {
	TRUST_ANY = 0x1,	/* trusted_proxies empty: every source may set a client */
	PORTS_ANY = 0x2,	/* ports empty: every listener honours TOA */
};

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

/*
 * This file is the source of the layouts the loader shares with these
 * programs (src/maps.rs, src/counters.rs): build.rs reads them from the
 * object's BTF and fails the build where the Rust side differs. The maps
 * bring their key and value structs into BTF; clang writes an enum there only
 * when a variable's type uses it (its enumerators are not enough), hence this
 * variable. Its section, like the license's, is no map: nothing is allocated
 * for it.
 */
struct shared_enums {
	enum counter counter;
	enum settings_flag settings_flag;
};
struct shared_enums toa_shared_enums SEC("shared_enums");

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

/* Where the connection came from: the proxy (or the client, without one). */
struct source {
	__u32 family;
	__u32 addr[4];	/* network order; IPv4 in addr[0] */
};

static __always_inline int proxy_trusted(struct settings *s, struct source *src)
{
	if (s->flags & TRUST_ANY)
		return 1;
	if (src->family == AF_INET) {
		struct trusted_v4 k = { .prefixlen = 32, .addr = src->addr[0] };

		return bpf_map_lookup_elem(&toa_trusted_v4, &k) != 0;
	}
	__u32 a0 = src->addr[0], a1 = src->addr[1], a2 = src->addr[2], a3 = src->addr[3];
	/* A v4 proxy reaching a dual-stack listener is an IPv4 source (::ffff:0:0/96). */
	if (a0 == 0 && a1 == 0 && a2 == __builtin_bswap32(0xffff)) {
		struct trusted_v4 k = { .prefixlen = 32, .addr = a3 };

		return bpf_map_lookup_elem(&toa_trusted_v4, &k) != 0;
	}
	struct trusted_v6 k = { .prefixlen = 128, .addr = { a0, a1, a2, a3 } };

	return bpf_map_lookup_elem(&toa_trusted_v6, &k) != 0;
}

/*
 * What both capture paths decide, once the option area is at hand: the first
 * enabled TOA of a well-formed area, on an honoured port, from a trusted
 * source, becomes the socket's client. Anything else leaves the socket
 * without one, so its peer name stays the kernel's.
 */
static __always_inline void capture(struct settings *s, __u8 *area, __u8 *end, __u32 area_len,
				    __u32 local_port, struct source *src, void *sk)
{
	struct client c = {};
	enum scan r = scan(area, end, area_len, s->formats, &c);
	if (r != SCAN_FOUND) {
		count(SYN_RECV_SOCK_NO_TOA);
		if (r == SCAN_MALFORMED)
			count(OPTIONS_MALFORMED);
		return;
	}
	if (!port_honoured(s, local_port)) {
		count(SYN_RECV_SOCK_NO_TOA);
		count(SYN_RECV_SOCK_OTHER_PORT);
		return;
	}
	if (!proxy_trusted(s, src)) {
		count(SYN_RECV_SOCK_NO_TOA);
		count(SYN_RECV_SOCK_UNTRUSTED);
		return;
	}
	struct client *slot = bpf_sk_storage_get(&toa_clients, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!slot) {
		count(SYN_RECV_SOCK_NO_TOA);
		return;
	}
	*slot = c;
	count(SYN_RECV_SOCK_TOA);
}

static __always_inline struct settings *settings(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&toa_settings, &zero);
}

SEC("sockops")
int toa_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;

	struct bpf_sock *sk = skops->sk;
	if (!sk) {
		count(SYN_RECV_SOCK_NO_TOA);
		return 1;
	}
	struct sock___toa *full = bpf_skc_to_tcp_sock(sk);
	if (!full) {
		count(SYN_RECV_SOCK_NO_TOA);
		return 1;
	}
	if (CORE_BITFIELD(full, sk_kern_sock)) {
		count(SYN_RECV_SOCK_KERNEL_SOCKET);
		return 1;
	}

	struct settings *s = settings();
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

	/* Volatile reads: clang would otherwise pick between the two fields by
	 * pointer, and the verifier refuses a context pointer moved at run time. */
	struct source src = { .family = skops->family };
	if (src.family == AF_INET) {
		src.addr[0] = *(volatile __u32 *)&skops->remote_ip4;
	} else {
		src.addr[0] = *(volatile __u32 *)&skops->remote_ip6[0];
		src.addr[1] = *(volatile __u32 *)&skops->remote_ip6[1];
		src.addr[2] = *(volatile __u32 *)&skops->remote_ip6[2];
		src.addr[3] = *(volatile __u32 *)&skops->remote_ip6[3];
	}
	capture(s, th + TCP_FIXED_LEN, end, doff - TCP_FIXED_LEN, skops->local_port, &src, sk);
	return 1;
}

/*
 * The fexit path. tcp_create_openreq_child(listener, req, skb) returns the
 * child that tcp_v4/v6_syn_recv_sock builds from the handshake-completing ACK
 * (or, for a SYN cookie, the ACK that carries it; for Fast Open, the SYN, as
 * sock_ops sees it); its three arguments have not changed since 4.x, where
 * syn_recv_sock's have (6.x added a seventh). ctx[] holds the arguments, then
 * the return value. The request holds the addresses: the child gets them
 * only after this returns.
 */
#define OPENREQ_LISTENER 0
#define OPENREQ_REQ 1
#define OPENREQ_SKB 2
#define OPENREQ_CHILD 3

#define TCP_MAX_LEN 60
/* The header, then room for a masked option offset (<= 63) and a 20-byte
 * TOA read after it. */
#define HDR_BUF (TCP_FIXED_LEN + 64 + 20)

SEC("fexit/tcp_create_openreq_child")
int toa_openreq_child(__u64 *ctx)
{
	struct request_sock___toa *req = (void *)ctx[OPENREQ_REQ];
	struct sk_buff___toa *skb = (void *)ctx[OPENREQ_SKB];
	void *child = (void *)ctx[OPENREQ_CHILD];

	if (!child)
		return 0;
	struct sock___toa *listener = (void *)ctx[OPENREQ_LISTENER];
	if (CORE_BITFIELD(listener, sk_kern_sock)) {
		count(SYN_RECV_SOCK_KERNEL_SOCKET);
		return 0;
	}
	struct settings *s = settings();
	if (!s)
		return 0;

	struct sock_common___toa *rc = &req->__req_common;
	struct source src = { .family = rc->skc_family };
	if (src.family == AF_INET) {
		src.addr[0] = rc->skc_daddr;
	} else if (src.family == AF_INET6) {
		src.addr[0] = rc->skc_v6_daddr.in6_u.u6_addr32[0];
		src.addr[1] = rc->skc_v6_daddr.in6_u.u6_addr32[1];
		src.addr[2] = rc->skc_v6_daddr.in6_u.u6_addr32[2];
		src.addr[3] = rc->skc_v6_daddr.in6_u.u6_addr32[3];
	} else {
		return 0;
	}

	/* The TCP header is linear (tcp_v4/v6_rcv pulled doff * 4 bytes). One
	 * read takes the longest header there can be: past a shorter one it
	 * reads payload or the skb's tail room, inside the same allocation,
	 * and the walk never looks there. It goes to this program's stack: a
	 * per-CPU buffer could be overwritten by a softirq on the same CPU
	 * while a backlogged SYN cookie is processed in process context. */
	__u8 *th = skb->head + skb->transport_header;
	__u8 hdr[HDR_BUF];
	__builtin_memset(hdr + TCP_MAX_LEN, 0, HDR_BUF - TCP_MAX_LEN);
	if (bpf_probe_read_kernel(hdr, TCP_MAX_LEN, th)) {
		count(SYN_RECV_SOCK_NO_TOA);
		return 0;
	}
	__u32 doff = (hdr[12] >> 4) * 4;
	if (doff < TCP_FIXED_LEN) {
		count(SYN_RECV_SOCK_NO_TOA);
		count(OPTIONS_MALFORMED);
		return 0;
	}
	__u8 *area = hdr + TCP_FIXED_LEN;
	__u32 area_len = doff - TCP_FIXED_LEN;
	capture(s, area, hdr + HDR_BUF, area_len, rc->skc_num, &src, child);
	return 0;
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
