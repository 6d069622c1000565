/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The Rust core's C ABI (toa-kmod/src/ffi.rs). Keep both sides in step: the
 * layout of struct toa_endpoint is checked at build time below and in Rust tests.
 */
#ifndef TOA_CORE_H
#define TOA_CORE_H

#include <linux/types.h>

/* An address and port: the client from the option, or the proxy from the packet. */
struct toa_endpoint {
	__u8 family;		/* 4 or 6 */
	__u8 kind;		/* option kind it came from; 0 for the proxy */
	__be16 port;
	__u8 addr[16];		/* IPv4 in the first 4 bytes, or IPv6 */
};

/* toa_scan_options() results; MALFORMED is followed by a reason (0..3). */
#define TOA_SCAN_FOUND		0
#define TOA_SCAN_NONE		1
#define TOA_SCAN_MALFORMED	2

/* toa_rewrite_peer(): the kernel's answer was left untouched. */
#define TOA_MISMATCH		(-1)

/* Bits of the `formats` module parameter. */
#define TOA_FMT_254_8		(1U << 0)
#define TOA_FMT_254_20		(1U << 1)
#define TOA_FMT_253_20		(1U << 2)
#define TOA_FMT_200_8		(1U << 3)
#define TOA_FMT_ALL		0xfU

/* One trusted network (trust.rs Cidr): address with host bits cleared. */
struct toa_cidr {
	__u8 family;		/* 4 or 6 */
	__u8 prefix;		/* 0..32 or 0..128 */
	__u8 addr[16];
};

/* toa_trusted_parse() errors; *err_offset points at the entry in fault. */
#define TOA_TRUST_BAD_ADDRESS	(-1)
#define TOA_TRUST_BAD_PREFIX	(-2)
#define TOA_TRUST_HOST_BITS	(-3)
#define TOA_TRUST_TOO_MANY	(-4)
#define TOA_TRUST_EMPTY		(-5)

int toa_scan_options(const __u8 *opts, size_t len, __u32 formats,
		     struct toa_endpoint *out);
int toa_rewrite_peer(__u16 sock_family, void *sa, int len, size_t cap,
		     const struct toa_endpoint *client,
		     const struct toa_endpoint *proxy);

int toa_trusted_parse(const __u8 *text, size_t len, struct toa_cidr *out,
		      size_t cap, size_t *err_offset);
bool toa_trusted_match(const struct toa_cidr *cidrs, int n,
		       const struct toa_endpoint *source);

#endif
