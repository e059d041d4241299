// SPDX-License-Identifier: GPL-2.0-only
/*
 * The UDP sockets of rtpmgr's `udp` streams: user space creates, binds,
 * connects and joins them and passes them to START_NET_STREAM; this file
 * attaches the module's callbacks to one and receives and sends on it.
 *
 * Why C: Linux 7.2 has no Rust socket or sk_buff abstractions (rust/kernel/net
 * holds only phylib). What this needs is header inlines (skb_recv_udp,
 * udp_lib_checksum_complete, sock_writeable, override_creds, inet_sk,
 * rcu_*_sk_user_data, sk_drops_read) or absent from the generated bindings,
 * and an out-of-tree module can extend neither rust/bindings/bindings_helper.h
 * nor rust/helpers. So this file is the thin unsafe core: it owns every
 * struct sock access and every callback the network stack invokes; the Rust
 * side (net.rs) holds the socket's file, wraps this in a safe type and
 * decides everything else. Drivers/android/binder mixes Rust and C the same
 * way.
 *
 * The fast path (issue 18) is C for the same reason and more: a udp -> udp
 * forward is done in the receiving socket's UDP encapsulation hook
 * (udp_sk(sk)->encap_rcv, as l2tp and wireguard receive), in softirq on the
 * receiving CPU, and the packet leaves through the target stream's socket
 * in the same sk_buff: UDP and IP headers rewritten in place, routed, and
 * handed to ip_local_out/ip6_local_out. Route lookups, header layouts, the
 * checksum helpers and the skb accounting are all header inlines or
 * unbound. What is judged stays in Rust: the hook calls the owner's judge
 * (the RTP check and the rtp crate's statistics, net.rs/stream.rs) under
 * this file's spinlock, the same lock the worker takes (with BH disabled)
 * for the datagrams that take the slow path, so one statistics state sees
 * every datagram once.
 *
 * Contexts: rtpmgr_net_attach and rtpmgr_net_detach sleep and run in the
 * ioctl or in process context on close; rtpmgr_net_recv/send/rx_pending run
 * in the session worker (a kworker; sends run with the credentials of the
 * socket's opener). The two socket callbacks run in softirq (or with BH
 * disabled) and only call the owner's ready(ctx), which queues the worker.
 * The encapsulation hook runs in softirq; what it cannot do there (no
 * route, too big for the path MTU, target socket full, datagrams already
 * queued for the worker) it gives back to UDP (returns 1): queued on the
 * socket, it takes the worker path as before, in order.
 */

#include <linux/atomic.h>
#include <linux/bitops.h>
#include <linux/cred.h>
#include <linux/filter.h>
#include <linux/file.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/jiffies.h>
#include <linux/net.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/spinlock.h>
#include <linux/timekeeping.h>
#include <linux/timer.h>
#include <linux/uio.h>
#include <net/inet_sock.h>
#include <net/ip.h>
#include <net/ip6_checksum.h>
#include <net/ip6_route.h>
#include <net/ipv6.h>
#include <net/route.h>
#include <net/sock.h>
#include <net/udp.h>
#include <net/udp_tunnel.h>

#include "rtpmgr_net.h"

/* rtpmgr_net.flags: the worker saw EAGAIN and waits for write space. */
#define RTPMGR_NET_TX_WAIT 0

struct rtpmgr_net {
	struct socket *sock;
	/* The socket's file; the caller (net.rs) holds a reference on it. */
	struct file *file;
	/* ready(ctx) queues the owner's worker (net.rs: NetSocket). */
	void (*ready)(void *ctx);
	void *ctx;
	unsigned long flags;
	void (*saved_data_ready)(struct sock *sk);
	void (*saved_write_space)(struct sock *sk);
	/* The owner's judge and its state, only ever called under lock. */
	rtpmgr_judge_fn judge;
	void *jctx;
	spinlock_t lock;
	/* The encapsulation hook is installed (a receiving fast stream). */
	bool encap;
	/* The target of the fast path, or NULL: give everything to UDP. */
	struct rtpmgr_net __rcu *fast_dst;
	/* Armed by the hook: asks the worker for a statistics refresh at
	 * most 4 times a second, and once after the last datagram.
	 */
	struct timer_list stats_timer;
	struct {
		atomic64_t wakeups, fwd_packets, fwd_bytes, copies, malformed, fwd_drops;
		atomic64_t tx_packets, tx_bytes, tx_errors;
	} c;
};

