// SPDX-License-Identifier: GPL-2.0-only
/*
 * rtpmgr_net.c: the kernel UDP sockets behind rtpmgr's `udp` media port.
 *
 * Why C: Linux 7.2 has no Rust socket or sk_buff abstractions (rust/kernel/net
 * holds only phylib). The UDP entry points and struct sock fields this port
 * needs are header inlines (skb_recv_udp, udp_lib_checksum_complete,
 * sock_writeable, ip6_sock_set_v6only, rcu_*_sk_user_data) or absent from the
 * generated bindings, and an out-of-tree module can extend neither
 * rust/bindings/bindings_helper.h nor rust/helpers. So this file is the thin
 * unsafe core: it owns every struct sock access and every callback the
 * network stack invokes; the Rust side (net.rs) wraps it in a safe type and
 * decides everything else. Drivers/android/binder mixes Rust and C the same
 * way.
 *
 * Contexts: rtpmgr_net_open and rtpmgr_net_close sleep and run in the ioctl
 * (open: with the caller's credentials, so CAP_NET_BIND_SERVICE, the netns
 * and LSM socket creation apply to the caller) or in process context on
 * close; rtpmgr_net_join runs in the ioctl after open (socket options,
 * multicast joins: the setsockopt path, in the caller's context).
 * rtpmgr_net_recv/send/rx_pending run in the session worker. The two
 * socket callbacks run in softirq (or with BH disabled) and only call the
 * owner's ready(ctx) (net.rs), which queues the worker.
 */

#include <linux/bitops.h>
#include <linux/compat.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/net.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/uio.h>
#include <net/compat.h>
#include <net/ipv6.h>
#include <net/sock.h>
#include <net/udp.h>

#include "rtpmgr_net.h"

/* rtpmgr_net.flags: the worker saw EAGAIN and waits for write space. */
#define RTPMGR_NET_TX_WAIT 0

struct rtpmgr_net {
	struct socket *sock;
	/* ready(ctx) queues the owner's worker (net.rs: NetSocket). */
	void (*ready)(void *ctx);
	void *ctx;
	unsigned long flags;
	void (*saved_data_ready)(struct sock *sk);
	void (*saved_write_space)(struct sock *sk);
};

/* Softirq: a datagram was queued on the socket. */
static void rtpmgr_net_data_ready(struct sock *sk)
{
	struct rtpmgr_net *n;

	rcu_read_lock();
	n = rcu_dereference_sk_user_data(sk);
	if (n)
		n->ready(n->ctx);
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

static int rtpmgr_net_sockaddr(struct sockaddr_storage *ss, int family, const u8 *addr, u16 port, u32 scope)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr, 4);
		return sizeof(*sin);
	}
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr, 16);
		sin6->sin6_scope_id = scope;
		return sizeof(*sin6);
	}
	return -EAFNOSUPPORT;
}

/*
 * Socket options go through do_sock_setsockopt, as the setsockopt syscall
 * would, in the caller's context: its LSM and cgroup hooks run, and the
 * FORCE buffer options need CAP_NET_ADMIN in the initial user namespace
 * (sockopt_capable), else the capped option applies
 * (net.core.rmem_max/wmem_max). Buffer sizes are best effort, as rtpmgrd
 * treats its own sockets': a refusal leaves the default.
 */
static void rtpmgr_net_set_buffer(struct socket *sock, bool compat, int force, int capped, int bytes)
{
	if (bytes <= 0)
		return;
	if (do_sock_setsockopt(sock, compat, SOL_SOCKET, force, KERNEL_SOCKPTR(&bytes), sizeof(bytes)) < 0)
		do_sock_setsockopt(sock, compat, SOL_SOCKET, capped, KERNEL_SOCKPTR(&bytes), sizeof(bytes));
}

/*
 * Multicast transmit options. Set before connect: connect picks the route
 * and the source address with the multicast interface then known, and an
 * IPv6 link-scope group needs the interface to connect at all. ip_mreqn
 * and int have one layout for 32-bit callers.
 */
