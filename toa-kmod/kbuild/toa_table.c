// SPDX-License-Identifier: GPL-2.0-only
/*
 * Per-socket TOA records.
 *
 * Not sk_user_data: sockmap, reuseport groups and in-kernel users own that
 * pointer. Records live in a hash keyed by the socket's address.
 *
 * A record must never outlive its socket, or the next socket the slab places
 * at that address would inherit its client. So the record is removed by the
 * socket's own destructor: inserting a record chains toa_sk_destruct() in
 * front of sk->sk_destruct (kept in the record), and the kernel calls it for
 * every socket exactly once, before its memory is freed, whatever path the
 * socket took (accepted or not, reset, timed out, listener closed). Nothing
 * can skip it, unlike the probe on tcp_v4_destroy_sock it replaces.
 *
 * Readers (getname, from any context) walk a bucket under RCU without a lock;
 * writers (handshake in softirq, destructor in any context) take the bucket's
 * lock with interrupts off. Records are freed after a grace period.
 */
#include <linux/hash.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/rculist.h>
#include "toa.h"
#include <net/inet_common.h>

struct toa_bucket *toa_buckets;
static struct kmem_cache *toa_record_cache;
/*
 * Records in the slab, unlinked ones still waiting for their grace period
 * included: what max_records bounds and what toa_stats shows as records_live.
 */
static atomic_t toa_records = ATOMIC_INIT(0);
static unsigned int toa_max_records;
/*
 * Set at unload before the sockets are released: a handshake that takes a
 * bucket's lock after the release scanned it sees this and makes no record,
 * so no socket is left pointing at toa_sk_destruct().
 */
static bool toa_table_closing;
/* Records whose socket's destructor another module chained after ours. */
static atomic_t toa_chained = ATOMIC_INIT(0);

int toa_table_init(unsigned int max_records)
{
	unsigned int i;

	toa_max_records = max_records;
	toa_buckets = vzalloc(sizeof(*toa_buckets) << TOA_TABLE_BITS);
	if (!toa_buckets)
		return -ENOMEM;
	for (i = 0; i < (1U << TOA_TABLE_BITS); i++) {
		INIT_HLIST_HEAD(&toa_buckets[i].head);
		spin_lock_init(&toa_buckets[i].lock);
	}
	toa_record_cache = kmem_cache_create("toa_record", sizeof(struct toa_record),
					     0, 0, NULL);
	if (!toa_record_cache) {
		vfree(toa_buckets);
		return -ENOMEM;
	}
	return 0;
}

static void toa_record_free_rcu(struct rcu_head *head)
{
	struct toa_record *rec = container_of(head, struct toa_record, rcu);

	if (rec->client.family == 6)
		toa_count(TOA_IP6_ADDRESS_FREE);
	kmem_cache_free(toa_record_cache, rec);
	atomic_dec(&toa_records);
}

unsigned int toa_table_held(void)
{
	return atomic_read(&toa_records);
}

/* Called with the bucket locked. */
static void toa_record_unlink(struct toa_record *rec)
{
	hlist_del_rcu(&rec->node);
	call_rcu(&rec->rcu, toa_record_free_rcu);
}

void toa_sk_destruct(struct sock *sk);

/* The kernel's answer on a `family` socket of this proxy, and ours instead. */
static void toa_record_prepare(struct toa_record *rec, u16 family)
{
	union {
		struct sockaddr_in v4;
		struct sockaddr_in6 v6;
		__u8 bytes[28];
	} sa;
	int len;

	memset(&sa, 0, sizeof(sa));
	memset(&rec->proxy_addr, 0, sizeof(rec->proxy_addr));
	rec->answer_len = 0;
	if (family == AF_INET && rec->proxy.family == 4) {
		memcpy(&rec->proxy_addr, rec->proxy.addr, 4);
		sa.v4.sin_family = AF_INET;
		sa.v4.sin_port = rec->proxy.port;
		memcpy(&sa.v4.sin_addr, rec->proxy.addr, 4);
		len = sizeof(sa.v4);
	} else if (family == AF_INET6) {
		if (rec->proxy.family == 4) {
			rec->proxy_addr.s6_addr[10] = 0xff;
			rec->proxy_addr.s6_addr[11] = 0xff;
			memcpy(&rec->proxy_addr.s6_addr[12], rec->proxy.addr, 4);
		} else {
			memcpy(&rec->proxy_addr, rec->proxy.addr, 16);
		}
		sa.v6.sin6_family = AF_INET6;
		sa.v6.sin6_port = rec->proxy.port;
		sa.v6.sin6_addr = rec->proxy_addr;
		len = sizeof(sa.v6);
	} else {
		return;
	}
	len = toa_rewrite_peer(family, &sa, len, sizeof(sa), &rec->client, &rec->proxy);
	if (len <= 0 || len > (int)sizeof(rec->answer))
		return;
	memcpy(rec->answer, sa.bytes, len);
	rec->answer_family = family;
	rec->answer_len = len;
}