/* Softirq: a datagram was queued on the socket. */
static void rtpmgr_net_data_ready(struct sock *sk)
{
	struct rtpmgr_net *n;

	rcu_read_lock();
	n = rcu_dereference_sk_user_data(sk);
	if (n) {
		atomic64_inc(&n->c.wakeups);
		n->ready(n->ctx);
	}
	rcu_read_unlock();
}

/* Any context: transmit memory was freed. Wake the worker only if it waits. */
static void rtpmgr_net_write_space(struct sock *sk)
{
	struct rtpmgr_net *n;

	/* Pairs with rtpmgr_net_send: the caller's sk_wmem_alloc update is
	 * ordered before our flag test, the sender's flag set before its
	 * sk_wmem_alloc read, so one of the two sees the other.
	 */
	smp_mb();
	rcu_read_lock();
	n = rcu_dereference_sk_user_data(sk);
	if (n && test_bit(RTPMGR_NET_TX_WAIT, &n->flags) && sock_writeable(sk) &&
	    test_and_clear_bit(RTPMGR_NET_TX_WAIT, &n->flags))
		n->ready(n->ctx);
	rcu_read_unlock();
}

/* A UDP encapsulation type of our own choosing; only non-zero matters. */
#define RTPMGR_ENCAP_TYPE 1

/* Whether a datagram waits on the socket for the worker. */
static bool rtpmgr_net_queued(struct sock *sk)
{
	return !skb_queue_empty_lockless(&udp_sk(sk)->reader_queue) ||
	       !skb_queue_empty_lockless(&sk->sk_receive_queue);
}

/* Where a fast-path datagram goes: a route and the header fields. */
struct rtpmgr_route {
	struct dst_entry *dst;
	int hlimit;
	union {
		struct flowi4 fl4;
		struct flowi6 fl6;
	};
};

/*
 * Keep rt as dsk's cached route (a reference of its own), as udp_sendmsg
 * does after a lookup for a connected socket, unless dsk's peer changed
 * since the caller read daddr, saddr, dport and the bound device: a
 * connect racing with us may have stored its route before this store,
 * which would leave a socket connected to B with a route to A. connect
 * writes the new peer before its own sk_dst_set, and the xchg in ours
 * orders what it wrote before our re-read; so either connect's store
 * comes last, or we see the new peer here and drop what we stored (the
 * next send looks the route up again).
 */
static void rtpmgr_cache_route4(struct sock *dsk, struct rtable *rt, __be32 daddr, __be32 saddr,
				__be16 dport, int bound_if)
{
	struct inet_sock *inet = inet_sk(dsk);

	sk_dst_set(dsk, dst_clone(&rt->dst));
	if (READ_ONCE(inet->inet_daddr) != daddr || READ_ONCE(inet->inet_saddr) != saddr ||
	    READ_ONCE(inet->inet_dport) != dport || READ_ONCE(dsk->sk_bound_dev_if) != bound_if ||
	    READ_ONCE(dsk->sk_state) != TCP_ESTABLISHED)
		sk_dst_reset(dsk);
}

/*
 * Route a datagram of len payload bytes out of dsk (an AF_INET socket,
 * connected) as udp_sendmsg would: its bound device or multicast interface,
 * its mark, its source. Returns false (nothing held) when the worker must
 * send it instead: no route, broadcast, too big for the path MTU (the
 * worker's send fragments or refuses it as the socket says).
 */