static int rtpmgr_net_multicast_send(struct socket *sock, bool compat, int ttl, int ifindex)
{
	bool v6 = sock->sk->sk_family == AF_INET6;
	struct ip_mreqn mr;
	int err;

	if (ttl > 0) {
		err = do_sock_setsockopt(sock, compat, v6 ? SOL_IPV6 : SOL_IP,
					 v6 ? IPV6_MULTICAST_HOPS : IP_MULTICAST_TTL, KERNEL_SOCKPTR(&ttl),
					 sizeof(ttl));
		if (err < 0)
			return err;
	}
	if (ifindex <= 0)
		return 0;
	if (v6)
		return do_sock_setsockopt(sock, compat, SOL_IPV6, IPV6_MULTICAST_IF, KERNEL_SOCKPTR(&ifindex),
					  sizeof(ifindex));
	memset(&mr, 0, sizeof(mr));
	mr.imr_ifindex = ifindex;
	err = do_sock_setsockopt(sock, compat, SOL_IP, IP_MULTICAST_IF, KERNEL_SOCKPTR(&mr), sizeof(mr));
	/* IPv4 says EADDRNOTAVAIL for a missing device, IPv6 ENODEV: one errno for both. */
	return err == -EADDRNOTAVAIL ? -ENODEV : err;
}

int rtpmgr_net_open(struct rtpmgr_net **out, void (*ready)(void *ctx), void *ctx, int family, const u8 *laddr,
		    u16 lport, u32 lscope, const u8 *raddr, u16 rport, u32 rscope, const struct rtpmgr_net_opts *opts)
{
	bool compat = in_compat_syscall();
	struct sockaddr_storage ss;
	struct rtpmgr_net *n;
	struct sock *sk;
	int len, err;

	*out = NULL;
	if (family != AF_INET && family != AF_INET6)
		return -EAFNOSUPPORT;
	n = kzalloc_obj(*n, GFP_KERNEL);
	if (!n)
		return -ENOMEM;
	n->ready = ready;
	n->ctx = ctx;
	/* kern=0: the caller's netns, credentials and LSM checks. */
	err = sock_create(family, SOCK_DGRAM, IPPROTO_UDP, &n->sock);
	if (err)
		goto free;
	sk = n->sock->sk;
	/* Kernel-held socket: never use the worker's task page fragment. */
	sk->sk_use_task_frag = false;
	if (family == AF_INET6) {
		/* IPv4 traffic never arrives v4-mapped on a v6 port. */
		err = ip6_sock_set_v6only(sk);
		if (err)
			goto release;
	}
	/*
	 * As rtpmgrd's own sockets: channels that share a port (different
	 * groups on 0.0.0.0:5004) can all bind it. A socket without it (any
	 * other program's) still keeps the port to itself.
	 */
	sock_set_reuseaddr(sk);
	rtpmgr_net_set_buffer(n->sock, compat, SO_RCVBUFFORCE, SO_RCVBUF, opts->rcvbuf);
	rtpmgr_net_set_buffer(n->sock, compat, SO_SNDBUFFORCE, SO_SNDBUF, opts->sndbuf);
	len = rtpmgr_net_sockaddr(&ss, family, laddr, lport, lscope);
	err = kernel_bind(n->sock, (struct sockaddr_unsized *)&ss, len);
	if (err)
		goto release;
	err = rtpmgr_net_multicast_send(n->sock, compat, opts->mc_ttl, opts->mc_ifindex);
	if (err)
		goto release;
	if (raddr) {
		len = rtpmgr_net_sockaddr(&ss, family, raddr, rport, rscope);
		err = kernel_connect(n->sock, (struct sockaddr_unsized *)&ss, len, 0);
		if (err)
			goto release;
	}
	/*
	 * The stack reads both callbacks with READ_ONCE and without
	 * sk_callback_lock (sock_def_readable's callers, sock_wfree), so they
	 * are written with WRITE_ONCE, as in kcm and the sunrpc transport.
	 */
	write_lock_bh(&sk->sk_callback_lock);
	n->saved_data_ready = sk->sk_data_ready;
	n->saved_write_space = sk->sk_write_space;
	rcu_assign_sk_user_data(sk, n);
	WRITE_ONCE(sk->sk_data_ready, rtpmgr_net_data_ready);
	WRITE_ONCE(sk->sk_write_space, rtpmgr_net_write_space);
	write_unlock_bh(&sk->sk_callback_lock);
	*out = n;
	return 0;

release:
	sock_release(n->sock);
free:
	kfree(n);
	return err;
}

