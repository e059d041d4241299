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
 * Contexts: rtpmgr_net_attach and rtpmgr_net_detach sleep and run in the
 * ioctl or in process context on close; rtpmgr_net_recv/send/rx_pending run
 * in the session worker (a kworker; sends run with the credentials of the
 * socket's opener). The two socket callbacks run in softirq (or with BH
 * disabled) and only call the owner's ready(ctx), which queues the worker.
 */

#include <linux/bitops.h>
#include <linux/cred.h>
#include <linux/file.h>
#include <linux/in.h>
#include <linux/net.h>
#include <linux/skbuff.h>
#include <linux/slab.h>
#include <linux/socket.h>
#include <linux/uio.h>
#include <net/inet_sock.h>
#include <net/sock.h>
#include <net/udp.h>

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

int rtpmgr_net_attach(struct rtpmgr_net **out, struct file *file, bool receives, bool sends,
		      void (*ready)(void *ctx), void *ctx)
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

	write_lock_bh(&sk->sk_callback_lock);
	rcu_assign_sk_user_data(sk, NULL);
	WRITE_ONCE(sk->sk_data_ready, n->saved_data_ready);
	WRITE_ONCE(sk->sk_write_space, n->saved_write_space);
	write_unlock_bh(&sk->sk_callback_lock);
	/* No callback still runs with our ctx (or in our text) after this. */
	synchronize_net();
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
	const struct cred *old;
	int ret;

	/*
	 * The worker is a kworker: send with the credentials of the task that
	 * created the socket's file, so the LSM and netfilter owner checks of
	 * sendmsg see the socket's owner, not the kernel.
	 */
	old = override_creds(n->file->f_cred);
	ret = kernel_sendmsg(n->sock, &msg, &iov, 1, len);
	revert_creds(old);
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