static bool rtpmgr_route4(struct sock *dsk, u32 len, struct rtpmgr_route *r)
{
	struct inet_sock *inet = inet_sk(dsk);
	__be32 daddr = READ_ONCE(inet->inet_daddr), saddr = READ_ONCE(inet->inet_saddr);
	__be16 dport = READ_ONCE(inet->inet_dport);
	int bound_if = READ_ONCE(dsk->sk_bound_dev_if), oif = bound_if;
	bool cached;
	bool mc = ipv4_is_multicast(daddr);
	struct rtable *rt;
	int ttl;

	/* IP options and SO_DONTROUTE shape what the socket's own send does
	 * in ways this path does not copy: the worker sends those.
	 */
	if (rcu_access_pointer(inet->inet_opt) || sock_flag(dsk, SOCK_LOCALROUTE))
		return false;
	if (mc) {
		if (!oif)
			oif = READ_ONCE(inet->mc_index);
		if (!saddr)
			saddr = READ_ONCE(inet->mc_addr);
	} else if (!oif) {
		oif = READ_ONCE(inet->uc_index);
	}
	/*
	 * A connected unicast socket caches its route (connect sets it;
	 * SO_BINDTODEVICE resets it; a changed route makes it obsolete), and
	 * udp_sendmsg sends along it without a lookup: so do we, and store
	 * what a lookup finds as udp_sendmsg does (below, once the route
	 * passed the checks: never a broadcast route, which udp_sendmsg does
	 * not cache either). Its source and destination are the socket's
	 * (connect chose the source). Multicast sends look up their route
	 * every time, there as here.
	 */
	rt = mc ? NULL : dst_rtable(sk_dst_check(dsk, 0));
	cached = rt != NULL;
	if (rt) {
		r->fl4.saddr = saddr;
		r->fl4.daddr = daddr;
	} else {
		rt = ip_route_output_ports(sock_net(dsk), &r->fl4, dsk, daddr, saddr, dport,
					   inet->inet_sport, IPPROTO_UDP, ip_sock_rt_tos(dsk), oif);
		if (IS_ERR(rt))
			return false;
	}
	if ((rt->rt_flags & RTCF_BROADCAST) ||
	    len + sizeof(struct udphdr) + sizeof(struct iphdr) > dst_mtu(&rt->dst)) {
		ip_rt_put(rt);
		return false;
	}
	if (!mc && !cached)
		rtpmgr_cache_route4(dsk, rt, daddr, saddr, dport, bound_if);
	if (mc) {
		ttl = READ_ONCE(inet->mc_ttl);
	} else {
		ttl = READ_ONCE(inet->uc_ttl);
		if (ttl < 0)
			ttl = ip4_dst_hoplimit(&rt->dst);
	}
	r->dst = &rt->dst;
	r->hlimit = ttl;
	return true;
}

/* The same for an AF_INET6 socket with a native IPv6 peer. */
static bool rtpmgr_route6(struct sock *dsk, u32 len, struct rtpmgr_route *r)
{
	struct ipv6_pinfo *np = inet6_sk(dsk);
	struct inet_sock *inet = inet_sk(dsk);
	struct flowi6 *fl6 = &r->fl6;
	struct dst_entry *dst;

	/* Extension headers and SO_DONTROUTE: the worker sends those. */
	if (rcu_access_pointer(np->opt) || sock_flag(dsk, SOCK_LOCALROUTE))
		return false;
	memset(fl6, 0, sizeof(*fl6));
	fl6->flowi6_proto = IPPROTO_UDP;
	fl6->daddr = dsk->sk_v6_daddr;
	fl6->saddr = np->saddr;
	fl6->fl6_dport = inet->inet_dport;
	fl6->fl6_sport = inet->inet_sport;
	fl6->flowi6_mark = READ_ONCE(dsk->sk_mark);
	fl6->flowi6_uid = sock_net_uid(sock_net(dsk), dsk);
	fl6->flowi6_oif = READ_ONCE(dsk->sk_bound_dev_if);
	if (!fl6->flowi6_oif)
		fl6->flowi6_oif = ipv6_addr_is_multicast(&fl6->daddr) ? READ_ONCE(np->mcast_oif) :
									READ_ONCE(np->ucast_oif);
	security_sk_classify_flow(dsk, flowi6_to_flowi_common(fl6));
	dst = ip6_dst_lookup_flow(sock_net(dsk), dsk, fl6, NULL);
	if (IS_ERR(dst))
		return false;
	if (len + sizeof(struct udphdr) + sizeof(struct ipv6hdr) > dst_mtu(dst)) {
		dst_release(dst);
		return false;
	}
	r->dst = dst;
	r->hlimit = ip6_sk_dst_hoplimit(np, fl6, dst);
	return true;
}

