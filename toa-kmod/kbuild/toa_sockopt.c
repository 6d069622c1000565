// SPDX-License-Identifier: GPL-2.0-only
/*
 * dpvs-compatible lookup: getsockopt(fd, IPPROTO_IP, TOA_SO_GET_LOOKUP, &peer, &len)
 * returns the client as struct toa_nat64_peer. Applications written for dpvs'
 * NAT64 mode use it instead of getpeername(); IPv4 clients come back mapped.
 */
#include <linux/netfilter.h>
#include <linux/uaccess.h>
#include <linux/in6.h>
#include "toa.h"

#define TOA_BASE_CTL		4096
#define TOA_SO_GET_LOOKUP	TOA_BASE_CTL

struct toa_nat64_peer {
	struct in6_addr saddr;
	__be16 sport;
};

static int toa_sockopt_get(struct sock *sk, int cmd, void __user *user, int *len)
{
	struct toa_endpoint client, proxy;
	struct toa_nat64_peer peer;
	bool found;

	if (cmd != TOA_SO_GET_LOOKUP || *len < (int)sizeof(peer))
		return -EINVAL;
	if (sk->sk_protocol != IPPROTO_TCP)
		return -ENOPROTOOPT;

	rcu_read_lock();
	found = toa_table_lookup(sk, &client, &proxy);
	rcu_read_unlock();
	if (!found)
		return -ENOENT;

	memset(&peer, 0, sizeof(peer));
	if (client.family == 6) {
		memcpy(&peer.saddr, client.addr, 16);
	} else {
		peer.saddr.s6_addr[10] = 0xff;
		peer.saddr.s6_addr[11] = 0xff;
		memcpy(&peer.saddr.s6_addr[12], client.addr, 4);
	}
	peer.sport = client.port;
	if (copy_to_user(user, &peer, sizeof(peer)))
		return -EFAULT;
	*len = sizeof(peer);
	toa_count(TOA_SOCKOPT_LOOKUP);
	return 0;
}

static struct nf_sockopt_ops toa_sockopt_ops = {
	.pf = PF_INET,
	.get_optmin = TOA_BASE_CTL,
	.get_optmax = TOA_SO_GET_LOOKUP + 1,
	.get = toa_sockopt_get,
	.owner = THIS_MODULE,
};

int toa_sockopt_init(void)
{
	return nf_register_sockopt(&toa_sockopt_ops);
}

void toa_sockopt_exit(void)
{
	nf_unregister_sockopt(&toa_sockopt_ops);
}