void rtpmgr_net_close(struct rtpmgr_net *n)
{
	struct sock *sk = n->sock->sk;

	write_lock_bh(&sk->sk_callback_lock);
	rcu_assign_sk_user_data(sk, NULL);
	WRITE_ONCE(sk->sk_data_ready, n->saved_data_ready);
	WRITE_ONCE(sk->sk_write_space, n->saved_write_space);
	write_unlock_bh(&sk->sk_callback_lock);
	/* No callback still runs with our ctx (or in our text) after this. */
	synchronize_net();
	sock_release(n->sock);
	kfree(n);
}

u64 rtpmgr_net_drops(struct rtpmgr_net *n)
{
	return (u32)sk_drops_read(n->sock->sk);
}

bool rtpmgr_net_rx_pending(struct rtpmgr_net *n)
{
	struct sock *sk = n->sock->sk;

	return !skb_queue_empty_lockless(&udp_sk(sk)->reader_queue) ||
	       !skb_queue_empty_lockless(&sk->sk_receive_queue);
}

long rtpmgr_net_recv(struct rtpmgr_net *n, void *dst, u32 cap, u8 *head, u32 head_cap, u8 *last)
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
	int ret;

	ret = kernel_sendmsg(n->sock, &msg, &iov, 1, len);
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

/*
 * Multicast joins go through do_sock_setsockopt, as the setsockopt syscall
 * would: it takes RTNL and the socket lock itself, runs the LSM and cgroup
 * hooks, and reaches SSM, whose direct entry points (ip_mc_source,
 * ip6_mc_source) are not exported. ip_mreqn and ipv6_mreq have the same
 * layout for 32-bit callers; group_source_req does not, and the stack
 * parses the compat layout whenever in_compat_syscall() is true, which it
 * is here when a 32-bit process made the ioctl.
 */
static int rtpmgr_net_join_ssm(struct socket *sock, int level, bool compat, const struct group_source_req *gsr)
{
#ifdef CONFIG_COMPAT
	if (compat) {
		struct compat_group_source_req c;

		memset(&c, 0, sizeof(c));
		c.gsr_interface = gsr->gsr_interface;
		memcpy(&c.gsr_group, &gsr->gsr_group, sizeof(c.gsr_group));
		memcpy(&c.gsr_source, &gsr->gsr_source, sizeof(c.gsr_source));
		return do_sock_setsockopt(sock, compat, level, MCAST_JOIN_SOURCE_GROUP, KERNEL_SOCKPTR(&c),
					  sizeof(c));
	}
#endif
	return do_sock_setsockopt(sock, compat, level, MCAST_JOIN_SOURCE_GROUP, KERNEL_SOCKPTR((void *)gsr),
				  sizeof(*gsr));
}

int rtpmgr_net_join(struct rtpmgr_net *n, const u8 *group, const u8 *source, u32 ifindex)
{
	struct socket *sock = n->sock;
	int family = sock->sk->sk_family;
	int level = family == AF_INET6 ? SOL_IPV6 : SOL_IP;
	bool compat = in_compat_syscall();
	struct group_source_req gsr;
	int err;

	if (!source && family == AF_INET) {
		struct ip_mreqn mr;

		memset(&mr, 0, sizeof(mr));
		memcpy(&mr.imr_multiaddr, group, 4);
		mr.imr_ifindex = ifindex;
		return do_sock_setsockopt(sock, compat, level, IP_ADD_MEMBERSHIP, KERNEL_SOCKPTR(&mr), sizeof(mr));
	}
	if (!source) {
		struct ipv6_mreq mr;

		memset(&mr, 0, sizeof(mr));
		memcpy(&mr.ipv6mr_multiaddr, group, 16);
		mr.ipv6mr_ifindex = ifindex;
		return do_sock_setsockopt(sock, compat, level, IPV6_ADD_MEMBERSHIP, KERNEL_SOCKPTR(&mr), sizeof(mr));
	}
	memset(&gsr, 0, sizeof(gsr));
	gsr.gsr_interface = ifindex;
	err = rtpmgr_net_sockaddr(&gsr.gsr_group, family, group, 0, 0);
	if (err < 0)
		return err;
	err = rtpmgr_net_sockaddr(&gsr.gsr_source, family, source, 0, 0);
	if (err < 0)
		return err;
	return rtpmgr_net_join_ssm(sock, level, compat, &gsr);
}