/*
 * Send skb (data at its UDP header, len payload bytes after it; judged) out
 * of d's socket along r (whose reference this takes over). The UDP header
 * is rewritten in place and the IP header pushed before it; only when the
 * headroom is short or the header is shared with a clone is the header
 * copied first (counted in copies).
 */
static void rtpmgr_fast_xmit(struct rtpmgr_net *n, struct rtpmgr_net *d, struct sock *sk,
			     struct sk_buff *skb, u32 len, struct rtpmgr_route *r)
{
	struct sock *dsk = d->sock->sk;
	struct inet_sock *inet = inet_sk(dsk);
	bool v6 = r->dst->ops->family == AF_INET6;
	unsigned int ip_len = v6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr);
	unsigned int room = LL_RESERVED_SPACE(r->dst->dev) + r->dst->header_len + ip_len;
	struct net *net = sock_net(dsk);
	struct udphdr *uh;
	int err;

	if (skb_headroom(skb) < room || skb_header_cloned(skb))
		atomic64_inc(&n->c.copies);
	if (skb_cow_head(skb, room)) {
		dst_release(r->dst);
		goto drop;
	}
	/* What the receive path left: its route, conntrack, marks, timestamp. */
	skb_orphan(skb);
	skb_scrub_packet(skb, !net_eq(sock_net(sk), net));
	skb_clear_tstamp(skb);
	skb->mark = READ_ONCE(dsk->sk_mark);
	skb->priority = READ_ONCE(dsk->sk_priority);
	skb->dev = r->dst->dev;
	skb_dst_set(skb, r->dst);
	/* Charged to the sending socket as its own sends are. */
	skb_set_owner_w(skb, dsk);

	skb_reset_transport_header(skb);
	uh = udp_hdr(skb);
	uh->source = inet->inet_sport;
	uh->dest = inet->inet_dport;
	uh->len = htons(len + sizeof(*uh));
	uh->check = 0;
	skb->ip_summed = CHECKSUM_NONE;
	/* Some NICs mark received tunnel packets; this one is plain UDP now,
	 * and a stale mark would have TX offload use inner offsets.
	 */
	skb->encapsulation = 0;
	if (v6) {
		struct ipv6hdr *ip6h;

		udp6_set_csum(udp_get_no_check6_tx(dsk), skb, &r->fl6.saddr, &r->fl6.daddr,
			      skb->len);
		skb_push(skb, sizeof(*ip6h));
		skb_reset_network_header(skb);
		ip6h = ipv6_hdr(skb);
		ip6_flow_hdr(ip6h, READ_ONCE(inet6_sk(dsk)->tclass), 0);
		ip6h->payload_len = htons(len + sizeof(*uh));
		ip6h->nexthdr = IPPROTO_UDP;
		ip6h->hop_limit = r->hlimit;
		ip6h->saddr = r->fl6.saddr;
		ip6h->daddr = r->fl6.daddr;
		skb->protocol = htons(ETH_P_IPV6);
		memset(IP6CB(skb), 0, sizeof(*IP6CB(skb)));
		err = ip6_local_out(net, dsk, skb);
	} else {
		struct iphdr *iph;

		udp_set_csum(dsk->sk_no_check_tx, skb, r->fl4.saddr, r->fl4.daddr, skb->len);
		skb_push(skb, sizeof(*iph));
		skb_reset_network_header(skb);
		iph = ip_hdr(skb);
		iph->version = 4;
		iph->ihl = sizeof(*iph) >> 2;
		iph->tos = READ_ONCE(inet->tos);
		iph->frag_off = ip_dont_fragment(dsk, r->dst) ? htons(IP_DF) : 0;
		iph->ttl = r->hlimit;
		iph->protocol = IPPROTO_UDP;
		iph->saddr = r->fl4.saddr;
		iph->daddr = r->fl4.daddr;
		__ip_select_ident(net, iph, 1);
		skb->protocol = htons(ETH_P_IP);
		memset(IPCB(skb), 0, sizeof(*IPCB(skb)));
		err = ip_local_out(net, dsk, skb);
	}
	if (unlikely(net_xmit_eval(err))) {
		atomic64_inc(&d->c.tx_errors);
		atomic64_inc(&n->c.fwd_drops);
		return;
	}
	atomic64_inc(&n->c.fwd_packets);
	atomic64_add(len, &n->c.fwd_bytes);
	atomic64_inc(&d->c.tx_packets);
	atomic64_add(len, &d->c.tx_bytes);
	return;

