// SPDX-License-Identifier: GPL-2.0-only
/*
 * Per-socket TOA records.
 *
 * Not sk_user_data: sockmap, reuseport groups and in-kernel users own that
 * pointer. Records live in a hash keyed by the socket's address and are removed
 * when the socket is destroyed; a record left behind would hand its client to
 * the next socket the slab places at the same address.
 *
 * Readers (getname, from any context) walk a bucket under RCU without a lock;
 * writers (handshake in softirq, destroy in process or softirq context) take
 * the bucket's lock with BHs off. Records are freed after a grace period.
 */
#include <linux/hash.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/rculist.h>
#include "toa.h"

#define TOA_TABLE_BITS 16

struct toa_record {
	struct hlist_node node;
	struct rcu_head rcu;
	const struct sock *sk;
	struct toa_endpoint client;
	struct toa_endpoint proxy;
};

struct toa_bucket {
	struct hlist_head head;
	spinlock_t lock;
};

static struct toa_bucket *toa_buckets;
static struct kmem_cache *toa_record_cache;
/*
 * Records in the slab, unlinked ones still waiting for their grace period
 * included: what max_records bounds and what toa_stats shows as records_live.
 */
static atomic_t toa_records = ATOMIC_INIT(0);
static unsigned int toa_max_records;

static struct toa_bucket *toa_bucket_of(const struct sock *sk)
{
	return &toa_buckets[hash_ptr((void *)sk, TOA_TABLE_BITS)];
}

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

void toa_table_insert(const struct sock *sk, const struct toa_endpoint *client,
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
	if (client->family == 6)
		toa_count(TOA_IP6_ADDRESS_ALLOC);

	spin_lock_irqsave(&b->lock, flags);
	/* A socket gets one record; a stale one for the same address goes. */
	hlist_for_each_entry(old, &b->head, node) {
		if (old->sk == sk) {
			toa_record_unlink(old);
			break;
		}
	}
	hlist_add_head_rcu(&rec->node, &b->head);
	spin_unlock_irqrestore(&b->lock, flags);
}

void toa_table_remove(const struct sock *sk)
{
	struct toa_bucket *b = toa_bucket_of(sk);
	struct toa_record *rec;
	unsigned long flags;

	/* Most sockets never had a record: do not take the lock for them. */
	if (hlist_empty(&b->head))
		return;
	spin_lock_irqsave(&b->lock, flags);
	hlist_for_each_entry(rec, &b->head, node) {
		if (rec->sk == sk) {
			toa_record_unlink(rec);
			break;
		}
	}
	spin_unlock_irqrestore(&b->lock, flags);
}

bool toa_table_lookup(const struct sock *sk, struct toa_endpoint *client,
		      struct toa_endpoint *proxy)
{
	struct toa_bucket *b = toa_bucket_of(sk);
	struct toa_record *rec;

	hlist_for_each_entry_rcu(rec, &b->head, node) {
		if (rec->sk == sk) {
			*client = rec->client;
			*proxy = rec->proxy;
			return true;
		}
	}
	return false;
}

/* After the hooks are gone: nothing else can reach the table any more. */
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
