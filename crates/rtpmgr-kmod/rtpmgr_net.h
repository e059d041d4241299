/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The C helper's interface, as net.rs declares it (keep both in step).
 * Every function returns 0/a length or a negative errno.
 */
#ifndef RTPMGR_NET_H
#define RTPMGR_NET_H

#include <linux/types.h>

struct rtpmgr_net;

/*
 * Options applied by rtpmgr_net_open before connect; 0 leaves the stack's
 * default. net.rs mirrors this layout (NetOpts).
 */
struct rtpmgr_net_opts {
	int rcvbuf;	/* SO_RCVBUF(FORCE) bytes, best effort */
	int sndbuf;	/* SO_SNDBUF(FORCE) bytes, best effort */
	int mc_ttl;	/* IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS */
	int mc_ifindex;	/* IP_MULTICAST_IF / IPV6_MULTICAST_IF */
};

/*
 * Create a UDP socket in the caller's netns with the caller's credentials,
 * SO_REUSEADDR, apply *opts, bind it to laddr:lport (4 or 16 address bytes
 * by family), connect it to raddr:rport when raddr is not NULL, and install
 * the callbacks, which call ready(ctx) (any context, must not sleep).
 * Sleeps.
 */
int rtpmgr_net_open(struct rtpmgr_net **out, void (*ready)(void *ctx), void *ctx, int family, const u8 *laddr,
		    u16 lport, u32 lscope, const u8 *raddr, u16 rport, u32 rscope, const struct rtpmgr_net_opts *opts);
/*
 * Join group (4 or 16 bytes by the socket's family) on interface ifindex (0:
 * the route's), any-source, or source-specific when source is not NULL.
 * The caller's context (ioctl): its credentials and compat mode. Sleeps.
 */
int rtpmgr_net_join(struct rtpmgr_net *n, const u8 *group, const u8 *source, u32 ifindex);
/* Detach the callbacks, wait for running ones, release the socket. Sleeps. */
void rtpmgr_net_close(struct rtpmgr_net *n);
/* Datagrams the socket dropped (sk_drops). Any context. */
u64 rtpmgr_net_drops(struct rtpmgr_net *n);
/* Whether a datagram waits. */
bool rtpmgr_net_rx_pending(struct rtpmgr_net *n);
/*
 * Dequeue one datagram: copy up to cap bytes to dst, up to head_cap to head
 * and its last byte to *last; return its full length, -EAGAIN when none
 * waits, -EBADMSG for a bad checksum (dropped and counted), -EFAULT when it
 * could not be copied (dropped), or a pending socket error (consumed; more
 * datagrams may wait).
 */
long rtpmgr_net_recv(struct rtpmgr_net *n, void *dst, u32 cap, u8 *head, u32 head_cap, u8 *last);
/*
 * Send one datagram without blocking. -EAGAIN: no send buffer space, the
 * write-space callback will call rtpmgr_net_ready(); -EBUSY: space appeared
 * meanwhile, retry.
 */
int rtpmgr_net_send(struct rtpmgr_net *n, const void *buf, u32 len);

#endif