drop:
	atomic64_inc(&d->c.tx_errors);
	atomic64_inc(&n->c.fwd_drops);
	kfree_skb(skb);
}

/*
 * Softirq, the receiving socket's UDP encapsulation hook: skb is a whole
 * datagram with a verified checksum, data at its UDP header. 0: consumed
 * (forwarded, or dropped and counted); 1: UDP queues it for the worker.
 */
static int rtpmgr_net_encap_rcv_rcu(struct sock *sk, struct sk_buff *skb)
{
	u8 head[RTPMGR_JUDGE_HEAD], last = 0;
	struct rtpmgr_route r;
	struct rtpmgr_net *n, *d;
	struct sock *dsk;
	u32 len;
	bool ok;

	n = rcu_dereference_sk_user_data(sk);
	/* Ours, not whatever owns the socket after a detach that raced. */
	if (!n || n->sock->sk != sk)
		return 1;
	d = rcu_dereference(n->fast_dst);
	/* Datagrams queued for the worker go first: keep the order. */
	if (!d || skb_is_gso(skb) || rtpmgr_net_queued(sk))
		return 1;
	/*
	 * What the socket's own receive would apply, which UDP runs only
	 * after this hook (udp_queue_rcv_one_skb): its socket filter, cgroup
	 * ingress BPF and the LSM's sock_rcv_skb, and the pfmemalloc rule. A
	 * datagram they refuse goes back to UDP, which applies them again,
	 * drops it and counts it.
	 */
	if (skb_pfmemalloc(skb) || sk_filter_trim_cap(sk, skb, sizeof(struct udphdr)))
		return 1;
	dsk = d->sock->sk;
	len = skb->len - sizeof(struct udphdr);
	/*
	 * A target that is no longer connected (connect(AF_UNSPEC) meanwhile)
	 * has no peer to send to: the worker's send refuses and counts it. A
	 * full target costs the datagram, counted by the worker's send too.
	 */
	if (READ_ONCE(dsk->sk_state) != TCP_ESTABLISHED || !READ_ONCE(inet_sk(dsk)->inet_dport) ||
	    !sock_writeable(dsk))
		return 1;
	if (dsk->sk_family == AF_INET) {
		if (!rtpmgr_route4(dsk, len, &r))
			return 1;
	} else if (dsk->sk_family == AF_INET6 && !ipv6_addr_v4mapped(&dsk->sk_v6_daddr)) {
		if (!rtpmgr_route6(dsk, len, &r))
			return 1;
	} else {
		return 1;
	}
	/* Private copies of the bytes the judge reads, as the worker makes. */
	if (skb_copy_bits(skb, sizeof(struct udphdr), head, min_t(u32, len, sizeof(head))) ||
	    (len && skb_copy_bits(skb, skb->len - 1, &last, 1))) {
		dst_release(r.dst);
		return 1;
	}
	spin_lock(&n->lock);
	ok = n->judge(n->jctx, head, min_t(u32, len, sizeof(head)), len, last, ktime_get_ns());
	spin_unlock(&n->lock);
	if (ok) {
		rtpmgr_fast_xmit(n, d, sk, skb, len, &r);
	} else {
		dst_release(r.dst);
		atomic64_inc(&n->c.malformed);
		kfree_skb(skb);
	}
	/* The statistics record is the worker's to write: ask for a refresh
	 * a quarter of a second after the first datagram since the last one,
	 * not per datagram.
	 */
	if (!timer_pending(&n->stats_timer))
		mod_timer(&n->stats_timer, jiffies + HZ / 4);
	return 0;
}

/* Timer (softirq): queue the worker to publish what the hook counted. */
static void rtpmgr_net_stats_timer(struct timer_list *t)
{
	struct rtpmgr_net *n = timer_container_of(n, t, stats_timer);

	n->ready(n->ctx);
}