void toa_table_insert(struct sock *sk, const struct toa_endpoint *client,
		      const struct toa_endpoint *proxy)
{
	struct toa_bucket *b = toa_bucket_of(sk);
	struct toa_record *rec, *old;
	unsigned long flags;

	if (atomic_inc_return(&toa_records) > toa_max_records) {
		atomic_dec(&toa_records);
		toa_count(TOA_RECORD_ALLOC_FAILED);
		return;
	}
	rec = kmem_cache_alloc(toa_record_cache, GFP_ATOMIC);
	if (!rec) {
		atomic_dec(&toa_records);
		toa_count(TOA_RECORD_ALLOC_FAILED);
		return;
	}
	rec->sk = sk;
	rec->client = *client;
	rec->proxy = *proxy;
	toa_record_prepare(rec, sk->sk_family);
	if (client->family == 6)
		toa_count(TOA_IP6_ADDRESS_ALLOC);

	rec->chained = false;
	spin_lock_irqsave(&b->lock, flags);
	if (READ_ONCE(toa_table_closing)) {
		spin_unlock_irqrestore(&b->lock, flags);
		if (client->family == 6)
			toa_count(TOA_IP6_ADDRESS_FREE);
		kmem_cache_free(toa_record_cache, rec);
		atomic_dec(&toa_records);
		toa_count(TOA_RECORD_ALLOC_FAILED);
		return;
	}
	rec->destruct = sk->sk_destruct;
	/* A socket gets one record: a second handshake replaces the first. */
	hlist_for_each_entry(old, &b->head, node) {
		if (old->sk == sk) {
			rec->destruct = old->destruct;
			toa_record_unlink(old);
			break;
		}
	}
	/*
	 * The child is still locked by the handshake and unknown to anyone else:
	 * no other destructor can be chained in between.
	 */
	sk->sk_destruct = toa_sk_destruct;
	hlist_add_head_rcu(&rec->node, &b->head);
	spin_unlock_irqrestore(&b->lock, flags);
}

/* Called by the kernel once, when the socket is freed. */
void toa_sk_destruct(struct sock *sk)
{
	struct toa_bucket *b = toa_bucket_of(sk);
	void (*destruct)(struct sock *sk) = NULL;
	struct toa_record *rec;
	unsigned long flags;

	toa_enter();
	spin_lock_irqsave(&b->lock, flags);
	hlist_for_each_entry(rec, &b->head, node) {
		if (rec->sk == sk) {
			destruct = rec->destruct;
			if (rec->chained)
				atomic_dec(&toa_chained);
			toa_record_unlink(rec);
			break;
		}
	}
	spin_unlock_irqrestore(&b->lock, flags);
	/*
	 * Unload puts the destructor back before it removes any record, and
	 * waits for running destructors in between; a listener drops its
	 * record and destructor together, so no child inherits one without
	 * the other. Should a socket still come here without a record, it gets
	 * its family's destructor, loudly: nothing must be left undone for it.
	 */
	if (WARN_ON_ONCE(!destruct))
		destruct = toa_family_destructor(sk);
	destruct(sk);
	toa_leave();
}

void toa_table_forget(struct sock *sk)
{
	struct toa_bucket *b = toa_bucket_of(sk);
	struct toa_record *rec;
	unsigned long flags;

	spin_lock_irqsave(&b->lock, flags);
	hlist_for_each_entry(rec, &b->head, node) {
		if (rec->sk != sk)
			continue;
		/*
		 * Chained by another module: the record stays for its destructor
		 * (and a record unload marked chained never gets here: its
		 * sk_destruct is not ours).
		 */
		if (cmpxchg(&sk->sk_destruct, toa_sk_destruct, rec->destruct) == toa_sk_destruct)
			toa_record_unlink(rec);
		break;
	}
	spin_unlock_irqrestore(&b->lock, flags);
}

bool toa_table_lookup(const struct sock *sk, struct toa_endpoint *client,
		      struct toa_endpoint *proxy)
{
	const struct toa_record *rec = toa_table_find(sk);

	if (!rec)
		return false;
	*client = rec->client;
	*proxy = rec->proxy;
	return true;
}

/*
 * Unload, before waiting for callers: sockets with a record get their own
 * destructor back. A destructor already running finds its record still here.
 */
void toa_table_release_sockets(void)
{
	struct toa_record *rec;
	unsigned long flags;
	unsigned int i;

	WRITE_ONCE(toa_table_closing, true);
	for (i = 0; i < (1U << TOA_TABLE_BITS); i++) {
		spin_lock_irqsave(&toa_buckets[i].lock, flags);
		hlist_for_each_entry(rec, &toa_buckets[i].head, node) {
			if (rec->chained)
				continue;
			if (cmpxchg(&rec->sk->sk_destruct, toa_sk_destruct, rec->destruct) !=
			    toa_sk_destruct) {
				/* Its chain calls toa_sk_destruct() at close: wait for that. */
				rec->chained = true;
				atomic_inc(&toa_chained);
			}
		}
		spin_unlock_irqrestore(&toa_buckets[i].lock, flags);
	}
}

/*
 * Another module saved toa_sk_destruct() inside its own destructor: only the
 * socket's close can call it, so unload waits for those sockets to close
 * rather than leave them calling freed code. Said every 10 s.
 */
void toa_table_wait_chained(void)
{
	unsigned long since = jiffies;
	int n = atomic_read(&toa_chained);

	if (n)
		pr_warn("unload waits for %d sockets whose destructor another module chained after toa's to close\n",
			n);
	while ((n = atomic_read(&toa_chained)) > 0) {
		if (time_after(jiffies, since + 10 * HZ)) {
			pr_warn("unload still waits for %d sockets with a chained destructor\n", n);
			since = jiffies;
		}
		toa_sleep_idle(10);
	}
}

/* After the hooks are gone and every caller has left: nothing reaches the table. */
void toa_table_exit(void)
{
	struct toa_record *rec;
	struct hlist_node *tmp;
	unsigned int i;

	for (i = 0; i < (1U << TOA_TABLE_BITS); i++) {
		spin_lock_bh(&toa_buckets[i].lock);
		hlist_for_each_entry_safe(rec, tmp, &toa_buckets[i].head, node)
			toa_record_unlink(rec);
		spin_unlock_bh(&toa_buckets[i].lock);
	}
	/* Wait for every call_rcu() above (and earlier ones) before the cache goes. */
	rcu_barrier();
	kmem_cache_destroy(toa_record_cache);
	vfree(toa_buckets);
}