static int rtpmgr_net_encap_rcv(struct sock *sk, struct sk_buff *skb)
{
	int ret;

	/* n, d and their sockets stay valid until the grace period a detach
	 * waits for (synchronize_net) after unlinking or unhooking them.
	 */
	rcu_read_lock();
	ret = rtpmgr_net_encap_rcv_rcu(sk, skb);
	rcu_read_unlock();
	return ret;
}

void rtpmgr_net_fast_link(struct rtpmgr_net *n, struct rtpmgr_net *dst)
{
	rcu_assign_pointer(n->fast_dst, dst);
}

bool rtpmgr_net_judge(struct rtpmgr_net *n, const u8 *head, u32 head_len, u32 len, u8 last,
		      u64 now)
{
	bool ok;

	spin_lock_bh(&n->lock);
	ok = n->judge(n->jctx, head, head_len, len, last, now);
	spin_unlock_bh(&n->lock);
	return ok;
}

void rtpmgr_net_with_judge(struct rtpmgr_net *n, void (*f)(void *jctx, void *arg), void *arg)
{
	spin_lock_bh(&n->lock);
	f(n->jctx, arg);
	spin_unlock_bh(&n->lock);
}

void rtpmgr_net_fast_counters(struct rtpmgr_net *n, struct rtpmgr_fast_counters *out)
{
	out->wakeups = atomic64_read(&n->c.wakeups);
	out->fwd_packets = atomic64_read(&n->c.fwd_packets);
	out->fwd_bytes = atomic64_read(&n->c.fwd_bytes);
	out->copies = atomic64_read(&n->c.copies);
	out->malformed = atomic64_read(&n->c.malformed);
	out->fwd_drops = atomic64_read(&n->c.fwd_drops);
	out->tx_packets = atomic64_read(&n->c.tx_packets);
	out->tx_bytes = atomic64_read(&n->c.tx_bytes);
	out->tx_errors = atomic64_read(&n->c.tx_errors);
}

int rtpmgr_net_attach(struct rtpmgr_net **out, struct file *file, bool receives, bool sends,
		      bool fast, void (*ready)(void *ctx), void *ctx, rtpmgr_judge_fn judge,
		      void *jctx)
{
	struct rtpmgr_net *n;
	struct socket *sock;
	struct sock *sk;
	int err;

	*out = NULL;
	sock = sock_from_file(file);
	if (!sock)
		return -ENOTSOCK;
	sk = sock->sk;
	if (!sk || (sk->sk_family != AF_INET && sk->sk_family != AF_INET6))
		return -EAFNOSUPPORT;
	if (sk->sk_type != SOCK_DGRAM || sk->sk_protocol != IPPROTO_UDP)
		return -EPROTONOSUPPORT;
	n = kzalloc_obj(*n, GFP_KERNEL_ACCOUNT);
	if (!n)
		return -ENOMEM;
	n->sock = sock;
	n->file = file;
	n->ready = ready;
	n->ctx = ctx;
	n->judge = judge;
	n->jctx = jctx;
	spin_lock_init(&n->lock);
	timer_setup(&n->stats_timer, rtpmgr_net_stats_timer, 0);
	lock_sock(sk);
	err = -EINVAL;
	/* A receiving stream hears its bound port; a sending one sends with
	 * send(), which needs a destination. */
	if (receives && !inet_sk(sk)->inet_num)
		goto unlock;
	err = -EDESTADDRREQ;
	if (sends && sk->sk_state != TCP_ESTABLISHED)
		goto unlock;
	/* An encapsulation socket (L2TP, VXLAN, ...) is the stack's own. */
	err = -EBUSY;
	if (READ_ONCE(udp_sk(sk)->encap_type))
		goto unlock;
	/*
	 * The stack reads both callbacks with READ_ONCE and without
	 * sk_callback_lock (sock_def_readable's callers, sock_wfree), so they
	 * are written with WRITE_ONCE, as in kcm and the sunrpc transport.
	 * sk_user_data set means someone else (another stream, a tunnel, a
	 * BPF sockmap) has the socket: -EBUSY, as kcm and l2tp answer.
	 */
	write_lock_bh(&sk->sk_callback_lock);
	if (rcu_access_pointer(sk->sk_user_data)) {
		write_unlock_bh(&sk->sk_callback_lock);
		goto unlock;
	}
	n->saved_data_ready = sk->sk_data_ready;
	n->saved_write_space = sk->sk_write_space;
	rcu_assign_sk_user_data(sk, n);
	WRITE_ONCE(sk->sk_data_ready, rtpmgr_net_data_ready);
	WRITE_ONCE(sk->sk_write_space, rtpmgr_net_write_space);
	write_unlock_bh(&sk->sk_callback_lock);
	/*
	 * The fast path's hook, installed as setup_udp_tunnel_sock does (under
	 * the socket lock, which setsockopt(UDP_ENCAP) takes too): the type
	 * and hook with WRITE_ONCE (the receive path reads them with
	 * READ_ONCE), then the static keys, once per socket (ENCAP_ENABLED;
	 * the socket's destruction drops them again). It does nothing until
	 * rtpmgr_net_fast_link gives it a target.
	 */
	if (receives && fast) {
		n->encap = true;
		WRITE_ONCE(udp_sk(sk)->encap_rcv, rtpmgr_net_encap_rcv);
		WRITE_ONCE(udp_sk(sk)->encap_type, RTPMGR_ENCAP_TYPE);
		udp_tunnel_encap_enable(sk);
	}
	release_sock(sk);
	*out = n;
	return 0;

unlock:
	release_sock(sk);
	kfree(n);
	return err;
}

void rtpmgr_net_detach(struct rtpmgr_net *n)
{
	struct sock *sk = n->sock->sk;

	if (n->encap) {
		/* The hook goes first; the static keys stay with the socket. */
		lock_sock(sk);
		WRITE_ONCE(udp_sk(sk)->encap_type, 0);
		WRITE_ONCE(udp_sk(sk)->encap_rcv, NULL);
		release_sock(sk);
	}
	write_lock_bh(&sk->sk_callback_lock);
	rcu_assign_sk_user_data(sk, NULL);
	WRITE_ONCE(sk->sk_data_ready, n->saved_data_ready);
	WRITE_ONCE(sk->sk_write_space, n->saved_write_space);
	write_unlock_bh(&sk->sk_callback_lock);
	/* No callback (nor the hook, nor another stream's hook that sent
	 * through this socket: its link was cleared before) still runs with
	 * our ctx (or in our text) after this.
	 */
	synchronize_net();
	/* No hook arms the timer any more: stop it for good. */
	timer_shutdown_sync(&n->stats_timer);
	kfree(n);
}

u64 rtpmgr_net_drops(struct rtpmgr_net *n)
{
	return (u32)sk_drops_read(n->sock->sk);
}

bool rtpmgr_net_rx_pending(struct rtpmgr_net *n)
{
	return rtpmgr_net_queued(n->sock->sk);
}

/* The heads of a raw MPEG-TS datagram's packets, privately (see the header). */
static int rtpmgr_net_ts_heads(const struct sk_buff *skb, unsigned int len, u8 *ts, u32 ts_cap)
{
	unsigned int off, k = 0;

	if (!ts || len % RTPMGR_TS_PACKET)
		return 0;
	for (off = 0; off < len && (k + 1) * RTPMGR_TS_HEAD <= ts_cap; off += RTPMGR_TS_PACKET, k++)
		if (skb_copy_bits(skb, off, ts + k * RTPMGR_TS_HEAD, RTPMGR_TS_HEAD))
			return -EFAULT;
	return 0;
}

long rtpmgr_net_recv(struct rtpmgr_net *n, void *dst, u32 cap, u8 *head, u32 head_cap, u8 *last,
		     u8 *ts, u32 ts_cap)
{
	struct sock *sk = n->sock->sk;
	struct sk_buff *skb;
	unsigned int len;
	int err;

	/*
	 * NULL with -EAGAIN: nothing queued. Any other error is a pending
	 * socket error (sock_error() consumed it, e.g. ECONNREFUSED from an
	 * ICMP port unreachable on a connected socket); datagrams may still
	 * wait behind it, and the caller reads on.
	 */
	skb = skb_recv_udp(sk, MSG_DONTWAIT, &err);
	if (!skb)
		return err;
	if (udp_lib_checksum_complete(skb)) {
		if (sk->sk_family == AF_INET6) {
			UDP6_INC_STATS(sock_net(sk), UDP_MIB_CSUMERRORS);
			UDP6_INC_STATS(sock_net(sk), UDP_MIB_INERRORS);
		} else {
			UDP_INC_STATS(sock_net(sk), UDP_MIB_CSUMERRORS);
			UDP_INC_STATS(sock_net(sk), UDP_MIB_INERRORS);
		}
		udp_drops_inc(sk);
		kfree_skb_reason(skb, SKB_DROP_REASON_UDP_CSUM);
		return -EBADMSG;
	}
	/* After dequeue the UDP header is pulled: the payload is data[0..len). */
	len = skb->len;
	/* Private copies of the first bytes and the last byte, for checks that
	 * must not read the shared slot back.
	 */
	if (skb_copy_bits(skb, 0, head, min(len, head_cap)) ||
	    (len && skb_copy_bits(skb, len - 1, last, 1)) ||
	    rtpmgr_net_ts_heads(skb, len, ts, ts_cap) ||
	    skb_copy_bits(skb, 0, dst, min(len, cap))) {
		/* Dropped; the caller counts it (rx_errors). */
		udp_drops_inc(sk);
		kfree_skb(skb);
		return -EFAULT;
	}
	consume_skb(skb);
	/* Delivered, as udp_recvmsg counts it: /proc/net/snmp{,6} stay right. */
	if (sk->sk_family == AF_INET6)
		UDP6_INC_STATS(sock_net(sk), UDP_MIB_INDATAGRAMS);
	else
		UDP_INC_STATS(sock_net(sk), UDP_MIB_INDATAGRAMS);
	return len;
}

int rtpmgr_net_send(struct rtpmgr_net *n, const void *buf, u32 len)
{
	struct msghdr msg = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct sock *sk = n->sock->sk;
	const struct cred *old;
	int ret;

	/*
	 * Refused (counted as a send error) without calling udp_sendmsg: a
	 * socket user space left unconnected or unbound after
	 * START_NET_STREAM (connect(AF_UNSPEC) unbinds an autobound one),
	 * which has no peer, and whose autobind would bind it to a port
	 * behind user space's back and can fail with -EAGAIN, which the
	 * retry below would take for a full buffer; and a corked one, or one
	 * with a corked datagram pending, where our datagram would be
	 * appended to user space's. A change racing with this check reaches
	 * udp_sendmsg, which may then take the socket lock: allowed, the
	 * worker's session mutex is never taken under mmap_lock
	 * (kernel-module.md, Locking).
	 */
	if (READ_ONCE(sk->sk_state) != TCP_ESTABLISHED || !READ_ONCE(inet_sk(sk)->inet_num) ||
	    udp_test_bit(CORK, sk) || READ_ONCE(udp_sk(sk)->pending))
		return -EDESTADDRREQ;
	/*
	 * The worker is a kworker: send with the credentials of the task that
	 * created the socket's file, so the LSM and netfilter owner checks of
	 * sendmsg see the socket's owner, not the kernel.
	 */
	old = override_creds(n->file->f_cred);
	ret = kernel_sendmsg(n->sock, &msg, &iov, 1, len);
	revert_creds(old);
	/* A failed autobind (a racing disconnect, no free port) says EAGAIN. */
	if (ret == -EAGAIN && !READ_ONCE(inet_sk(sk)->inet_num))
		return -EDESTADDRREQ;
	if (ret != -EAGAIN)
		return ret;
	/* Arm the write-space wakeup, then re-check: space freed between the
	 * failed send and the arming would otherwise wake nobody.
	 */
	set_bit(RTPMGR_NET_TX_WAIT, &n->flags);
	/* Order the flag before reading sk_wmem_alloc; pairs with the
	 * smp_mb() in rtpmgr_net_write_space.
	 */
	smp_mb__after_atomic();
	if (sock_writeable(n->sock->sk) && test_and_clear_bit(RTPMGR_NET_TX_WAIT, &n->flags))
		return -EBUSY;
	return -EAGAIN;
}
